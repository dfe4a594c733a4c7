"""Fault injection into the grader (issue 18): adversarial responses are graded within a latency bound, the
calling process never spends long on any item, worker memory stays bounded, normal jobs are graded right
afterwards, and a pool works from a script read on stdin.

The extraction helpers are also checked against the previous (quadratic) implementations on random inputs, so
the linear versions are the same rule, not a new one.
"""
import os
import pathlib
import random
import re
import subprocess
import sys
import time

import pytest

from rlvr_jax.rewards import STATUSES, GraderPool
from rlvr_jax.rewards.extract import _unwrap_wrappers, last_boxed, normalize_answer
from rlvr_jax.rewards.reasoning_gym import _answer_tags

pytestmark = pytest.mark.faults

TIMEOUT_S = 2.0
TESTS_DIR = pathlib.Path(__file__).resolve().parents[1]
# Wall-time slack over the per-item timeout for one call holding one adversarial item (kill, join, respawn,
# the parent's fallback extraction) on a loaded 2-core machine.
SLACK_S = 3.0
HANG = "\\boxed{9^{9^{9^{9}}}}"  # sympy evaluates this power tower for ever


def adversarial_responses() -> dict[str, str]:
    """Named hostile responses: the kinds of issue 18's 10,725-item run, one or two of each."""
    rng = random.Random(0)
    return {
        "power_tower": HANG,
        "power_tower_then_300k_unclosed_boxes": HANG + "\\boxed{" * 43000,  # the worker times out; the parent
        # re-extracts the whole text (before issue 18: quadratic, minutes for this one)
        "unclosed_boxes_70k": "\\boxed{" * 10000,
        "unclosed_fbox_spaces": "\\fbox  {" * 8000,
        "bare_boxes_newlines": "\\boxed \n" * 10000,
        "empty_boxes": "\\boxed{}" * 10000,
        "factorial": "\\boxed{100000000!}",
        "deep_braces_5k": "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
        "nested_text_10k": "\\boxed{" + "\\text{" * 10000 + "1" + "}" * 10000 + "}",
        "latex_1mb": "\\boxed{" + "\\frac{1}{2}+" * 90000 + "1}",
        "binary": "".join(chr(rng.randrange(256)) for _ in range(20000)),
        "null_bytes": "\\boxed{1\x00\x00}" + "\x00" * 10000,
        "unicode": "\\boxed{\u00bd\u221a\U0001F600\u200b}" + "\u202e\u0301" * 5000,
        "many_boxes": "".join(f"\\boxed{{{i}}}" for i in range(20000)),
        "unclosed_answer_tags": "<answer>" * 10000,
        "answer_colon_repeats": "answer: " * 20000,
        "sympy_hostile": "\\boxed{\\frac{\\frac{\\frac{1}{0}}{\\infty}}{\\sqrt[0]{-1}}^{\\log 0}}",
        "huge_integer": "\\boxed{" + "9" * 100000 + "}",
        "deep_parens": "\\boxed{" + "(" * 5000 + ")" * 5000 + "}",
    }


NORMAL = [("\\boxed{\\frac{1}{2}}", "0.5", "correct"), ("\\boxed{3}", "4", "incorrect"),
          ("no answer here", "1", "no_answer"), ("The answer is $7$.", "7", "correct"),
          ("\\boxed{(1,2)}", "(1,2)", "correct"), ("\\boxed{\\text{10}}", "10", "correct")]


def _check_normal(pool: GraderPool) -> None:
    res = pool.grade_math([r for r, _, _ in NORMAL], [a for _, a, _ in NORMAL])
    assert [r.status for r in res] == [s for _, _, s in NORMAL]


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout_s=TIMEOUT_S) as p:
        _check_normal(p)  # workers up before anything is timed
        yield p


def test_each_adversarial_response_is_graded_within_the_bound(pool):
    latencies = {}
    for name, response in adversarial_responses().items():
        t0 = time.monotonic()
        (res,) = pool.grade_math([response], ["1"])
        latencies[name] = time.monotonic() - t0
        assert res.status in STATUSES and res.reward in (-1.0, 1.0), (name, res)
        assert latencies[name] < TIMEOUT_S + SLACK_S, (name, latencies[name], res)
        assert res.seconds <= TIMEOUT_S + SLACK_S, (name, res.seconds)
    print("latency per adversarial item (s):", {k: round(v, 3) for k, v in latencies.items()})
    _check_normal(pool)  # graded right after the attack, by the same (or replaced) workers


def test_calling_process_fallback_extraction_is_fast(pool):
    """An item that times out in its worker is re-extracted in the calling process (``_finish``): that must
    cost milliseconds, not the 51.5 s measured before issue 18 on a 70 KB response."""
    response = adversarial_responses()["power_tower_then_300k_unclosed_boxes"]
    t0 = time.monotonic()
    (res,) = pool.grade_math([response], ["1"])
    elapsed = time.monotonic() - t0
    assert res.status == "timeout" and res.extracted == "9^{9^{9^{9}}}", res
    assert elapsed - res.seconds < 1.0, (elapsed, res.seconds)  # what the parent spent outside the worker
    print(f"\n{len(response)}-char response: {res.seconds:.3f} s in the worker, {elapsed - res.seconds:.3f} s "
          f"in the calling process")


