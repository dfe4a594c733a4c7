"""Quiet terminals, detailed log files: where the CLIs' log records go.

Libraries log a lot at INFO (orbax writes ~25 lines per checkpoint, jax names every backend it could not
load). By default the terminal shows records at WARNING and above plus the project's own INFO records
(``rlvr_jax.*`` loggers and absl calls made from rlvr_jax files), in one short line each (``[warning] ...``);
everything at INFO and above, and every line the program prints on stdout, goes to the log file
(``<out>/log.txt``). ``--log_level=info`` shows all INFO records on the terminal in absl's full format,
``--log_level=debug`` also DEBUG ones (terminal and file) and the traceback of a user error.

The log file's directory usually does not exist when logging starts (the run creates it): records are held
in memory until it does, then written in order.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import traceback

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../rlvr_jax
# Loggers that install their own handler (and do not propagate): their level decides what reaches stderr.
_OWN_HANDLER_LOGGERS = ("transformers", "vllm")
_HELD_RECORDS = 50_000  # records kept in memory while the log file's directory does not exist yet


def is_project_record(record: logging.LogRecord) -> bool:
    """A record of this project: an ``rlvr_jax.*`` logger, or absl's logger called from a file of rlvr_jax."""
    if record.name == "rlvr_jax" or record.name.startswith("rlvr_jax."):
        return True
    return record.name == "absl" and os.path.abspath(record.pathname).startswith(_PKG_DIR + os.sep)


class ConsoleFilter(logging.Filter):
    """Passes records at ``level`` and above, and the project's own records from INFO on."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        return record.levelno >= logging.INFO and is_project_record(record)


class ShortFormatter(logging.Formatter):
    """``[warning] message`` (the terminal's format at the default level); the project's own INFO records as
    ``[<module>] message`` (e.g. ``[vllm_server] starting vLLM server ...``), like its printed lines."""

    def format(self, record: logging.LogRecord) -> str:
        tag = record.levelname.lower()
        if record.levelno == logging.INFO and is_project_record(record):
            tag = record.name.rsplit(".", 1)[-1] if record.name.startswith("rlvr_jax.") else record.module
        text = f"[{tag}] {record.getMessage()}"
        if record.exc_info:
            text += " (" + (str(record.exc_info[1]).splitlines() or [""])[0] + ")"
        return text


class LogFile(logging.Handler):
    """Writes records (absl's format: level, time, thread, file:line) and captured stdout text to ``path``,
    appending; until :meth:`set_path` names a file whose directory exists, keeps them in memory."""

    def __init__(self, level: int = logging.INFO):
        super().__init__(level)
        from absl.logging import PythonFormatter
        self.setFormatter(PythonFormatter())
        self.path: str | None = None
        self._file: io.TextIOBase | None = None
        self._held: list[str] = []

    def set_path(self, path: str) -> None:
        """The log file; opened now if its directory exists, else at the first write after it does."""
        self.path = os.path.abspath(path)
        self._try_open()

    def _try_open(self) -> bool:
        if self._file is not None:
            return True
        if self.path is None or not os.path.isdir(os.path.dirname(self.path)):
            return False
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")
        self._file.writelines(self._held)
        self._file.flush()
        self._held = []
        return True

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def write_text(self, text: str) -> None:
        """Raw text (stdout lines, a traceback) in the same stream as the records."""
        self.acquire()
        try:
            if self._try_open():
                self._file.write(text)
                self._file.flush()
            elif len(self._held) < _HELD_RECORDS:
                self._held.append(text)
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_text(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)

    def close(self) -> None:
        self.acquire()
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
        finally:
            self.release()
        super().close()


class Tee(io.TextIOBase):
    """``sys.stdout`` that also copies complete lines into the log file."""

    def __init__(self, stream, log: LogFile):
        super().__init__()
        self._stream, self._log, self._partial = stream, log, ""

    def write(self, s: str) -> int:
        n = self._stream.write(s)
        self._partial += s
        if "\n" in self._partial:
            done, _, self._partial = self._partial.rpartition("\n")
            self._log.write_text(done + "\n")
        return n

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return self._stream.encoding

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Logs:
    """The CLI's logging set-up (:func:`configure`); ``verbose`` is True at ``--log_level`` info or debug."""

    def __init__(self, level: str = "warning"):
        if level not in LEVELS:
            raise ValueError(f"log level {level!r}; expected one of {sorted(LEVELS)}")
        self.level_name = level
        self.console_level = LEVELS[level]
        self.verbose = self.console_level <= logging.INFO
        self.file = LogFile(min(logging.INFO, self.console_level))
        self._stdout = None

    @property
    def path(self) -> str | None:
        return self.file.path

    def set_path(self, path: str) -> None:
        self.file.set_path(path)

    def install(self) -> "Logs":
        from absl import logging as absl_logging

        file_level = self.file.level
        root = logging.getLogger()
        root.setLevel(file_level)
        absl_logging.set_verbosity(absl_logging.converter.standard_to_absl(file_level))
        console = absl_logging.get_absl_handler()
        console.setLevel(logging.NOTSET)
        for f in list(console.filters):
            if isinstance(f, ConsoleFilter):
                console.removeFilter(f)
        console.addFilter(ConsoleFilter(self.console_level))
        if not self.verbose:
            console.setFormatter(ShortFormatter())
        root.addHandler(self.file)
        logging.captureWarnings(True)
        # Libraries with their own stderr handler: their level is the terminal's threshold.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if self.verbose else "warning")
        for name in _OWN_HANDLER_LOGGERS:
            if name in sys.modules:
                logging.getLogger(name).setLevel(self.console_level)
        self._stdout = sys.stdout
        sys.stdout = Tee(sys.stdout, self.file)
        return self

    def record_exception(self, exc: BaseException) -> None:
        """The full traceback into the log file only."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.file.write_text(text)

    def uninstall(self) -> None:
        if self._stdout is not None:
            try:
                sys.stdout.flush()
            finally:
                sys.stdout = self._stdout
                self._stdout = None
        logging.getLogger().removeHandler(self.file)
        self.file.close()
