"""``run_cli``: the one wrapper around absl's ``app.run`` that every command line of the project uses.

It adds to the CLI's own flags:

* ``--log_level`` (warning | info | debug, default warning): the terminal's threshold for library log records
  (:mod:`rlvr_jax.cli.logs`); the log file (``<out>/log.txt``) always holds INFO and above and stdout;
* ``--help`` answered by the CLI: its usage, flags and every config field with its default
  (:mod:`rlvr_jax.cli.config_help`); ``--helpfull`` stays absl's;
* user errors (:mod:`rlvr_jax.cli.errors`: a bad config value or flag, a bad data file, a missing checkpoint)
  as one ``error: ...`` line and exit status 2, the traceback in the log file (and on the terminal at
  ``--log_level=debug``);
* the closing summary: ``main`` returns a :class:`rlvr_jax.cli.summary.Summary` (or None), printed with the log
  file's path added.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

from absl import app, flags

from rlvr_jax.cli import errors
from rlvr_jax.cli.logs import LEVELS, Logs
from rlvr_jax.cli.summary import Summary, format_summary

FLAGS = flags.FLAGS
HELP_ARGS = ("--help", "-h", "-?", "--helpshort", "--help=true", "--help=True")

_current: Logs | None = None


def current_logs() -> Logs | None:
    """The running CLI's :class:`Logs` (None outside :func:`run_cli`)."""
    return _current


@dataclasses.dataclass
class HelpConfig:
    """Where ``--help`` reads the config fields: the ``--config`` flag's file, else ``default`` (a file spec
    ``path[:arg]``, or a callable returning a ConfigDict); ``comments_from``: functions whose modules hold the
    fields' ``# comment`` lines."""
    default: str | Callable | None
    comments_from: tuple = ()
    flag: str = "config"
    label: str = "the base config"  # names a callable ``default`` in the help text


def define_log_level() -> None:
    if "log_level" not in FLAGS:
        flags.DEFINE_enum("log_level", "warning", sorted(LEVELS, key=LEVELS.get),
                          "terminal log threshold: warning (default: library INFO lines only in <out>/log.txt), "
                          "info, debug (also tracebacks of user errors)")


def _flag_lines(module_names: tuple[str, ...]) -> list[str]:
    """``--name: help (default: x)`` of the flags defined by the CLI's modules (absl's own left out)."""
    lines, seen = [], set()
    by_module = FLAGS.flags_by_module_dict()
    for module, fl in by_module.items():
        if not (module in module_names or module.startswith("rlvr_jax") or "/rlvr_jax/" in module
                or module == sys.argv[0]):
            continue
        for f in sorted(fl, key=lambda f: f.name):
            if f.name in seen:
                continue
            seen.add(f.name)
            default = f.default_as_str if f.default_as_str is not None else "none"
            lines.append(f"  --{f.name}: {f.help} (default: {default})")
    return lines


def _help_config(help_cfg: HelpConfig | None, argv: list[str]):
    if help_cfg is None:
        return None, ""
    from rlvr_jax.cli.config_help import comments_of
    from rlvr_jax.config.overrides import load_config_file
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{help_cfg.flag}=")), None)
    try:
        if spec is not None:
            cfg, source = load_config_file(spec), spec
        elif callable(help_cfg.default):
            cfg, source = help_cfg.default(), help_cfg.label
        elif help_cfg.default:
            cfg, source = load_config_file(help_cfg.default), help_cfg.default
        else:
            return None, ""
    except Exception as e:  # noqa: BLE001 - help must not fail on a broken config file
        print(f"error: cannot read the config {spec or help_cfg.default!r} for --help: {e}", file=sys.stderr)
        return None, ""
    comments = comments_of(*help_cfg.comments_from) if help_cfg.comments_from else {}
    return (cfg, comments), source


def print_help(usage: str, help_cfg: HelpConfig | None, argv: list[str]) -> None:
    from rlvr_jax.cli.config_help import help_text
    got, source = _help_config(help_cfg, argv)
    cfg, comments = got if got else (None, None)
    print(help_text(usage, _flag_lines(()), cfg, source, comments))


def _flag_error_message(text: str) -> str:
    """absl's flag error on one line; a config file's traceback embedded in it (ml_collections puts it there
    when the file's ``get_config`` raises) is cut down to its last line, the exception."""
    head, sep, trace = text.partition("Traceback (most recent call last):")
    if sep:
        last = [ln.strip() for ln in trace.splitlines() if ln.strip()]
        text = head + (last[-1] if last else "")
    return " ".join(text.split())


def _unloadable_config() -> str | None:
    """The message of a ``--config``-style flag whose file could not be loaded (ml_collections keeps a
    placeholder that raises on first use, deep inside the job: reported here, before it starts)."""
    for name in FLAGS:
        try:
            value = FLAGS[name].value
        except Exception:  # noqa: BLE001 - a flag that cannot even be read is left to absl
            continue
        if type(value).__name__ == "_ErrorConfig":
            error = object.__getattribute__(value, "_error")
            attempts = [ln.strip() for ln in str(error).splitlines() if ln.strip().startswith("[Errno")]
            return f"--{name}={FLAGS[name].serialize().split('=', 1)[-1]}: cannot load the config file" + (
                f" ({'; '.join(attempts)})" if attempts else f": {_flag_error_message(str(error))}")
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with a one-line error and exit status 2 (absl: a 'FATAL' line, a hint, status 1)."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        msg = _flag_error_message(str(e))
        print(f"error: {msg} (--help lists the flags and config fields)", file=sys.stderr, flush=True)
        sys.exit(errors.EXIT_USER_ERROR)
    unloadable = _unloadable_config()
    if unloadable:
        print(f"error: {unloadable}", file=sys.stderr, flush=True)
        sys.exit(errors.EXIT_USER_ERROR)
    return rest


def run_cli(main: Callable[[list[str]], Summary | None], *, usage: str,
            log_path: Callable[[], str | None] | None = None, help_config: HelpConfig | None = None) -> None:
    """Runs ``main(argv)`` as a command line (see the module docstring).

    ``usage``: the text ``--help`` starts with (the CLI's docstring); ``log_path()``: the log file, read after
    flag parsing (None: no file). A config-driven CLI calls
    :func:`rlvr_jax.config.overrides.exit_on_unknown_overrides` before defining its ``--config`` flag (a flag
    with a default file reads the overrides when it is defined)."""
    define_log_level()
    if any(a in HELP_ARGS for a in sys.argv[1:]):
        try:
            print_help(usage, help_config, sys.argv[1:])
        except BrokenPipeError:  # `--help | head`
            sys.stdout = None
        sys.exit(0)

    def wrapped(argv: list[str]) -> None:
        global _current
        logs = _current = Logs(FLAGS.log_level).install()
        try:
            try:
                path = log_path() if log_path is not None else None
                if path:
                    logs.set_path(path)
                summary = main(argv)
            except BaseException as e:  # noqa: BLE001 - recorded, then re-raised or reported
                if isinstance(e, (SystemExit, KeyboardInterrupt)):
                    raise
                logs.record_exception(e)
                if not errors.is_user_error(e):
                    raise
                errors.report(e, logs.path if logs.file.is_open else None, logs.verbose)
                sys.exit(errors.EXIT_USER_ERROR)
            if summary is not None:
                if logs.path and logs.file.is_open:
                    summary.add("log", logs.path, "every log line, INFO included")
                print(format_summary(summary), flush=True)
        finally:
            logs.uninstall()
            _current = None

    app.run(wrapped, flags_parser=_parse_flags)