def test_a_batch_of_adversarial_and_normal_items_keeps_every_status():
    bad = list(adversarial_responses().values())
    responses = bad + [r for r, _, _ in NORMAL]
    answers = ["1"] * len(bad) + [a for _, a, _ in NORMAL]
    with GraderPool(num_workers=2, timeout_s=TIMEOUT_S, max_items_per_worker=5) as p:
        res = p.grade_math(responses, answers)
        assert len(res) == len(responses) and all(r.status in STATUSES for r in res)
        assert [r.status for r in res[len(bad):]] == [s for _, _, s in NORMAL]
        assert p.stats.recycles >= len(responses) // 5 - 2  # retired by item count (a kill also resets one)
        assert p.stats.max_worker_rss_mb > 0
        _check_normal(p)
        print(f"\n{len(responses)} items: {p.stats}")


def test_workers_are_recycled_by_item_count_and_by_memory():
    with GraderPool(num_workers=1, timeout_s=TIMEOUT_S, max_items_per_worker=3) as p:
        first = p.worker_pids[0]
        for _ in range(10):
            assert p.grade_math(["\\boxed{2}"], ["2"])[0].status == "correct"
        # retired after items 3, 6 and 9: four workers served the ten items
        assert p.stats.recycles == 3 and p.stats.workers_started == 4 and p.worker_pids[0] != first
    with GraderPool(num_workers=1, timeout_s=TIMEOUT_S, max_items_per_worker=None, max_rss_mb=1.0) as p:
        res = p.grade_math(["\\boxed{2}", "\\boxed{3}"], ["2", "2"])
        assert [r.status for r in res] == ["correct", "incorrect"]
        assert p.stats.recycles == 2 and p.stats.max_worker_rss_mb > 1.0  # every worker is above 1 MB
    with pytest.raises(ValueError, match="max_items_per_worker"):
        GraderPool(num_workers=0, max_items_per_worker=0)
    with pytest.raises(ValueError, match="max_rss_mb"):
        GraderPool(num_workers=0, max_rss_mb=-1)


def test_grade_math_from_an_unguarded_script_file(tmp_path):
    """A script that grades at import time, without an ``if __name__ == "__main__":`` guard: the workers do not
    re-run it (they would each start a pool and die), so it grades, once."""
    script = tmp_path / "unguarded.py"
    script.write_text("from rlvr_jax.rewards import grade_math\n"
                      "print([r.status for r in grade_math(['\\\\boxed{2}', '\\\\boxed{3}'], ['2', '2'], num_workers=1)])\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(TESTS_DIR.parent)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines() == ["['correct', 'incorrect']"], out.stdout


def test_workers_dying_at_start_up_raise_an_error_naming_the_causes(tmp_path):
    """A broken install seen only by the workers: after the parent has imported the grader, sys.path (which the
    workers inherit) puts a math_verify that fails to import first, so every worker dies before reporting ready
    (spawn: a forkserver would fork from its own warm copy of the grader)."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "math_verify.py").write_text("raise ImportError('simulated broken install')\n")
    script = ("import os, sys\n"
              "from rlvr_jax.rewards import GraderPool\n"
              "import rlvr_jax.rewards.worker\n"
              f"sys.path.insert(0, {str(tmp_path / 'broken')!r})\n"
              "with GraderPool(num_workers=1, timeout_s=5, start_method='spawn') as p:\n"
              "    p.grade_math(['\\\\boxed{0.5}'], ['\\\\frac{1}{2}'])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(TESTS_DIR.parent)))
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: grader workers keep dying at start-up"), out.stderr[-3000:]
    assert "traceback is printed on stderr above" in last and "broken install" in last
    assert "simulated broken install" in out.stderr  # the workers' own tracebacks are there


def test_grade_math_from_a_script_on_stdin():
    script = ("from rlvr_jax.rewards import grade_math\n"
              "print([r.status for r in grade_math(['\\\\boxed{2}', '\\\\boxed{3}'], ['2', '2'], num_workers=1)])\n")
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "['correct', 'incorrect']", out.stdout


# ---------------------------------------------------------------------------------------------------------
# The linear-time helpers are the previous rule (reference: the previous implementations, copied here).
# ---------------------------------------------------------------------------------------------------------

def _reference_braced(text, start):
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None


def _reference_last_boxed(text):
    for m in reversed(list(re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text))):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        content = None
        if i < len(text) and text[i] == "{":
            content = _reference_braced(text, i)
        elif i > m.end():
            mm = re.match(r"[^\s$]+", text[i:])
            content = mm.group(0) if mm else None
        if content is not None and content.strip():
            return content.strip()
    return None


def _reference_unwrap(s):
    prev = None
    while prev != s:
        prev, s = s, re.sub(r"\\(?:text|textbf|mathrm|mathbf|textit|mbox)\{([^{}]*)\}", r"\1", s)
    return s


def test_linear_extraction_matches_the_previous_rule_on_random_text():
    rng = random.Random(18)
    pieces = ["\\boxed{", "\\fbox{", "\\boxed ", "{", "}", "\\{", "\\}", "\\\\", "1", "x", " ", "\n", "$",
              "\\text{", "\\mathrm{", "<answer>", "</answer>", "\\boxedx"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
        assert last_boxed(text) == _reference_last_boxed(text), text
        assert _unwrap_wrappers(text) == _reference_unwrap(text), text
        assert _answer_tags(text) == re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL), text
    assert normalize_answer("\\text{\\mathrm{10}}\\,\\text{cm}") == "10cm"
    assert normalize_answer("\\text{a{b}}") == "\\text{a{b}}"
