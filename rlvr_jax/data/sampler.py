"""Deterministic shuffled prompt batching with a resumable position.

Epoch ``e`` visits the items in the order ``permutation_e = default_rng([seed, e]).permutation(num_items)``
(identity when ``shuffle=False``). Batches are consecutive slices of that order and never span two epochs:
the last ``num_items % batch_size`` items of an epoch are dropped when ``drop_last`` (the default, so every
RL step sees exactly ``batch_size`` prompts), else yielded as a short batch.

The position is ``(epoch, index)``: the next batch starts at ``permutation_epoch[index]``. ``state_dict()``
captures it (with ``seed``/``num_items``/``batch_size`` for validation) and ``load_state_dict()`` restores it,
so a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


class PromptSampler:
    """Yields lists of item indices; infinite unless ``num_epochs`` is given."""

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, num_epochs: int | None = None):
        if num_items < 1:
            raise ValueError(f"PromptSampler: num_items must be >= 1, got {num_items}")
        if batch_size < 1:
            raise ValueError(f"PromptSampler: batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > num_items:
            raise ValueError(f"PromptSampler: batch_size={batch_size} > num_items={num_items} with "
                             f"drop_last=True would never yield a batch")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.num_epochs = num_epochs
        self.epoch = 0
        self.index = 0
        self._order_epoch = -1
        self._order: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch: int) -> np.ndarray:
        """The visiting order of ``epoch``."""
        if self._order_epoch != epoch:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            else:
                self._order = np.arange(self.num_items)
            self._order_epoch = epoch
        return self._order

    def _epoch_exhausted(self) -> bool:
        left = self.num_items - self.index
        return left <= 0 or (self.drop_last and left < self.batch_size)

    def next_batch(self) -> list[int]:
        """The next batch of indices; raises StopIteration after ``num_epochs`` epochs."""
        if self._epoch_exhausted():
            self.epoch += 1
            self.index = 0
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        order = self.order(self.epoch)
        batch = order[self.index:self.index + self.batch_size]
        self.index += len(batch)
        return [int(i) for i in batch]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            try:
                yield self.next_batch()
            except StopIteration:
                return

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed,
                "num_items": self.num_items, "batch_size": self.batch_size, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Restores the position; raises if the state was saved for different data or settings."""
        for key in ("seed", "num_items", "batch_size", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"PromptSampler.load_state_dict: saved {key}={state[key]!r} but this sampler "
                                 f"has {key}={getattr(self, key)!r}")
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index <= self.num_items:
            raise ValueError(f"PromptSampler.load_state_dict: invalid position epoch={epoch}, index={index} "
                             f"for num_items={self.num_items}")
        self.epoch, self.index = epoch, index
