"""Command lines: setup.py's console scripts resolve to a `cli()` that answers --help, and the evaluator's
ml_collections config (presets, overrides after the preset, validation naming the field, misspelled names)."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from rlvr_jax.config.validate import ConfigError
from rlvr_jax.evaluation.cli_config import get_config, to_eval_config, validate_eval_config
from rlvr_jax.evaluation.config import EvalConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    """``{script: "module:function"}`` read from setup.py's ``CONSOLE_SCRIPTS`` (without running setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONSOLE_SCRIPTS" for t in node.targets):
            entries = ast.literal_eval(node.value)
            return dict(e.replace(" ", "").split("=", 1) for e in entries)
    raise AssertionError("setup.py has no CONSOLE_SCRIPTS list")


def _subprocess_env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    return env


def test_console_scripts_are_the_three_documented_ones():
    assert console_scripts() == {"rlvr-train": "rlvr_jax.train:cli", "rlvr-eval": "rlvr_jax.evaluate:cli",
                                 "rlvr-demo": "rlvr_jax.demo:cli"}


# The arguments a script needs for its flags to parse (a required --config); absl's --only_check_args then
# exits 0 after parsing, without running the job.
SCRIPT_ARGS = {"rlvr-train": ["--config=configs/tiny_cpu.py:nsr"], "rlvr-eval": [], "rlvr-demo": []}


def _run_script(script, *args):
    """What pip's generated wrapper does: import the module and call the function with argv = [script, ...]."""
    module, func = console_scripts()[script].split(":")
    code = (f"import sys; sys.argv = {[script, *args]!r}\n"
            f"from {module} import {func}\n"
            f"sys.exit({func}())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_subprocess_env(), cwd=ROOT)


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_console_script_resolves_parses_and_prints_help(script):
    checked = _run_script(script, *SCRIPT_ARGS[script], "--only_check_args")
    assert checked.returncode == 0, (script, checked.stdout[-1500:], checked.stderr[-3000:])
    helped = _run_script(script, "--helpfull")  # absl prints the flags and exits 1 (its convention for help)
    assert "--config" in helped.stdout + helped.stderr, (script, helped.stdout[-1500:], helped.stderr[-3000:])
    assert "Traceback" not in helped.stderr, helped.stderr[-3000:]


def test_rlvr_eval_help_lists_the_config_flag():
    helped = _run_script("rlvr-eval", "--help")
    assert "--config: evaluator config file" in helped.stdout, helped.stdout[-2000:]


def _parse(*args):
    """``--config`` parsed as rlvr-eval does (config_flags reads the overrides from ``sys.argv``)."""
    argv = ["rlvr-eval", *args]
    saved, sys.argv = sys.argv, argv
    try:
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", str(ROOT / "rlvr_jax" / "evaluation" / "cli_config.py"),
                                        flag_values=fv, lock_config=True)
        fv(argv)
        return fv.config
    finally:
        sys.argv = saved


def test_eval_config_presets_and_overrides_after_the_preset():
    default = _parse("--config.checkpoint=/ckpt", "--config.out=/tmp/o")
    assert (default.n, default.temperature, default.top_p, default.top_k) == (16, 0.6, 0.95, -1)
    assert default.checkpoint == "/ckpt"
    q3 = _parse(f"--config={ROOT / 'configs' / 'eval.py'}:qwen3", "--config.n=8", "--config.datasets=math500,amc23")
    assert (q3.n, q3.temperature, q3.top_p, q3.top_k) == (8, 0.7, 0.8, 20)  # the override wins over the preset
    q25 = _parse(f"--config={ROOT / 'configs' / 'eval.py'}:qwen25math")
    assert (q25.n, q25.temperature, q25.top_p, q25.top_k) == (256, 0.6, 0.95, -1)
    with pytest.raises(ConfigError, match="unknown sampling preset 'qwen4'"):
        get_config("qwen4")


def test_eval_config_maps_onto_the_runner_settings(tmp_path):
    c = get_config("qwen3")
    c.update(checkpoint=str(tmp_path), out=str(tmp_path / "o"), ks="1, 4,16", grade_workers=0, engine="vllm",
             greedy=False, max_new_tokens=128, seed=3)
    validate_eval_config(c)
    assert to_eval_config(c) == EvalConfig(n=64, ks=(1, 4, 16), temperature=0.7, top_p=0.8, top_k=20,
                                           max_new_tokens=128, seed=3, greedy=False, grade_workers=None,
                                           policy=str(tmp_path.resolve()), engine="vllm",
                                           template="qwen3_nothink")  # the prompt configs/*_qwen3.py train with


@pytest.mark.parametrize("field,value,match", [
    ("out", "", "is required"),
    ("checkpoint", "/no/such/dir", "is not a directory"),
    ("engine", "sglang", "not in"),
    ("dtype", "float8", "not in"),
    ("token_entropy", "yes", "not in"),
    ("ks", "1,two", "comma-separated list of integers"),
    ("ks", "1,32", r"outside \[1, n=16\]"),
    ("n", 0, "must be >= 1"),
    ("temperature", -0.5, "must be >= 0"),
    ("top_p", 0.0, r"must be in \(0, 1\]"),
    ("max_new_tokens", 0, "must be >= 1"),
    ("prompt_batch_size", 0, "must be >= 1"),
    ("grade_timeout_s", 0.0, "must be > 0"),
    ("datasets", " , ", "names no dataset"),
])
def test_eval_config_errors_name_the_field(tmp_path, field, value, match):
    c = get_config()
    c.update(checkpoint=str(tmp_path), out=str(tmp_path / "o"))
    c[field] = value
    with pytest.raises(ConfigError, match=match) as e:
        validate_eval_config(c)
    assert e.value.field == field


def test_evaluate_cli_reports_a_bad_value_or_name_without_a_traceback(tmp_path):
    bad_value = subprocess.run([sys.executable, "-m", "rlvr_jax.evaluate", f"--config.checkpoint={tmp_path}",
                                "--config.engine=sglang", f"--config.out={tmp_path / 'o'}"],
                               capture_output=True, text=True, timeout=300, env=_subprocess_env(), cwd=ROOT)
    assert bad_value.returncode != 0 and "config field 'engine'" in bad_value.stderr
    assert "Traceback" not in bad_value.stderr
    misspelled = subprocess.run([sys.executable, "-m", "rlvr_jax.evaluate", "--config.temprature=1.0"],
                                capture_output=True, text=True, timeout=300, env=_subprocess_env(), cwd=ROOT)
    assert misspelled.returncode == 2 and "did you mean 'temperature'" in misspelled.stderr
