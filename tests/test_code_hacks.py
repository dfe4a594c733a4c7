"""Code rewards a policy cannot game: every reward-hack program of rlvr_jax/bench/code_hacks.py (exit tricks,
lying comparisons, harness tampering, output injection) is graded not correct, with the status of the defence
that stops it, while an honest answer to each target problem and the HumanEval canonical solutions pass (a
sample of 28 in CI, all 164 with RLVR_CODE_HEAVY=1);
the wire refuses everything but plain data of exact built-in types."""
import math
import os
import time

import pytest

from rlvr_jax.bench.code_bench import fenced
from rlvr_jax.data import load_dataset
from rlvr_jax.rewards import GraderPool
from rlvr_jax.rewards.code_calls import grade_check
from rlvr_jax.bench.code_hacks import EXPECTED, HACKS, KINDS, grade_hacks
from rlvr_jax.rewards.sandbox import SandboxConfig
from rlvr_jax.rewards.sandbox_session import CallFailed, CallSession
from rlvr_jax.rewards.sandbox_wire import FrameReader, NotPlainData, WireError, decode_value, encode_value, frame

LIMITS = SandboxConfig(cpu_s=2.0, wall_s=3.0)


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout_s=30.0) as p:
        p.code_sandbox = LIMITS
        yield p


def test_every_hack_is_graded_not_correct_by_its_defence(pool):
    rows, honest = grade_hacks(pool)
    assert len(rows) == len(HACKS) >= 85 and {r["kind"] for r in rows} == set(KINDS)
    assert honest == {t: "correct" for t in honest} and len(honest) == 9  # the targets themselves are gradable
    assert [r["name"] for r in rows if r["correct"]] == []
    wrong = [(r["name"], r["status"], EXPECTED[r["name"]], r["error"]) for r in rows
             if r["status"] not in EXPECTED[r["name"]].split("|")]
    assert not wrong, "\n".join(map(str, wrong))
    assert pool.stats.worker_deaths == 0 and pool.stats.hard_kills == 0


# CI grades every 8th canonical solution and those whose check does something unusual (calls the prompt's helpers:
# 32, 38, 50; the entry point by name: 33, 106; random inputs: 32, 53; loops of calls: 44, 151); all 164 with
# RLVR_CODE_HEAVY=1 (docs/code.md).
HEAVY = os.environ.get("RLVR_CODE_HEAVY") == "1"
CANONICAL_SAMPLE = sorted(set(range(0, 164, 8)) | {32, 33, 38, 44, 50, 53, 106, 151})


def test_humaneval_canonical_solutions_pass(pool):
    ds = list(load_dataset("humaneval"))
    if not HEAVY:
        ds = [ds[i] for i in CANONICAL_SAMPLE]
    graded = pool.grade_problems(ds, [fenced(p.metadata["prefix"] + p.metadata["canonical_solution"]) for p in ds])
    assert [(p.id, g.status, g.error) for p, g in zip(ds, graded) if not g.correct] == []


def test_a_failed_call_that_check_swallows_still_fails():
    check = "def check(candidate):\n    for x in (1, 2):\n        try:\n            assert candidate(x) == x\n" \
            "        except BaseException:\n            pass\n"
    exits = "import os\ndef f(x):\n    os._exit(0)\n"
    assert grade_check(exits, "", check, "f", LIMITS)[0] == "early_exit"
    lies = "class E(int):\n    __eq__ = lambda s, o: True\ndef f(x):\n    return E(0)\n"
    assert grade_check(lies, "", check, "f", LIMITS)[0] == "bad_value"
    assert grade_check("def f(x):\n    return x\n", "", check, "f", LIMITS) == ("passed", None)
    never = "def check(candidate):\n    pass\n"
    assert grade_check("def f(x):\n    return x\n", "", never, "f", LIMITS)[0] == "failed"


def test_a_session_hands_back_genuine_plain_data_and_remembers_a_failure():
    program = "def f(x):\n    return x, [x], {x: {x}}, None, 2 ** 100, -0.0, float('inf'), b'\\x00'\n"
    with CallSession(program, LIMITS, func_name="f", header="") as s:
        got = s.call([3], spawn=True)
        assert got == (3, [3], {3: {3}}, None, 2 ** 100, -0.0, math.inf, b"\x00")
        assert [type(v) for v in got] == [int, list, dict, type(None), int, float, float, bytes]
        assert s.call(["a"])[2] == {"a": {"a"}} and s.calls == 2
        s.end()
    with CallSession("import os\ndef f(x):\n    if x:\n        os._exit(0)\n    return x\n", LIMITS, func_name="f",
                     header="") as s:
        assert s.call([0], spawn=True) == 0
        with pytest.raises(CallFailed) as e:
            s.call([1])
        assert e.value.status == "early_exit"
        with pytest.raises(CallFailed):  # remembered: no later call can succeed
            s.call([0], spawn=True)


@pytest.mark.parametrize("value", [0, -1, True, None, 1.5, -0.0, math.inf, "é\ud800", b"\xff", 2 ** 200, -2 ** 64,
                                   [1, (2, [3])], {(1, 2): {"a": frozenset({1})}}, set(), (), {}])
def test_wire_round_trip_keeps_exact_types(value):
    back = decode_value(encode_value(value))
    assert back == value and type(back) is type(value) and repr(back) == repr(value)


class _Int(int):
    pass


@pytest.mark.parametrize("value", [_Int(1), [1, _Int(2)], {"k": object()}, range(3), (x for x in ()), 1j])
def test_wire_refuses_what_is_not_plain_data(value):
    with pytest.raises(NotPlainData):
        encode_value(value)


def test_wire_decoder_refuses_malformed_or_dangerous_input():
    with pytest.raises(NotPlainData, match="NaN"):
        decode_value(encode_value(float("nan")))
    assert math.isnan(decode_value(encode_value(float("nan")), allow_nan=True))
    nested = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(NotPlainData, match="deeper"):
        encode_value(nested)
    for bad in (b"NaN", b"Infinity", b"1e400", b"[1, 2]", b'{"a": 1}', b'["q", "x"]', b'["i", "zz"]',
                b'["d", 1]', b"\xff", b"[" * 100000, b'["l"' + b',["l"' * 150 + b"]" * 151):
        with pytest.raises((WireError, NotPlainData)):
            decode_value(bad)
    with pytest.raises(NotPlainData, match="unhashable"):
        decode_value(b'["s",["l",1]]')
    m = (1 << 61) - 1  # k * m hashes to 0 for every int k (a set of 20,000 took 10 s to build)
    flood = encode_value([k * m for k in range(1, 40_000)]).replace(b'["l"', b'["s"', 1)
    t0 = time.perf_counter()
    for data in (flood, flood.replace(b'["s"', b'["z"', 1), b'["d"' + flood[4:-1] + b',0]'):
        with pytest.raises(NotPlainData, match="hash flooding"):
            decode_value(data)
    assert time.perf_counter() - t0 < 5.0
    assert decode_value(encode_value({-1, -2, *range(1000)})) == {-1, -2, *range(1000)}  # hash(-1) == hash(-2)
    reader = FrameReader(max_payload=8)
    reader.feed(frame({"a": 1}, b"12345678") + b'{"nbytes": 9}\n')
    assert reader.next() == ({"a": 1, "nbytes": 8}, b"12345678")
    with pytest.raises(WireError, match="over the limit"):
        reader.next()
    for garbage in (b"not json\n", b'[1]\n', b'{"nbytes": -1}\n', b"x" * 5000):
        r = FrameReader(max_payload=8)
        r.feed(garbage)
        with pytest.raises(WireError):
            r.next()
