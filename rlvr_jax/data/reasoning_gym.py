r"""Reasoning Gym tasks as datasets: ``load_reasoning_gym(task, size, seed)`` (``rg:<task>`` in ``load_dataset``).

It builds ``reasoning_gym.create_dataset(task, size=size, seed=seed)`` (procedural, no download) as a
:class:`Dataset` of ``Problem(task="rg:<task>")``; each problem keeps its generator entry in
``metadata["entry"]`` because many tasks accept several answers (e.g. countdown accepts any expression reaching
the target) and the task's ``score_answer(answer, entry)`` needs it when grading
(:mod:`rlvr_jax.rewards.reasoning_gym`).
"""
from __future__ import annotations

from rlvr_jax.data.datasets import Dataset, Problem


def load_reasoning_gym(task: str, size: int = 1000, seed: int = 0, **kwargs):
    """The Reasoning Gym dataset ``task`` as a :class:`rlvr_jax.data.Dataset` named ``rg:<task>``."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        raise ValueError(f"unknown Reasoning Gym task {task!r}; known tasks include "
                         f"{', '.join(sorted(DATASETS)[:12])}, ... ({len(DATASETS)} in all)")
    if size < 1:
        raise ValueError(f"Reasoning Gym dataset size must be >= 1, got {size}")
    ds = reasoning_gym.create_dataset(task, size=size, seed=seed, **kwargs)
    name = f"rg:{task}"
    problems = []
    for i, entry in enumerate(ds):
        answer = entry.get("answer")
        problems.append(Problem(id=f"{name}-{seed}-{i}", problem=str(entry["question"]),
                                answer="" if answer is None else str(answer), source=name, task=name,
                                metadata={"entry": entry}))
    return Dataset(name=name, problems=problems, path=f"reasoning_gym:{task}?size={size}&seed={seed}")
