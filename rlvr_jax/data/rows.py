"""Reading raw rows from data files, tolerating bad input: a malformed row is counted, skipped and reported.

A JSON Lines file is read as bytes and decoded line by line, so one bad line costs that line only:

* a UTF-8 byte-order mark at the start of the file and ``\\r\\n`` line ends are accepted;
* a line that is not valid UTF-8, not valid JSON, or not a JSON object becomes a :class:`BadRow`
  (``where`` = ``"<file>:<line>"``, ``reason``) and is skipped;
* blank lines are ignored.

:func:`row_type_error` checks the field types of a decoded row (the loader skips a row with a wrong type the
same way). :func:`check_columns` makes a file whose rows hold none of the expected columns fail with a message
that lists the columns it does hold, instead of ending later in an unrelated error.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

BOM = b"\xef\xbb\xbf"
PROBLEM_KEYS = ("problem", "question")
ANSWER_KEY = "answer"


class DataFileError(ValueError):
    """A data file that cannot yield any problem (empty, none of the expected columns, no usable row)."""


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A skipped row: where it was (``file:line`` or the row id) and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], list[BadRow]]:
    """``(rows, bad)``: the JSON objects of a JSON Lines file (``_line`` = 1-based line number added) and the
    lines that could not be read, each with its reason."""
    rows: list[dict] = []
    bad: list[BadRow] = []
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(BOM):
        data = data[len(BOM):]
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        where = f"{os.fspath(path)}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(BadRow(where, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"))
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(BadRow(where, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            bad.append(BadRow(where, f"a JSON {type(obj).__name__}, expected an object"))
            continue
        obj["_line"] = lineno
        rows.append(obj)
    return rows, bad


def read_parquet(path: str | os.PathLike) -> list[dict]:
    """Rows of a Parquet file as dicts (via pyarrow); ``_line`` is the 1-based row number."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataFileError(f"{os.fspath(path)}: cannot read as Parquet ({type(e).__name__}: {e})") from e
    rows = table.to_pylist()
    for i, r in enumerate(rows, 1):
        r["_line"] = i
    check_columns(path, list(table.column_names), bool(rows))
    return rows


def check_columns(path: str | os.PathLike, columns: Sequence[str], has_rows: bool) -> None:
    """Raises :class:`DataFileError` when no row could be read or the expected columns are all absent."""
    cols = [c for c in columns if c != "_line"]
    if not has_rows:
        raise DataFileError(f"{os.fspath(path)}: the file holds no readable row")
    has_problem = any(k in cols for k in PROBLEM_KEYS)
    if not has_problem or ANSWER_KEY not in cols:
        need = [k for k in ("problem (or question)", ANSWER_KEY)
                if not (has_problem if k.startswith("problem") else ANSWER_KEY in cols)]
        raise DataFileError(f"{os.fspath(path)}: no column {' / '.join(need)} in the file; the columns found are "
                            f"{sorted(cols)} (expected id, problem or question, answer)")


def columns_of(rows: Sequence[dict]) -> list[str]:
    """The union of the keys of ``rows``, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


_SCALAR = (str, int, float)


def row_type_error(row: dict) -> str | None:
    """Why ``row``'s fields have unusable types (e.g. a list as the answer), or None when they are fine."""
    checks: list[tuple[str, Any, tuple]] = [("id", row.get("id"), _SCALAR)]
    checks += [(k, row.get(k), (str,)) for k in PROBLEM_KEYS]
    checks += [(ANSWER_KEY, row.get(ANSWER_KEY), _SCALAR), ("task", row.get("task"), (str,)),
               ("metadata", row.get("metadata"), (dict,))]
    for name, value, types in checks:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            return f"field {name!r} is a {type(value).__name__} ({_short(value)}), expected {expected}"
    return None


def _short(v: Any, n: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."
