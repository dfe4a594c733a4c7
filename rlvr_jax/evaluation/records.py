"""Per-sample evaluation records (JSON Lines) and resuming from them.

One line per generated sample: ``{"problem_id", "sample_index", "kind" ("sample" | "greedy"), "extracted",
"status", "correct", "length" (completion tokens), "finish_reason", "entropy_sum" (sum over the completion's
tokens of the raw-distribution entropy, null when not computed), "error" (the grader's detail, e.g. which code
test failed and why; only when there is one), "text" (only with save_text)}``.

Records of a problem are appended together after its samples were graded, and flushed, so an interrupted run
leaves complete problems plus at most one torn last line. :func:`load_complete` drops the torn line and any
problem with fewer samples than required, and :func:`rewrite` compacts the file to those complete problems
before a resumed run appends to it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Iterable


@dataclasses.dataclass
class SampleRecord:
    problem_id: str
    sample_index: int
    kind: str
    extracted: str | None
    status: str
    correct: bool
    length: int
    finish_reason: str
    entropy_sum: float | None = None
    text: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        for key in ("text", "error"):
            if d[key] is None:
                del d[key]
        return json.dumps(d, ensure_ascii=False)


def read_records(path: str | os.PathLike) -> list[SampleRecord]:
    """All parseable records of ``path`` (a torn last line is ignored); [] when the file does not exist."""
    p = pathlib.Path(path)
    if not p.exists():
        return []
    out = []
    fields = {f.name for f in dataclasses.fields(SampleRecord)}
    with open(p, encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by an interruption
            out.append(SampleRecord(**{k: v for k, v in d.items() if k in fields}))
    return out


def group_complete(records: Iterable[SampleRecord], n_required: int) -> dict[str, list[SampleRecord]]:
    """``{problem_id: records sorted by sample_index}`` for problems with samples 0..n_required-1 all present
    (later duplicates of a (problem, sample) win)."""
    by_problem: dict[str, dict[int, SampleRecord]] = {}
    for r in records:
        by_problem.setdefault(r.problem_id, {})[r.sample_index] = r
    return {pid: [s[i] for i in range(n_required)] for pid, s in by_problem.items()
            if all(i in s for i in range(n_required))}


def load_complete(path: str | os.PathLike, n_required: int) -> dict[str, list[SampleRecord]]:
    return group_complete(read_records(path), n_required)


def rewrite(path: str | os.PathLike, groups: dict[str, list[SampleRecord]]) -> None:
    """Atomically replaces ``path`` with exactly the records in ``groups``."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for recs in groups.values():
            for r in recs:
                f.write(r.to_json() + "\n")
    os.replace(tmp, p)


def append(path: str | os.PathLike, records: Iterable[SampleRecord]) -> None:
    """Appends records and flushes them to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(r.to_json() + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
