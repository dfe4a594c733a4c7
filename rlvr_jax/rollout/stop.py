"""A process-wide request to stop generating, honoured between compiled calls of the JAX sampler.

A compiled generation call cannot be interrupted, but the sampler returns to the host between its calls (the
continuous scheduler after at most ``decode_steps`` decode steps, the static one between chunks of rows). The
trainer's signal guard (rlvr_jax.trainer.checkpointing.PreemptionGuard) calls :func:`request_stop` on the first
SIGTERM / SIGINT; the sampler then raises :class:`GenerationStopped` at its next return to the host, and the
trainer stops with a checkpoint of the last completed step instead of finishing a generation that may take
minutes. Nothing here is set unless a guard asks for it.
"""
from __future__ import annotations

import threading

_STOP = threading.Event()


class GenerationStopped(RuntimeError):
    """A generation cut short by :func:`request_stop` (its results are discarded)."""


def request_stop() -> None:
    _STOP.set()


def clear_stop() -> None:
    _STOP.clear()


def stop_requested() -> bool:
    return _STOP.is_set()


def check_stop(where: str) -> None:
    """Raises :class:`GenerationStopped` when a stop was requested (call between compiled calls)."""
    if _STOP.is_set():
        raise GenerationStopped(f"generation stopped on request ({where})")
