"""Benchmark and training problems: JSON Lines / Parquet loaders, a name registry and Reasoning Gym tasks.

Row schema (the normalised files of ``../shared/data``): ``id``, ``problem``, ``answer`` and optionally
``source``, ``solution``, ``level``, ``type``, ``task`` (default ``"math"``; ``"rg:<name>"`` is graded by that
Reasoning Gym scorer) and ``metadata`` (a JSON object; for ``rg:`` tasks it holds the scorer's ``entry``, so
a saved procedural set such as :mod:`rlvr_jax.testbed.task` grades like the generated one).
``question`` is accepted for ``problem`` (hub exports use it).
Answers are always kept as *strings* (AMC answers are published as strings, some exports use ints).

Data-quality rules (applied by every loader, so nothing downstream has to care):

* a row whose problem or answer is missing or blank is **skipped and counted**, never graded (a grader
  comparing ``''`` with ``''`` would call anything correct); the skipped ids are logged once per load;
* duplicated problems (same text after whitespace normalisation) are **reported** (``Dataset.duplicates``,
  logged once) and kept, so row counts match the published files; pass ``dedupe=True`` to drop them;
* a malformed row (a line that is not UTF-8, not JSON or not an object; a field of the wrong type, e.g. a list
  as the answer) is **skipped, counted** (``Dataset.malformed``, with file:line and the reason) and logged once;
  a UTF-8 BOM and CRLF line ends are read normally (:mod:`rlvr_jax.data.rows`);
* an id used by an earlier row is **reported** (``Dataset.duplicate_ids``; the evaluator refuses them);
* a file with no usable row, or with none of the expected columns, raises :class:`DataFileError` naming the
  columns it holds.

Names: ``math_train``, ``math_test``, ``math500``, ``aime2024``, ``aime2025``, ``amc23`` resolve to
``<data_dir>/<name>.jsonl`` (or ``.parquet``); any path to a ``.jsonl``/``.parquet`` file also works;
``rg:<task>`` builds a procedurally generated Reasoning Gym dataset (no download; graded by the task's own
scorer, see :mod:`rlvr_jax.rewards.reasoning_gym`); ``lcb``, ``lcb:START:END`` and ``humaneval`` are the code
problems of :mod:`rlvr_jax.data.code`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
from typing import Any, Iterator, Sequence

from rlvr_jax.data.rows import (BadRow, DataFileError, check_columns, columns_of, read_jsonl, read_parquet,
                                row_type_error)

logger = logging.getLogger(__name__)

# Registry name -> file stem in the data directory.
REGISTRY: dict[str, str] = {
    "math_train": "math_train",
    "math_test": "math_test",
    "math500": "math500",
    "aime2024": "aime2024",
    "aime2025": "aime2025",
    "amc23": "amc23",
}

# Hub fallback, used only when a local file is absent and the ``datasets`` library can be imported:
# name -> (hub repo id, split, problem column, answer column, id column or None).
HUB_SOURCES: dict[str, tuple[str, str, str, str, str | None]] = {
    "math500": ("HuggingFaceH4/MATH-500", "test", "problem", "answer", "unique_id"),
    "aime2024": ("HuggingFaceH4/aime_2024", "train", "problem", "answer", "id"),
}

RG_PREFIX = "rg:"
DEFAULT_DATA_DIR_ENV = "RLVR_DATA_DIR"
_PROBLEM_KEYS = ("problem", "question")
_EXTRA_KEYS = ("source", "solution", "level", "type")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem. ``task`` is ``"math"`` (graded by math equivalence against ``answer``) or
    ``"rg:<name>"`` (graded by Reasoning Gym's scorer against ``metadata["entry"]``)."""

    id: str
    problem: str
    answer: str
    source: str = ""
    solution: str | None = None
    level: str | None = None
    type: str | None = None
    task: str = "math"
    metadata: dict | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass
