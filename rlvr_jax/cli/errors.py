"""Errors caused by the user's input, reported as one line and exit status 2 by every CLI.

A user error is a :class:`rlvr_jax.config.validate.ConfigError` (a config field's value), a
:class:`rlvr_jax.data.rows.DataFileError` (a data file without usable rows), a
:class:`rlvr_jax.trainer.checkpointing.CorruptCheckpointError`, a
:class:`rlvr_jax.trainer.run_identity.ResumeMismatchError` (an output directory holding another run), a
``FileNotFoundError`` (a path given on the
command line or in the config), absl's ``UsageError`` (bad positional arguments) or a :class:`UserError` raised by
a CLI itself. Anything else is a bug or an environment failure and keeps its traceback.
"""
from __future__ import annotations

import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A CLI's own complaint about its input (a missing output, a bad flag combination)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as user errors (imported here: the CLIs import them anyway)."""
    from absl.app import UsageError

    from rlvr_jax.config.validate import ConfigError
    from rlvr_jax.data.rows import DataFileError
    types = [UserError, ConfigError, DataFileError, FileNotFoundError, UsageError]
    try:
        from rlvr_jax.trainer.checkpointing import CorruptCheckpointError
        from rlvr_jax.trainer.run_identity import ResumeMismatchError
        types += [CorruptCheckpointError, ResumeMismatchError]
    except ImportError:  # pragma: no cover - orbax missing: nothing can raise it
        pass
    return tuple(types)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, user_error_types())


def one_line(exc: BaseException) -> str:
    """The error's message on one line (a ``FileNotFoundError`` from ``open`` names its file)."""
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"{exc.strerror or 'no such file'}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def report(exc: BaseException, log_path: str | None, verbose: bool, stream=None) -> None:
    """Prints ``error: <message>`` (and where the traceback is) on ``stream`` (stderr)."""
    stream = stream or sys.stderr
    if verbose:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    where = ""
    if not verbose:
        where = f" (traceback in {log_path})" if log_path else " (--log_level=debug shows the traceback)"
    from rlvr_jax.config.validate import ConfigError
    if isinstance(exc, ConfigError):
        where = ""  # the field and the rule are the whole story
    print(f"error: {one_line(exc)}{where}", file=stream, flush=True)
