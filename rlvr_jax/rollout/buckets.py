"""Shape buckets of the JAX sampler: sizes round up to a bucket so that a new batch recompiles only when it
falls into a new one."""
from __future__ import annotations

from typing import Sequence


def power_of_two_buckets(minimum: int, maximum: int) -> tuple[int, ...]:
    """``(minimum, 2*minimum, 4*minimum, ..., maximum)``; ``maximum`` is always the last bucket."""
    if minimum < 1 or maximum < minimum:
        raise ValueError(f"need 1 <= minimum <= maximum, got minimum={minimum}, maximum={maximum}")
    buckets, b = [], minimum
    while b < maximum:
        buckets.append(b)
        b *= 2
    buckets.append(maximum)
    return tuple(buckets)


def pick_bucket(size: int, buckets: Sequence[int], what: str) -> int:
    """The smallest bucket ``>= size``; a clear error when ``size`` exceeds the largest bucket."""
    for b in buckets:
        if b >= size:
            return b
    raise ValueError(f"{what} {size} exceeds the largest bucket {max(buckets)} (buckets: {tuple(buckets)})")


def check_buckets(buckets: Sequence[int], what: str) -> tuple[int, ...]:
    """``buckets`` sorted, as ints; ``ValueError`` naming ``what`` when empty or not all positive."""
    buckets = tuple(sorted(int(b) for b in buckets))
    if not buckets or buckets[0] < 1:
        raise ValueError(f"{what} must be a non-empty list of positive sizes, got {buckets}")
    return buckets
