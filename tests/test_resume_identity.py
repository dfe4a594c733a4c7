"""Issue 27 finding 2: a start resumes only the run its checkpoint belongs to (rlvr_jax.trainer.run_identity)."""
import json

import numpy as np
import pytest

from rlvr_jax.config import as_plain
from rlvr_jax.config.presets import experiment
from rlvr_jax.trainer.checkpointing import Checkpointer
from rlvr_jax.trainer.run_identity import (HISTORY_FILE, ResumeMismatchError, check_same_run, config_changes)


@pytest.fixture
def env(tmp_path):
    """Just the data files validation looks for (the tiny preset's built-in tokenizer needs nothing)."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("math_train", "math500"):
        (data / f"{name}.jsonl").write_text(json.dumps({"id": "0", "problem": "1+1?", "answer": "2"}) + "\n")
    return {"data": str(data)}


def _cfg(env, out, algo="w_reinforce", **kw):
    c = experiment(algo, "tiny")
    c.data.data_dir, c.logging.out_dir = env["data"], str(out)
    for k, v in kw.items():
        sec, field = k.split("__")
        setattr(getattr(c, sec), field, v)
    return c


def _fake_run_dir(cfg, step=4):
    """A run directory as a finished run leaves it: config.json and a checkpoint whose meta holds the config."""
    out = cfg.logging.out_dir
    ck = Checkpointer(f"{out}/checkpoints")
    ck.save(step, {"x": np.zeros(2, np.float32)}, {"config": as_plain(cfg)}, force=True)
    ck.close()
    with open(f"{out}/config.json", "w") as f:
        json.dump(as_plain(cfg), f)


def test_config_changes_split_meaning_from_bookkeeping(env, tmp_path):
    old = as_plain(_cfg(env, tmp_path))
    new = as_plain(_cfg(env, tmp_path, optim__lr=5e-3, train__total_steps=6, logging__every=2, train__seed=1))
    meaningful, other = config_changes(old, new)
    assert meaningful == {"optim.lr": (1e-3, 5e-3), "train.seed": (0, 1)}
    assert other == {"train.total_steps": (4, 6), "logging.every": (1, 2)}
    meaningful, _ = config_changes(old, as_plain(_cfg(env, tmp_path, algo="nsr")))
    assert {"algo.name", "algo.sample_selection"} <= set(meaningful)
    assert config_changes(old, old) == ({}, {})


def test_changed_run_is_refused_before_anything_starts(env, tmp_path):
    """The README's finding: the tiny run re-run into its directory with another lr (or as NSR) used to print
    "resumed from step 4" and rewrite config.json; now the start stops naming the fields, nothing rewritten."""
    from rlvr_jax.train import run
    out = tmp_path / "run"
    out.mkdir()
    _fake_run_dir(_cfg(env, out))
    before = (out / "config.json").read_text()
    with pytest.raises(ResumeMismatchError) as e:
        run(_cfg(env, out, optim__lr=5e-3))
    assert e.value.fields == ["optim.lr"] and "0.001 in the checkpoint, 0.005 now" in str(e.value)
    with pytest.raises(ResumeMismatchError) as e:
        run(_cfg(env, out, algo="nsr", train__total_steps=6))
    assert "algo.name" in e.value.fields and "train.total_steps" not in e.value.fields
    assert (out / "config.json").read_text() == before and not (out / HISTORY_FILE).exists()


def test_every_cli_reports_another_runs_directory_as_one_line_user_error():
    """The refusal is the user's input (another run's out_dir), so the CLIs print one line and exit 2."""
    import io

    from rlvr_jax.cli.errors import is_user_error, report

    e = ResumeMismatchError("runs/x", 2, {"optim.lr": (1e-6, 5e-3), "algo.name": ("nsr", "psr")})
    assert is_user_error(e)
    buf = io.StringIO()
    report(e, "runs/x/log.txt", verbose=False, stream=buf)
    text = buf.getvalue()
    assert text.count("\n") == 1 and text.startswith("error: runs/x holds a checkpoint of another run (step 2)")
    assert "algo.name: 'nsr' in the checkpoint, 'psr' now; optim.lr: 1e-06 in the checkpoint, 0.005 now." in text


def test_extension_and_explicit_change_are_recorded(env, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _fake_run_dir(_cfg(env, out))
    longer = _cfg(env, out, train__total_steps=8)
    e1 = check_same_run(longer, as_plain(longer), str(out / "checkpoints"), str(out), True)
    assert e1["resumes_step"] == 4 and e1["changed"] == {"train.total_steps": {"checkpoint": 4, "now": 8}}
    assert "allowed_by" not in e1
    forced = _cfg(env, out, optim__lr=5e-3, checkpoint__allow_config_change=True)
    e2 = check_same_run(forced, as_plain(forced), str(out / "checkpoints"), str(out), True)
    assert e2["allowed_by"] == "checkpoint.allow_config_change"
    assert e2["changed"]["optim.lr"] == {"checkpoint": 1e-3, "now": 5e-3}
    lines = [json.loads(x) for x in (out / HISTORY_FILE).read_text().splitlines()]
    assert [x["config"]["optim"]["lr"] for x in lines] == [1e-3, 5e-3]  # the history keeps both
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    e3 = check_same_run(longer, as_plain(longer), str(fresh / "checkpoints"), str(fresh), True)
    assert e3["resumes_step"] is None and "changed" not in e3
