"""The evaluator under faults: results do not depend on the batch size, a run killed mid-way (even mid-line)
resumes to identical records and pass@k, resuming with other settings is refused, repeated ids are an error."""
import dataclasses
import json

import pytest
from flax import nnx

from helpers_tokenizer import make_test_tokenizer
from rlvr_jax.data import Dataset, Problem
from rlvr_jax.evaluation import EvalConfig, evaluate, read_records
from rlvr_jax.evaluation.runner import problem_seed
from rlvr_jax.models import Decoder, get_preset
from rlvr_jax.rewards import GraderPool
from rlvr_jax.rollout.jax_sampler import JaxSampler

PROBLEMS = [Problem(id=f"q{i}", problem=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(5)]
CFG = EvalConfig(n=4, temperature=1.0, top_p=1.0, max_new_tokens=8, prompt_batch_size=5, greedy=False,
                 grade_workers=1, save_text=True, seed=3, template="plain")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = make_test_tokenizer(tmp_path_factory.mktemp("tok"))
    model = Decoder(get_preset("tiny-qwen3"), rngs=nnx.Rngs(1))
    engine = JaxSampler(model, pad_id=0, eos_token_ids=(258,), max_batch_size=32, max_prompt_len=96,
                        max_new_tokens_limit=8)
    with GraderPool(num_workers=1, timeout_s=10.0) as pool:
        yield tok, engine, pool


class NoSeedSupport:
    """The same sampler seen as an engine that ignores ``prompt_seeds`` (e.g. a server)."""

    supports_prompt_seeds = False

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def generate(self, prompts, n, params):
        assert params.prompt_seeds is None
        self.calls += 1
        return self.inner.generate(prompts, n, params)


class Crashing:
    """Forwards ``generate`` and raises after ``after`` calls, as a kill would."""

    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0
        self.supports_prompt_seeds = getattr(inner, "supports_prompt_seeds", False)

    def generate(self, prompts, n, params):
        if self.calls == self.after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.inner.generate(prompts, n, params)


def _records(out):
    recs = read_records(out / "toy" / "samples.jsonl")
    return sorted(json.dumps(dataclasses.asdict(r), sort_keys=True) for r in recs)


def _eval(engine, tok, pool, out, cfg=CFG, problems=PROBLEMS):
    return evaluate(engine, tok, [Dataset("toy", list(problems))], cfg, out, pool=pool, progress=False)["toy"]


def test_results_do_not_depend_on_batch_size(setup, tmp_path):
    tok, engine, pool = setup
    a = _eval(engine, tok, pool, tmp_path / "b5")
    b = _eval(engine, tok, pool, tmp_path / "b2", dataclasses.replace(CFG, prompt_batch_size=2))
    assert _records(tmp_path / "b5") == _records(tmp_path / "b2")
    assert a["pass_at_k"] == b["pass_at_k"]
    texts = {r.problem_id: [] for r in read_records(tmp_path / "b5" / "toy" / "samples.jsonl")}
    for r in read_records(tmp_path / "b5" / "toy" / "samples.jsonl"):
        texts[r.problem_id].append(r.text)
    assert len({tuple(v) for v in texts.values()}) == len(PROBLEMS)  # no two problems share a random stream
    # The fallback for engines without per-prompt seeds: one call per problem, also batch-independent.
    c_eng, d_eng = NoSeedSupport(engine), NoSeedSupport(engine)
    _eval(c_eng, tok, pool, tmp_path / "n5")
    _eval(d_eng, tok, pool, tmp_path / "n2", dataclasses.replace(CFG, prompt_batch_size=2))
    assert _records(tmp_path / "n5") == _records(tmp_path / "n2") and c_eng.calls == len(PROBLEMS)
    # A problem's samples also do not depend on the other problems in the dataset.
    _eval(engine, tok, pool, tmp_path / "sub", problems=PROBLEMS[3:])
    sub = _records(tmp_path / "sub")
    assert set(sub) <= set(_records(tmp_path / "b5")) and len(sub) == 2 * CFG.n


def test_problem_seeds_are_distinct_and_stable():
    seeds = [problem_seed(0, f"p{i}") for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**32 for s in seeds)
    assert problem_seed(0, "p1") == problem_seed(0, "p1") != problem_seed(1, "p1")


@pytest.mark.parametrize("torn", [False, True])
def test_killed_mid_run_resumes_to_identical_records(setup, tmp_path, torn):
    tok, engine, pool = setup
    cfg = dataclasses.replace(CFG, prompt_batch_size=2)
    ref = _eval(engine, tok, pool, tmp_path / "ref", cfg)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _eval(Crashing(engine, after=2), tok, pool, out, cfg)  # 4 of 5 problems written, then killed
    path = out / "toy" / "samples.jsonl"
    assert len(read_records(path)) == 4 * cfg.n
    if torn:  # a kill in the middle of writing a line
        with open(path, "a") as f:
            f.write('{"problem_id": "q4", "sample_ind')
    resumed = Crashing(engine, after=99)
    got = _eval(resumed, tok, pool, out, cfg)
    assert resumed.calls == 1  # only the missing problem was generated again
    assert _records(out) == _records(tmp_path / "ref") and got["pass_at_k"] == ref["pass_at_k"]


def test_resume_with_other_settings_is_refused(setup, tmp_path):
    tok, engine, pool = setup
    _eval(engine, tok, pool, tmp_path / "r")
    for change in (dict(seed=4), dict(temperature=0.5), dict(policy="/other/ckpt"), dict(engine="vllm"),
                   dict(seeding="per-batch")):
        with pytest.raises(ValueError, match="different settings") as e:
            _eval(engine, tok, pool, tmp_path / "r", dataclasses.replace(CFG, **change))
        assert next(iter(change)) in str(e.value)
    _eval(engine, tok, pool, tmp_path / "r", dataclasses.replace(CFG, prompt_batch_size=1))  # not sample-defining


def test_repeated_problem_id_is_an_error(setup, tmp_path):
    tok, engine, pool = setup
    probs = PROBLEMS + [Problem(id="q1", problem="A different question?", answer="1")]
    with pytest.raises(ValueError, match=r"toy: 1 problem id\(s\) appear more than once \(\['q1'\]\)"):
        _eval(engine, tok, pool, tmp_path / "d", problems=probs)