class Dataset(Sequence[Problem]):
    """A list-like collection of problems plus what the loader skipped or found duplicated."""

    name: str
    problems: list[Problem]
    skipped: list[str] = dataclasses.field(default_factory=list)  # ids of rows with a blank problem/answer
    duplicates: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, id of first copy)
    path: str = ""
    malformed: list[BadRow] = dataclasses.field(default_factory=list)  # unreadable / wrongly typed rows
    duplicate_ids: list[str] = dataclasses.field(default_factory=list)  # ids seen again later in the file

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return dataclasses.replace(self, problems=self.problems[i])
        return self.problems[i]

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def take(self, max_problems: int | None) -> "Dataset":
        """The first ``max_problems`` problems (all when None or <= 0)."""
        if not max_problems or max_problems <= 0 or max_problems >= len(self):
            return self
        return self[:max_problems]


def _blank(x: Any) -> bool:
    return x is None or (isinstance(x, float) and x != x) or not str(x).strip()


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _to_str(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x).strip()


def build_dataset(name: str, rows: Sequence[dict], *, path: str = "", dedupe: bool = False,
                  bad: Sequence[BadRow] = ()) -> Dataset:
    """Normalises raw rows into a :class:`Dataset`, applying the skip / duplicate rules of the module docstring.

    ``bad``: rows the reader already rejected (undecodable lines); they are counted and reported with the rest.
    A row may carry ``_line`` (its line in the file), used to say where a rejected row was.
    """
    problems: list[Problem] = []
    skipped: list[str] = []
    malformed: list[BadRow] = list(bad)
    duplicates: list[tuple[str, str]] = []
    duplicate_ids: list[str] = []
    seen: dict[str, str] = {}
    seen_ids: set[str] = set()
    for i, row in enumerate(rows):
        where = f"{path or name}:{row.get('_line', i + 1)}" if isinstance(row, dict) else f"{path or name}:{i + 1}"
        if not isinstance(row, dict):
            malformed.append(BadRow(where, f"a {type(row).__name__}, expected an object"))
            continue
        why = row_type_error(row)
        if why is not None:
            malformed.append(BadRow(where, why))
            continue
        pid = _to_str(row["id"]) if not _blank(row.get("id")) else f"{name}-{i}"
        text = next((row[k] for k in _PROBLEM_KEYS if not _blank(row.get(k))), None)
        answer = row.get("answer")
        if text is None or _blank(answer):
            skipped.append(pid)
            continue
        if pid in seen_ids:
            duplicate_ids.append(pid)
        seen_ids.add(pid)
        key = _norm_text(str(text))
        if key in seen:
            duplicates.append((pid, seen[key]))
            if dedupe:
                continue
        else:
            seen[key] = pid
        extras = {k: (None if _blank(row.get(k)) else _to_str(row[k])) for k in _EXTRA_KEYS}
        task = "math" if _blank(row.get("task")) else str(row["task"])
        problems.append(Problem(id=pid, problem=str(text), answer=_to_str(answer),
                                source=extras["source"] or name, solution=extras["solution"],
                                level=extras["level"], type=extras["type"], task=task,
                                metadata=row.get("metadata") if isinstance(row.get("metadata"), dict) else None))
    _report(name, skipped, malformed, duplicates, duplicate_ids, dedupe)
    if not problems and (rows or malformed):
        raise DataFileError(
            f"{path or name}: no usable row ({len(rows) + len(bad)} read, {len(skipped)} with an empty problem or "
            f"answer, {len(malformed)} malformed{': ' + str(malformed[0]) if malformed else ''})")
    return Dataset(name=name, problems=problems, skipped=skipped, duplicates=duplicates, path=path,
                   malformed=malformed, duplicate_ids=duplicate_ids)


def _report(name, skipped, malformed, duplicates, duplicate_ids, dedupe) -> None:
    """One warning per kind of problem found while loading (each row named once)."""
    if malformed:
        logger.warning("%s: skipped %d malformed row(s): %s", name, len(malformed), "; ".join(map(str, malformed)))
    if skipped:
        logger.warning("%s: skipped %d row(s) with an empty problem or answer: %s", name, len(skipped),
                       ", ".join(skipped))
    if duplicates:
        logger.warning("%s: %d duplicated problem(s) (%s): %s", name, len(duplicates),
                       "dropped" if dedupe else "kept", ", ".join(f"{a} == {b}" for a, b in duplicates))
    if duplicate_ids:
        logger.warning("%s: %d row(s) reuse an id already in the file: %s", name, len(duplicate_ids),
                       ", ".join(duplicate_ids))


