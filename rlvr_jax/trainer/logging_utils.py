"""Metrics to JSONL and TensorBoard (process 0 only) and a terminal progress bar.

Metric names follow verl's so runs can be compared with theirs: ``actor/pg_loss``, ``actor/entropy``,
``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/grad_norm``, ``actor/lr``, ``critic/score/mean``,
``response_length/mean``, ``response_length/clip_ratio``, ``timing_s/{gen,reward,old_log_prob,update_actor,
sync_weights,step}``, ``perf/throughput``, ``perf/mfu/actor``; plus the NSR paper's Figure-4 quantities
(``train/correct_ratio``, ``train/fully_solved_ratio``, ``train/kept_samples``) and held-out ``eval/*``.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np


def _scalar(v: Any) -> float | int | None:
    try:
        a = np.asarray(v)
    except Exception:  # noqa: BLE001 - anything not array-like is not a metric
        return None
    if a.ndim != 0 or a.dtype.kind not in "biuf":
        return None
    return int(a) if a.dtype.kind in "biu" else float(a)


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` lines to ``<out_dir>/metrics.jsonl`` and TensorBoard scalars.

    :meth:`resume_at` (called by the trainer with the step it continues from, 0 for a fresh start) makes a
    resumed run never duplicate a point: lines of ``metrics.jsonl`` past that step (written after the checkpoint
    the run restarts from, e.g. before a SIGKILL) are dropped, as is a torn last line, and TensorBoard gets a
    purge marker at ``step + 1``, so its readers discard the older points from there on. Files are opened at the
    first write (or at :meth:`resume_at`).
    """

    def __init__(self, out_dir: str, jsonl: bool = True, tensorboard: bool = True, is_main: bool = True):
        self.is_main = is_main
        self.out_dir = out_dir
        self.jsonl_path = os.path.join(out_dir, "metrics.jsonl") if jsonl else None
        self.tensorboard = bool(tensorboard)
        self.dropped_lines = 0
        self._jsonl = None
        self._tb = None
        self._opened = False
        self._resume_step: int | None = None

    def resume_at(self, step: int) -> int:
        """Drops what was logged after ``step``; returns the number of ``metrics.jsonl`` lines dropped."""
        if self._opened:
            raise RuntimeError("MetricsWriter.resume_at must come before the first write")
        self._resume_step = int(step)
        if self.is_main and self.jsonl_path and os.path.exists(self.jsonl_path):
            self.dropped_lines = truncate_jsonl_after(self.jsonl_path, int(step))
        self._open()
        return self.dropped_lines

    def _open(self) -> None:
        self._opened = True
        if not self.is_main:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        if self.jsonl_path:
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        if self.tensorboard:
            from tensorboardX import SummaryWriter
            purge = None if self._resume_step is None else self._resume_step + 1
            self._tb = SummaryWriter(os.path.join(self.out_dir, "tensorboard"), purge_step=purge)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Writes the scalar entries of ``metrics`` (non-scalars are dropped); returns what was written."""
        if not self._opened:
            self._open()
        clean = {}
        for k, v in metrics.items():
            s = _scalar(v)
            if s is not None:
                clean[k] = s
        if self._jsonl is not None:
            row = {"step": int(step), **{k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v))
                                         for k, v in clean.items()}}
            self._jsonl.write(json.dumps(row, sort_keys=True) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, int(step))
            self._tb.flush()
        return clean

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def truncate_jsonl_after(path: str, step: int) -> int:
    """Rewrites ``path`` (atomically) keeping the parseable lines whose ``step`` is <= ``step``; returns how many
    lines were dropped (later steps and torn lines)."""
    kept, dropped = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row_step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                dropped += bool(line.strip())
                continue
            if row_step <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


def format_metric_line(step: int, metrics: Mapping[str, Any],
                       keys=("critic/score/mean", "train/correct_ratio", "actor/pg_loss", "actor/entropy",
                             "actor/grad_norm", "response_length/mean", "timing_s/step")) -> str:
    """One compact human-readable line of the most useful metrics."""
    parts = [f"step {step}"]
    for k in keys:
        if k in metrics:
            parts.append(f"{k}={float(metrics[k]):.4g}")
    return " ".join(parts)


class Progress:
    """A tqdm bar over RL steps showing reward and ETA; silent on non-main processes or when disabled. Until the
    first step of this process ends, its label says that step compiles (the sampler's and learner's XLA
    programs: the slow one)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self._bar = None
        self._t0 = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=f"rl (step {initial + 1} compiles)", unit="step",
                             dynamic_ncols=True)

    def update(self, metrics: Mapping[str, Any]) -> None:
        if self._bar is None:
            return
        post = {}
        for short, key in (("reward", "critic/score/mean"), ("correct", "train/correct_ratio"),
                           ("len", "response_length/mean")):
            if key in metrics:
                post[short] = f"{float(metrics[key]):.3f}"
        self._bar.set_description("rl", refresh=False)
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
