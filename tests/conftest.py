"""Test-suite setup: 8 simulated CPU devices, float64 available on request, shared fixtures."""
import os
import pathlib

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