def load_file(path: str | os.PathLike, name: str | None = None, *, dedupe: bool = False) -> Dataset:
    """Loads a ``.jsonl`` / ``.json`` (JSON Lines) or ``.parquet`` file (malformed rows counted and skipped;
    a file with no usable row or none of the expected columns raises :class:`DataFileError`)."""
    p = pathlib.Path(path)
    suffix = p.suffix.lower()
    bad: list[BadRow] = []
    if suffix in (".jsonl", ".json"):
        rows, bad = read_jsonl(p)
        if rows:
            check_columns(p, columns_of(rows), True)
        elif not bad:
            raise DataFileError(f"{p}: the file holds no row")
    elif suffix == ".parquet":
        rows = read_parquet(p)
    else:
        raise ValueError(f"unsupported data file {str(p)!r}: expected .jsonl or .parquet")
    return build_dataset(name or p.stem, rows, path=str(p), dedupe=dedupe, bad=bad)


DEFAULT_DATA_DIR = "../shared/data"  # beside the repository, as the data README lays it out


def default_data_dir() -> pathlib.Path:
    """The one default data directory of every CLI (training's ``data.data_dir``, the evaluator's
    ``data_dir``): ``$RLVR_DATA_DIR`` if set, else :data:`DEFAULT_DATA_DIR` (relative to the working directory)."""
    return pathlib.Path(os.environ.get(DEFAULT_DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def resolve_data_dir(value: str | os.PathLike | None) -> str:
    """A configured data directory, or :func:`default_data_dir` when it is empty."""
    return str(value) if value else str(default_data_dir())


def _load_from_hub(name: str) -> Dataset | None:
    """Loads a registry name from the Hugging Face hub when ``datasets`` is importable; None otherwise."""
    if name not in HUB_SOURCES:
        return None
    try:
        import datasets as hf_datasets  # optional dependency, absent in the default install
    except ImportError:
        return None
    repo, split, pcol, acol, icol = HUB_SOURCES[name]
    ds = hf_datasets.load_dataset(repo, split=split)
    rows = [{"id": (r[icol] if icol else f"{name}-{i}"), "problem": r[pcol], "answer": r[acol], "source": name}
            for i, r in enumerate(ds)]
    return build_dataset(name, rows, path=f"hf://{repo}:{split}")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, dedupe: bool = False,
                 rg_size: int = 1000, rg_seed: int = 0, rg_kwargs: dict | None = None) -> Dataset:
    """Resolves ``name`` (registry name, file path, or ``rg:<task>``) to a :class:`Dataset`.

    Registry names look for ``<data_dir>/<stem>.jsonl`` then ``.parquet``; when neither exists the hub is tried
    only if the ``datasets`` library is importable, else a ``FileNotFoundError`` names the expected file.
    """
    if name.startswith(RG_PREFIX):
        from rlvr_jax.data.reasoning_gym import load_reasoning_gym

        return load_reasoning_gym(name[len(RG_PREFIX):], size=rg_size, seed=rg_seed, **(rg_kwargs or {}))
    from rlvr_jax.data.code import is_code_dataset, load_code_dataset

    if is_code_dataset(name):  # lcb, lcb:START:END, humaneval (see code.py)
        return load_code_dataset(name, data_dir if data_dir is not None else default_data_dir())
    p = pathlib.Path(name)
    if p.suffix.lower() in (".jsonl", ".json", ".parquet"):
        if not p.exists():
            raise FileNotFoundError(f"data file {str(p)!r} does not exist")
        return load_file(p, dedupe=dedupe)
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(REGISTRY)}, "
                         f"'rg:<task>', or a path to a .jsonl/.parquet file")
    d = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
    candidates = [d / f"{REGISTRY[name]}{ext}" for ext in (".jsonl", ".parquet")]
    for c in candidates:
        if c.exists():
            return load_file(c, name, dedupe=dedupe)
    hub = _load_from_hub(name)
    if hub is not None:
        return hub
    raise FileNotFoundError(
        f"dataset {name!r}: expected the local file {candidates[0]} (or {candidates[1].name}) in data_dir="
        f"{str(d)!r}; set the data directory (flag/config data_dir or ${DEFAULT_DATA_DIR_ENV}) to the folder "
        f"holding {candidates[0].name}"
        + (f", or install the `datasets` library to fetch {HUB_SOURCES[name][0]} from the hub"
           if name in HUB_SOURCES else ""))
