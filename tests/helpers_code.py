"""A small LiveCodeBench-format fixture (the release files' fields and encodings) and code-problem helpers."""
from __future__ import annotations

import base64
import json
import pathlib
import pickle
import zlib

from rlvr_jax.bench.code_bench import stdin_problem  # noqa: F401  (re-exported for the tests)


def encode_private(cases) -> str:
    """LiveCodeBench's encoding of private tests: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode("ascii")


def lcb_row(qid, content, tests, *, date="2024-09-01T00:00:00", func_name=None, starter="", private_from=1,
            difficulty="easy", platform="atcoder"):
    """A release-file row; ``tests`` is ``[(input, output)]``, the first ``private_from`` of them public."""
    testtype = "functional" if func_name else "stdin"
    cases = [{"input": i, "output": o, "testtype": testtype} for i, o in tests]
    return {"question_title": f"title {qid}", "question_content": content, "platform": platform,
            "question_id": qid, "contest_id": "c1", "contest_date": date, "starter_code": starter,
            "difficulty": difficulty, "public_test_cases": json.dumps(cases[:private_from]),
            "private_test_cases": encode_private(cases[private_from:]),
            "metadata": json.dumps({"func_name": func_name} if func_name else {})}


SUM_TESTS = [("1 2\n", "3\n"), ("10 -4\n", "6\n"), ("0 0\n", "0\n")]
HALF_TESTS = [("1\n", "0.5\n"), ("3\n", "1.5\n")]
TWO_SUM_TESTS = [("[2, 7, 11, 15]\n9", "[0, 1]"), ("[3, 2, 4]\n6", "[1, 2]"), ("[3, 3]\n6", "[0, 1]")]
TWO_SUM_STARTER = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        "

SUM_OK = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_WRONG_ON_TEST1 = "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n"  # passes test 0 only
HALF_OK_OTHER_FORMAT = "n = int(input())\nprint(f'{n / 2:.3f}  ')\n"  # 0.500 vs 0.5, trailing spaces
TWO_SUM_OK = ("class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
              "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
              "                return (seen[target - x], i)\n            seen[x] = i\n")


def write_lcb_fixture(data_dir) -> pathlib.Path:
    """``<data_dir>/lcb/test.jsonl`` + ``test2.jsonl``: 3 good problems (stdin, stdin with floats, functional)
    over three dates, a duplicate, and the unusable rows :data:`BAD_IDS` (one holds a pickle that would create
    ``<data_dir>/pickle_ran`` if it were ever executed)."""
    folder = pathlib.Path(data_dir) / "lcb"
    folder.mkdir(parents=True, exist_ok=True)
    good = [lcb_row("abc001_a", "Print the sum of two integers A and B.", SUM_TESTS, date="2023-05-01T00:00:00"),
            lcb_row("abc002_b", "Print N / 2.", HALF_TESTS, date="2024-09-10T00:00:00"),
            lcb_row("two-sum", "Return indices of the two numbers adding up to target.", TWO_SUM_TESTS,
                    func_name="twoSum", starter=TWO_SUM_STARTER, date="2024-12-24T00:00:00",
                    platform="leetcode")]
    with open(folder / "test.jsonl", "w") as f:
        for row in good[:2]:
            f.write(json.dumps(row) + "\n")
    bad_rows = _bad_rows(pathlib.Path(data_dir) / "pickle_ran")
    with open(folder / "test2.jsonl", "w") as f:
        for row in [good[2], good[0]] + bad_rows:  # good[0] again: a duplicate question_id
            f.write(json.dumps(row) + "\n")
    return folder


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('x')",))


def _bad_rows(marker) -> list[dict]:
    evil = base64.b64encode(zlib.compress(pickle.dumps(_Evil(marker)))).decode("ascii")
    not_str = base64.b64encode(zlib.compress(pickle.dumps([{"input": "1", "output": "1"}]))).decode("ascii")
    return [
        dict(lcb_row("bad_pickle", "x", SUM_TESTS), private_test_cases=evil),
        dict(lcb_row("bad_list_pickle", "x", SUM_TESTS), private_test_cases=not_str),
        dict(lcb_row("bad_base64", "x", SUM_TESTS), private_test_cases="%%%not base64%%%"),
        dict(lcb_row("bad_empty", "", SUM_TESTS)),
        dict(lcb_row("bad_no_func", "x", TWO_SUM_TESTS, func_name="twoSum"), metadata="{}"),
        dict(lcb_row("bad_mixed", "x", SUM_TESTS), public_test_cases=json.dumps(
            [{"input": "1", "output": "1", "testtype": "functional"}])),
        dict(lcb_row("bad_no_tests", "x", SUM_TESTS), public_test_cases="[]", private_test_cases=""),
    ]


BAD_IDS = ("bad_pickle", "bad_list_pickle", "bad_base64", "bad_empty", "bad_no_func", "bad_mixed", "bad_no_tests")


def fenced(code: str, lead: str = "Here is my solution.\n") -> str:
    return f"{lead}```python\n{code}```\n"
