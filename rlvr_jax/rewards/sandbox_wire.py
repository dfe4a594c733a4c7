"""The wire between the trusted grader and the sandbox: frames and plain-data values (standard library only,
because the sandbox imports this file too; it never imports rlvr_jax).

**Frames**: one JSON object on one line (at most :data:`HEADER_MAX` bytes by default), then exactly ``header["nbytes"]``
bytes of payload. :class:`FrameReader` refuses anything else (:class:`WireError`): a line that is not a JSON
object, a header over the limit, a payload over the reader's limit.

**Values** (:func:`encode_value` / :func:`decode_value`): a tree of exact built-in types (``None``, ``bool``,
``int``, ``float``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``) as JSON, with
tags for what JSON lacks: ``["l", ...]`` list, ``["t", ...]`` tuple, ``["s", ...]`` set, ``["z", ...]``
frozenset, ``["d", k1, v1, ...]`` dict, ``["b", hex]`` bytes, ``["i", hex]`` an int of 63 bits or more,
``["f", "inf" | "-inf" | "nan"]`` a non-finite float. The encoder checks ``type(x) is ...`` at every node, so
a subclass (an ``int`` whose ``__eq__`` lies) or any other object is refused (:class:`NotPlainData`), and
nesting is limited to :data:`MAX_DEPTH`. The decoder, which is what the trusted side relies on, builds genuine
built-in objects from JSON it parses itself whatever bytes arrive, so a decoded value has no code of the
sender's in it; its work is near-linear in the bytes (a set or dict with more than :data:`MAX_SAME_HASH` keys
of one hash value, which would make building it quadratic, is refused). NaN is refused when decoding a return value (``allow_nan=False``): it is unequal to
everything, and a check written as ``not (abs(x - y) > tol)`` would accept it; neither benchmark expects one.
"""
import json
import math
import os

HEADER_MAX = 4096
MAX_DEPTH = 100
MAX_INT_HEX = 1 << 16  # hex digits of a tagged int (262144 bits)
MAX_SAME_HASH = 32  # keys of one set or dict that may share a hash value
_BIG = 1 << 63


class WireError(ValueError):
    """Bytes that are not a well-formed frame or value."""


class NotPlainData(ValueError):
    """A value that is not a tree of exact built-in types (or holds NaN where that is refused)."""


def frame(header: dict, payload: bytes = b"") -> bytes:
    return json.dumps(dict(header, nbytes=len(payload))).encode() + b"\n" + payload


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FrameReader:
    """Incremental parser: :meth:`feed` bytes, then :meth:`next` returns ``(header, payload)`` or None."""

    def __init__(self, max_payload: int, max_header: int = HEADER_MAX):
        self.max_payload, self.max_header = int(max_payload), int(max_header)
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self):
        nl = self.buf.find(b"\n", 0, self.max_header + 1)
        if nl < 0:
            if len(self.buf) > self.max_header:
                raise WireError(f"frame header longer than {self.max_header} bytes")
            return None
        try:
            header = json.loads(self.buf[:nl])
        except ValueError as e:
            raise WireError(f"frame header is not JSON ({e})") from None
        if type(header) is not dict or type(header.get("nbytes")) is not int or header["nbytes"] < 0:
            raise WireError("frame header is not an object with a non-negative int nbytes")
        n = header["nbytes"]
        if n > self.max_payload:
            raise WireError(f"frame payload of {n} bytes over the limit of {self.max_payload}")
        if len(self.buf) - nl - 1 < n:
            return None
        payload = self.buf[nl + 1:nl + 1 + n]
        self.buf = self.buf[nl + 1 + n:]
        return header, payload


# ----------------------------------------------------------------------------------------------------- values
_SEQ_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "z"}
_FROM_TAG = {"l": list, "t": tuple, "s": set, "z": frozenset}


def _enc(x, depth):
    if depth > MAX_DEPTH:
        raise NotPlainData(f"nested deeper than {MAX_DEPTH}")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -_BIG < x < _BIG else ["i", format(x, "x")]
    if t is float:
        return x if math.isfinite(x) else ["f", repr(x)]
    if t in _SEQ_TAGS:
        return [_SEQ_TAGS[t]] + [_enc(v, depth + 1) for v in x]
    if t is dict:
        out = ["d"]
        for k, v in x.items():
            out += [_enc(k, depth + 1), _enc(v, depth + 1)]
        return out
    if t is bytes:
        return ["b", x.hex()]
    raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data (only exact "
                       f"None/bool/int/float/str/bytes/list/tuple/dict/set/frozenset)")


def encode_value(x) -> bytes:
    """JSON bytes of a plain-data value (:class:`NotPlainData` for anything else)."""
    return json.dumps(_enc(x, 0), separators=(",", ":")).encode()


def _check_hashes(keys, what):
    """Refuses keys that are unhashable, or of which more than :data:`MAX_SAME_HASH` share one hash value: the
    hashes of ints, floats and tuples are chosen by the sender (``k * (2**61 - 1)`` all hash to 0), and such keys
    would make building the set or dict quadratic (20,000 of them: 10 s). Sorting the hashes is n log n, whatever
    they are."""
    try:
        hashes = sorted(map(hash, keys))
    except TypeError as e:
        raise NotPlainData(f"unhashable {what} ({e})") from None
    run = 1
    for a, b in zip(hashes, hashes[1:]):
        run = run + 1 if a == b else 1
        if run > MAX_SAME_HASH:
            raise NotPlainData(f"more than {MAX_SAME_HASH} {what}s with one hash value (hash flooding)")


def _refuse_constant(name):
    raise WireError(f"bare {name} in a value (non-finite floats are tagged)")


def _dec(node, depth, allow_nan):
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    t = type(node)
    if node is None or t is bool or t is str or t is int:
        return node
    if t is float:
        if not math.isfinite(node):
            raise WireError("non-finite float literal")
        return node
    if t is not list or not node or type(node[0]) is not str:
        raise WireError(f"untagged {t.__name__} in a value")
    tag, rest = node[0], node[1:]
    if tag in _FROM_TAG:
        items = [_dec(v, depth + 1, allow_nan) for v in rest]
        if tag in ("s", "z"):
            _check_hashes(items, "set element")
        return _FROM_TAG[tag](items)
    if tag == "d":
        if len(rest) % 2:
            raise WireError("dict with an odd number of items")
        keys = [_dec(k, depth + 1, allow_nan) for k in rest[::2]]
        _check_hashes(keys, "dict key")
        return dict(zip(keys, [_dec(v, depth + 1, allow_nan) for v in rest[1::2]]))
    if len(rest) != 1 or type(rest[0]) is not str:
        raise WireError(f"malformed {tag!r} node")
    text = rest[0]
    if tag == "i":
        if len(text) > MAX_INT_HEX:
            raise WireError(f"int of more than {MAX_INT_HEX} hex digits")
        try:
            return int(text, 16)
        except ValueError:
            raise WireError("malformed int") from None
    if tag == "f":
        if text not in ("inf", "-inf", "nan"):
            raise WireError("malformed non-finite float")
        if text == "nan" and not allow_nan:
            raise NotPlainData("NaN (it compares unequal to everything; no test expects one)")
        return float(text)
    if tag == "b":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise WireError("malformed bytes") from None
    raise WireError(f"unknown tag {tag!r}")


def decode_value(data: bytes, *, allow_nan: bool = False):
    """The plain-data value of ``data``, built from genuine built-in types (see the module docstring)."""
    try:
        node = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise WireError(f"value is not JSON ({str(e)[:200]})") from None
    return _dec(node, 0, allow_nan)
