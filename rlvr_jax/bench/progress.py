"""What ``python -m rlvr_jax.bench`` says while it runs: CPU-sized shapes (``--size cpu``) and one line before and
after each phase, so that a run of minutes is never silent.

The shape flags' defaults are GPU sizes (a 1.7B model, 4x2048 learner batches, 256x(256+1024) sampler rows);
on a CPU those take minutes even for the tiny preset. ``--size cpu`` gives every shape flag that the command line
did not set its :data:`CPU_SIZES` value (the tiny-qwen3 preset, 8x128 learner batches, 8x(32+64) sampler rows).
"""
from __future__ import annotations

import json
import time

# --size cpu: the shape flags' values (a flag given on the command line wins).
CPU_SIZES = dict(preset="tiny-qwen3", batch=8, seq_len=128, prompt_len=32, steps=3, warmup=1, sampler_batch=8,
                 sampler_prompt_len=32, new_tokens=64, sampler_repeats=2, decode_steps=64)


def apply_size(flag_values, size: str) -> dict:
    """Sets the :data:`CPU_SIZES` flags the command line did not give when ``size == "cpu"``; returns what it set."""
    if size != "cpu":
        return {}
    changed = {k: v for k, v in CPU_SIZES.items() if not flag_values[k].present}
    for k, v in changed.items():
        setattr(flag_values, k, v)
    return changed


def gpu_sized_on_cpu_hint(flag_values, platform: str, size: str) -> str | None:
    """A one-line warning when GPU-sized shape flags (left at their defaults) are about to run on a CPU."""
    if platform != "cpu" or size == "cpu":
        return None
    defaulted = [k for k in CPU_SIZES if k != "preset" and not flag_values[k].present]
    if not defaulted:
        return None
    f = flag_values
    return (f"[bench] a CPU with GPU-sized shapes (learner {f.batch}x{f.seq_len}, sampler "
            f"{f.sampler_batch}x({f.sampler_prompt_len}+{f.new_tokens})): this takes minutes; "
            f"--size cpu gives the shape flags not set CPU sizes")


def record(name: str, result) -> None:
    """The phase's raw result as one JSON line in the log file (``<out>.log.txt``), not on the terminal."""
    from rlvr_jax.cli import current_logs
    logs = current_logs()
    if logs is not None:
        logs.file.write_text(json.dumps({name: result}, default=str) + "\n")


class Phase:
    """``[bench] <name>: <what> ...`` when a phase starts, ``[bench] <name>: <result> (<s> s)`` when it ends."""

    def __init__(self, name: str, what: str):
        self.name = name
        print(f"[bench] {name}: {what} ...", flush=True)
        self.t0 = time.perf_counter()

    def done(self, result, summary: str = "done") -> None:
        record(self.name, result)
        print(f"[bench] {self.name}: {summary} ({time.perf_counter() - self.t0:.1f} s)", flush=True)
