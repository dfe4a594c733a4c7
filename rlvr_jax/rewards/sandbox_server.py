"""The model's program as a server of calls, *inside* the sandbox (standard library only; never imports rlvr_jax).

:func:`serve` runs in the forked test process of :mod:`sandbox_harness` (calls mode), under the test's uid and
rlimits. It runs the program's top level once (``__name__ == "solution"``, after the trusted import header),
finds the entry point (``lookup="function"``: a top-level function; ``lookup="leetcode"``: a method of
``Solution()``, else a top-level function), then answers requests until its request pipe closes:

    request:  {"seq", "nonce", "nbytes"} + the arguments, a list encoded by :mod:`sandbox_wire`
    reply:    {"seq", "nonce", "ok": true, "nbytes"} + the return value encoded by sandbox_wire, or
              {"seq", "nonce", "ok": false, "kind", "nbytes"} + an error text (kind: "exception", "memory",
              "exit" (SystemExit, at the top level or in a call), "bad_value" (not plain data), "load"
              (the top level raised, or no entry point))

Nothing here is trusted: the program runs in this process and can read or replace any of it, write any bytes
to the reply pipe, or end the process. The harness and the grader outside assume exactly that (see
docs/code.md, threat model); this file only makes an honest program's calls work.
"""
import os
import sys
import traceback

import sandbox_wire as wire

REQUEST_FD, REPLY_FD = 3, 4
_MAX_ARGS = 1 << 28


def _error_text(limit=1500):
    try:
        text = traceback.format_exc()
    except BaseException:  # noqa: BLE001 - formatting the program's exception can itself fail
        text = "an exception that cannot be formatted"
    return text[-limit:]


def _target(namespace, func_name, lookup):
    solution = namespace.get("Solution")
    if lookup == "leetcode" and isinstance(solution, type) and hasattr(solution, func_name):
        return getattr(solution(), func_name)
    if callable(namespace.get(func_name)):
        return namespace[func_name]
    where = " (nor a Solution method of that name)" if lookup == "leetcode" else ""
    raise NameError(f"no function {func_name!r}{where} in the program")


def _load(spec, code):
    """``(target, None)`` or ``(None, (kind, text))``."""
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        if spec.get("header"):
            exec(spec["header"], namespace)
        exec(code, namespace)
        return _target(namespace, spec["func_name"], spec.get("lookup", "function")), None
    except SystemExit as e:
        return None, ("exit", f"the program exited while loading (SystemExit({e.code!r}))")
    except MemoryError:
        return None, ("memory", "MemoryError while loading the program")
    except BaseException:  # noqa: BLE001 - every failure of the program is reported
        return None, ("load", _error_text())


def _reply(header, payload):
    wire.write_all(REPLY_FD, wire.frame(header, payload))


def serve(spec, code):
    target, load_error = _load(spec, code)
    reader = wire.FrameReader(_MAX_ARGS)
    while True:
        got = reader.next()
        if got is None:
            chunk = os.read(REQUEST_FD, 1 << 20)
            if not chunk:
                return
            reader.feed(chunk)
            continue
        header, payload = got
        head = {"seq": header.get("seq"), "nonce": header.get("nonce")}
        if load_error is not None:
            _reply(dict(head, ok=False, kind=load_error[0]), load_error[1].encode("utf-8", "replace"))
            continue
        try:
            args = wire.decode_value(payload, allow_nan=True)
            result = target(*args)
        except SystemExit as e:
            _reply(dict(head, ok=False, kind="exit"), f"SystemExit({e.code!r}) in the call".encode())
            continue
        except MemoryError:
            _reply(dict(head, ok=False, kind="memory"), b"MemoryError")
            continue
        except BaseException:  # noqa: BLE001
            _reply(dict(head, ok=False, kind="exception"), _error_text().encode("utf-8", "replace"))
            continue
        try:
            data = wire.encode_value(result)
        except wire.NotPlainData as e:
            _reply(dict(head, ok=False, kind="bad_value"), str(e).encode())
            continue
        except BaseException:  # noqa: BLE001 - e.g. RecursionError on a deep value, MemoryError
            _reply(dict(head, ok=False, kind="bad_value"), _error_text(300).encode("utf-8", "replace"))
            continue
        _reply(dict(head, ok=True), data)


if __name__ == "__main__":  # pragma: no cover - imported by the harness, never run directly
    sys.exit("sandbox_server is imported by sandbox_harness")
