"""Test-suite setup: 8 simulated CPU devices, float64 available on request, shared fixtures."""
import json
import os
import pathlib
import sys

# Must happen before jax is imported anywhere in the test process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS_DIR = pathlib.Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # helpers_*.py, also for tests/faults/
    sys.path.insert(0, str(TESTS_DIR))

# (problem, answer) pairs of the tiny training environment; a module sets its own as ENV_PROBLEMS.
ENV_PROBLEMS = [("What is 1+1?", "2"), ("What is 2+2?", "4"), ("3*3?", "9"), ("10-7?", "3"),
                ("Half of 8?", "4"), ("5+5?", "10"), ("2^3?", "8"), ("7-7?", "0")]


def _find_shared_data() -> pathlib.Path | None:
    env = os.environ.get("RLVR_SHARED_DATA")
    candidates = [pathlib.Path(env)] if env else []
    candidates += [REPO_ROOT.parent / "shared" / "data", REPO_ROOT / "shared" / "data"]
    for c in candidates:
        if (c / "math500.jsonl").exists():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
    """../shared/data (the benchmark files); tests needing it fail loudly if it is absent."""
    d = _find_shared_data()
    if d is None:
        pytest.fail("benchmark data not found: expected ../shared/data/math500.jsonl "
                    "(or set RLVR_SHARED_DATA)")
    return d


@pytest.fixture(scope="module")
def float64_module():
    """float64 for every test of the requesting module (``pytestmark = usefixtures("float64_module")``), restored
    afterwards so that x64 never leaks into other modules run by the same worker."""
    import jax

    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


@pytest.fixture(scope="module")
def env(request, tmp_path_factory):
    """A tiny training environment, one per module: ``data`` (a directory with ``math_train.jsonl`` and
    ``math500.jsonl`` holding the module's ``ENV_PROBLEMS``, default :data:`ENV_PROBLEMS`), ``tok_dir`` (the test
    tokenizer, helpers_tokenizer) and ``tok`` (it loaded), ``root`` (a module-scoped scratch directory)."""
    from helpers_tokenizer import make_test_tokenizer

    root = tmp_path_factory.mktemp("env_" + request.module.__name__.rpartition(".")[2])
    data = root / "data"
    data.mkdir()
    for name in ("math_train", "math500"):
        with open(data / f"{name}.jsonl", "w") as f:
            for i, (p, a) in enumerate(getattr(request.module, "ENV_PROBLEMS", ENV_PROBLEMS)):
                f.write(json.dumps({"id": f"{name}-{i}", "problem": p, "answer": a}) + "\n")
    tok = make_test_tokenizer(root / "tok")
    return {"root": root, "data": str(data), "tok_dir": str(root / "tok"), "tok": tok}
