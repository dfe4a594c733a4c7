"""Resume only the same run: the config a checkpoint was trained with against the config of a new start.

A start that finds a checkpoint in its checkpoint directory continues that run. The checkpoint's meta holds the
config it was trained with (``run_setup.save``); :func:`config_changes` lists the fields whose values differ.
Fields that do not change what the run means may differ (:data:`MAY_CHANGE`: ``train.total_steps`` to extend
a run, logging, checkpoint cadence, locations and launch details, implementation choices such as the attention
kernel, the rollout engine or the mesh); any other difference (algorithm, objective settings, optimizer, model,
data, seeds, batch layout, sampling) stops the start with a :class:`ResumeMismatchError` listing the fields,
unless ``checkpoint.allow_config_change=True`` asks for it explicitly.

Every start appends one line to ``<out_dir>/config_history.jsonl`` (the time, the step it resumes from, the
config, and the fields changed against the checkpoint with whether that was allowed), so the run directory
keeps what each segment of the run was trained with; ``config.json`` holds the config of the latest start.
Fields present on one side only (a config written by another version of the code) are recorded, not refused.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

HISTORY_FILE = "config_history.jsonl"
ALLOW_FIELD = "checkpoint.allow_config_change"

# Dotted fields (or "section." prefixes) that may differ between a checkpoint and the start that resumes it.
MAY_CHANGE = (
    "train.total_steps", "train.export_final", "train.max_nonfinite_in_a_row",
    "logging.", "distributed.", "mesh.",
    "checkpoint.every", "checkpoint.keep", "checkpoint.resume", "checkpoint.init_from", "checkpoint.dir",
    ALLOW_FIELD,
    "data.data_dir", "data.grade_workers",
    "model.attention_impl", "model.decode_attention_impl", "model.logprob_chunk_size", "model.remat",
    "model.nonfinite_weights",
    "rollout.engine", "rollout.jax.", "rollout.sync_dir", "rollout.vllm.url", "rollout.vllm.python",
    "rollout.vllm.startup_timeout_s", "rollout.vllm.gpu_memory_utilization", "rollout.vllm.tensor_parallel_size",
    "rollout.vllm.enforce_eager", "rollout.vllm.num_servers", "rollout.vllm.devices", "rollout.vllm.port",
    "rollout.vllm.transport", "rollout.vllm.shm_dir", "rollout.vllm.max_concurrency",  # where, not what: each
    # prompt's samples are seeded by (train.seed, step, prompt), whichever replica serves them
)


class ResumeMismatchError(ValueError):
    """The checkpoint to resume was trained with another config; ``fields`` are the differing dotted paths."""

    def __init__(self, directory: str, step: int, changes: dict[str, tuple[Any, Any]]):
        self.fields = sorted(changes)
        diffs = "; ".join(f"{f}: {changes[f][0]!r} in the checkpoint, {changes[f][1]!r} now" for f in self.fields)
        super().__init__(
            f"{directory} holds a checkpoint of another run (step {step}); these fields differ from the config "
            f"it was trained with: {diffs}. Use a new logging.out_dir for a new run, or pass "
            f"--config.{ALLOW_FIELD}=true to continue this one with the new values (recorded in "
            f"{HISTORY_FILE}).")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (JSON round trip first: tuples and lists compare equal)."""
    tree = json.loads(json.dumps(tree)) if not prefix else tree
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def may_change(field: str) -> bool:
    return any(field == m or (m.endswith(".") and field.startswith(m)) for m in MAY_CHANGE)


def config_changes(old: dict, new: dict) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """``(meaningful, other)``: the fields (present in both plain configs) whose values differ, split into those
    that change the run's meaning and those in :data:`MAY_CHANGE`; each maps to ``(old, new)``. Fields on one
    side only are in ``other`` with ``None`` on the missing side."""
    a, b = flatten(old), flatten(new)
    meaningful, other = {}, {}
    for f in sorted(set(a) | set(b)):
        if f in a and f in b:
            if a[f] != b[f]:
                (other if may_change(f) else meaningful)[f] = (a[f], b[f])
        else:
            other[f] = (a.get(f), b.get(f))
    return meaningful, other


def checkpointed_config(directory: str) -> tuple[int, dict | None] | None:
    """``(step, config)`` of the newest checkpoint in ``directory`` whose metadata reads (config None when it
    has none: written before configs were saved); None when there is no checkpoint."""
    if not os.path.isdir(directory):
        return None
    from rlvr_jax.trainer.checkpointing import Checkpointer, CorruptCheckpointError
    ckpt = Checkpointer(directory)
    try:
        for step in sorted(ckpt.all_steps(), reverse=True):
            try:
                meta = ckpt._read_meta(step)
            except CorruptCheckpointError:
                continue  # the resume falls back past it too (restore_newest_good), and says so
            return step, meta.get("config")
        return None
    finally:
        ckpt.close()


def check_same_run(cfg, plain: dict, ckpt_dir: str, out_dir: str, is_main: bool) -> dict:
    """Compares ``plain`` (the new config) with the config of the checkpoint ``cfg`` would resume from; raises
    :class:`ResumeMismatchError` for meaningful differences unless ``checkpoint.allow_config_change``; appends
    the history line (process 0). Returns that line."""
    found = checkpointed_config(ckpt_dir) if cfg.checkpoint.resume else None
    entry: dict[str, Any] = {"started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "resumes_step": None}
    if found is not None:
        step, old = found
        entry["resumes_step"] = step
        if old is None:
            logger.warning("checkpoint step %d in %s records no config: not compared with this one", step, ckpt_dir)
        else:
            meaningful, other = config_changes(old, plain)
            if meaningful and not bool(cfg.checkpoint.get("allow_config_change", False)):
                raise ResumeMismatchError(out_dir, step, meaningful)
            entry["changed"] = {f: {"checkpoint": o, "now": n} for f, (o, n) in {**meaningful, **other}.items()}
            if meaningful:
                entry["allowed_by"] = ALLOW_FIELD
                if is_main:
                    print(f"[train] WARNING: continuing step {step} of {out_dir} with changed fields "
                          f"{sorted(meaningful)} ({ALLOW_FIELD}=True; recorded in {HISTORY_FILE})", flush=True)
    entry["config"] = plain
    if is_main:
        with open(os.path.join(out_dir, HISTORY_FILE), "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry
