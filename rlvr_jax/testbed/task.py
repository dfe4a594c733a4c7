r"""The testbed task: a small Countdown puzzle with many correct solution paths.

A problem is three numbers ``a b c`` (each in ``[1, max_value]``, repeats allowed, shown in a random order)
and a target ``t``; a solution is an arithmetic expression that uses each of the three numbers exactly once
with two of the operators ``+ - *`` (usual precedence, no parentheses) and evaluates to ``t``, e.g.::

    problem  "Make 11 with 3 5 2."          solutions  3*2+5, 2*3+5, 5+3*2, 5+2*3, ...

The expression space of a problem is the ``3! x 3^2 = 54`` (permutation, operator pair) strings; the
*distinct* strings that hit the target are its solutions (typically several, via commutativity and genuinely
different routes), so sampling diversity and pass@k at large k mean something.

Problems are identified by ``(sorted numbers, target)``; the space of solvable ones with
``1 <= t <= max_target`` is small (1,313 for the default spec), so :func:`split_problems` enumerates it and
cuts it into disjoint warm-start / RL / held-out sets (uniform over the distinct puzzles).

Verification is Reasoning Gym's own ``countdown`` scorer (through :mod:`rlvr_jax.rewards.reasoning_gym`):
the answer (last ``\boxed{}``) must use exactly the given numbers and evaluate to the target. Problems are
:class:`rlvr_jax.data.Problem` s with ``task="rg:countdown"`` and the scorer's ``entry`` in their metadata,
so the project's grader pool, trainer and evaluator grade them unchanged; :func:`write_jsonl` saves them in
the data-file schema (``task`` and ``metadata`` columns included).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import re
from typing import Iterable, Sequence

OPS = ("+", "-", "*")
TASK = "rg:countdown"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Problem distribution: three numbers in ``[1, max_value]``, targets in ``[1, max_target]``."""

    num_numbers: int = 3
    max_value: int = 9
    max_target: int = 99
    ops: str = "+-*"   # the operators allowed (a subset of + - *)

    def __post_init__(self):
        if not self.ops or any(o not in OPS for o in self.ops) or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"TaskSpec.ops must be distinct operators from {''.join(OPS)}, got {self.ops!r}")
        if self.num_numbers < 2:
            raise ValueError(f"TaskSpec.num_numbers must be >= 2, got {self.num_numbers}")
        if self.max_value < 1:
            raise ValueError(f"TaskSpec.max_value must be >= 1, got {self.max_value}")
        if self.max_target < 1:
            raise ValueError(f"TaskSpec.max_target must be >= 1, got {self.max_target}")


@dataclasses.dataclass(frozen=True)
class Puzzle:
    numbers: tuple[int, ...]  # in the order shown to the model
    target: int
    ops: str = "+-*"          # the operators the task allows (TaskSpec.ops)

    @property
    def key(self) -> tuple[tuple[int, ...], int]:
        """Identity of the puzzle regardless of the order the numbers are shown in."""
        return tuple(sorted(self.numbers)), self.target

    def text(self) -> str:
        return f"Make {self.target} with {' '.join(map(str, self.numbers))}."


def all_expressions(numbers: Sequence[int], ops: str = "+-*") -> list[str]:
    """The distinct expression strings ``n1 o1 n2 o2 n3`` over all orders of ``numbers`` and operators ``ops``."""
    out = []
    for perm in dict.fromkeys(itertools.permutations(numbers)):
        for pair in itertools.product(ops, repeat=len(numbers) - 1):
            s = str(perm[0]) + "".join(o + str(x) for o, x in zip(pair, perm[1:]))
            out.append(s)
    return list(dict.fromkeys(out))


def evaluate_expression(expr: str) -> int:
    """Integer value of an expression of non-negative integers and ``+ - *`` (usual precedence)."""
    if not expr or any(ch not in "0123456789+-*" for ch in expr):
        raise ValueError(f"not an expression of digits and + - *: {expr!r}")
    total, sign, term, num = 0, 1, 1, ""
    pending_mul = False
    for ch in expr + "+":
        if ch.isdigit():
            num += ch
            continue
        if not num:
            raise ValueError(f"malformed expression {expr!r}")
        term = term * int(num) if pending_mul else int(num)
        num = ""
        if ch == "*":
            pending_mul = True
            continue
        total += sign * term
        sign, pending_mul = (1 if ch == "+" else -1), False
    return total


# Solution strategies: the operator pattern of an expression up to commutation ("3*8+6" and "6+3*8" are one
# strategy, "a*b-c" and "c-a*b" are two).
STRATEGIES = {"++": "sum", "**": "product", "*+": "product_plus", "+*": "product_plus", "*-": "product_minus",
              "-*": "minus_product", "+-": "add_subtract", "-+": "add_subtract", "--": "subtract_twice"}


def strategy(expr: str) -> str:
    """The strategy of a three-number expression (:data:`STRATEGIES`): ``"6+3*8"`` -> ``"product_plus"``."""
    ops = "".join(split_expression(expr)[1])
    if ops not in STRATEGIES:
        raise ValueError(f"strategy: {expr!r} is not a three-number expression over + - *")
    return STRATEGIES[ops]


def split_expression(expr: str) -> tuple[list[int], list[str]]:
    """``"3*8+6"`` -> ``([3, 8, 6], ["*", "+"])`` (non-negative integer operands, binary ``+ - *``)."""
    parts = re.split(r"([+*-])", expr)
    if len(parts) < 3 or len(parts) % 2 == 0 or not all(p.isdigit() for p in parts[::2]):
        raise ValueError(f"malformed expression {expr!r}")
    return [int(p) for p in parts[::2]], parts[1::2]


def worked_steps(expr: str) -> str:
    """The expression's evaluation written out step by step in precedence order, one ``x o y=z`` per
    binary operation, comma-separated: ``"3*8+6"`` -> ``"3*8=24,24+6=30"``, ``"6+3*8"`` -> ``"3*8=24,6+24=30"``,
    ``"3-8+9"`` -> ``"3-8=-5,-5+9=4"``. The last step's value is the expression's value."""
    nums, ops = split_expression(expr)
    vals: list[int] = list(nums)
    text: list[str] = list(map(str, nums))
    ops = list(ops)
    steps = []
    for group in ("*", "+-"):
        i = 0
        while i < len(ops):
            if ops[i] not in group:
                i += 1
                continue
            a, b, o = vals[i], vals[i + 1], ops[i]
            v = a * b if o == "*" else (a + b if o == "+" else a - b)
            steps.append(f"{text[i]}{o}{text[i + 1]}={v}")
            vals[i:i + 2], text[i:i + 2] = [v], [str(v)]
            del ops[i]
    return ",".join(steps)


def response_text(expr: str, show_steps: bool = True) -> str:
    r"""The answer the model is taught to write: the worked steps, then the expression boxed:
    ``"3*8=24,24+6=30 \boxed{3*8+6}"`` (``show_steps=False``: only ``"\boxed{3*8+6}"``)."""
    boxed = f"\\boxed{{{expr}}}"
    return f"{worked_steps(expr)} {boxed}" if show_steps else boxed


def solutions(puzzle: Puzzle) -> list[str]:
    """All distinct expression strings over the puzzle's numbers that evaluate to its target (sorted)."""
    return sorted(e for e in all_expressions(puzzle.numbers, puzzle.ops) if evaluate_expression(e) == puzzle.target)


def wrong_expressions(puzzle: Puzzle) -> list[str]:
    """Expressions over the puzzle's numbers that miss the target (the flawed attempts)."""
    return sorted(e for e in all_expressions(puzzle.numbers, puzzle.ops) if evaluate_expression(e) != puzzle.target)


def needs_only(puzzle: Puzzle, strategies: Iterable[str]) -> bool:
    """True when every solution of ``puzzle`` uses one of ``strategies`` (e.g. ``("product_minus",)``: the
    puzzles only ``a*b-c`` solves)."""
    chosen = set(strategies)
    return bool(chosen) and all(strategy(e) in chosen for e in solutions(puzzle))


def puzzle_space(spec: TaskSpec = TaskSpec()) -> list[tuple[tuple[int, ...], int]]:
    """Every distinct puzzle key ``(sorted numbers, target)`` of the distribution (1,313 for the default
    spec), in a fixed order."""
    keys = set()
    for nums in itertools.combinations_with_replacement(range(1, spec.max_value + 1), spec.num_numbers):
        for e in all_expressions(nums, spec.ops):
            v = evaluate_expression(e)
            if 1 <= v <= spec.max_target:
                keys.add((nums, v))
    return sorted(keys)


def split_problems(sizes: dict[str, int], seed: int = 0, spec: TaskSpec = TaskSpec()) -> dict[str, list[Puzzle]]:
    """Disjoint puzzle sets (no two puzzles share ``Puzzle.key``), e.g. ``{"heldout": 128, "rl": 384,
    "warmstart": -1}`` (``-1``: all the remaining puzzles). The puzzle space is shuffled with ``seed`` and cut
    in the order given; each puzzle shows its numbers in a random order. Deterministic in ``seed``."""
    rng = random.Random(seed)
    keys = puzzle_space(spec)
    rng.shuffle(keys)
    fixed = sum(v for v in sizes.values() if v >= 0)
    if any(v < -1 for v in sizes.values()) or sum(v == -1 for v in sizes.values()) > 1:
        raise ValueError(f"split_problems: sizes must be >= 0, with at most one -1 (the rest), got {sizes}")
    if fixed > len(keys):
        raise ValueError(f"split_problems: {fixed} puzzles requested but {spec} has only {len(keys)}")
    out: dict[str, list[Puzzle]] = {}
    pos = 0
    for name, size in sizes.items():
        size = len(keys) - fixed if size == -1 else size
        chunk = keys[pos:pos + size]
        pos += size
        out[name] = [Puzzle(tuple(rng.sample(nums, len(nums))), t, spec.ops) for nums, t in chunk]
    return out


def to_problem(puzzle: Puzzle, pid: str, source: str = "testbed"):
    """The puzzle as a :class:`rlvr_jax.data.Problem` graded by Reasoning Gym's countdown scorer."""
    from rlvr_jax.data import Problem

    sols = solutions(puzzle)
    if not sols:
        raise ValueError(f"puzzle {puzzle} has no solution")
    entry = {"question": puzzle.text(), "answer": sols[0],
             "metadata": {"numbers": list(puzzle.numbers), "target": puzzle.target}}
    return Problem(id=pid, problem=puzzle.text(), answer=sols[0], source=source, task=TASK,
                   metadata={"entry": entry})


def from_problem(problem) -> Puzzle:
    """The :class:`Puzzle` a :func:`to_problem` problem was made from (numbers in the order shown)."""
    meta = problem.metadata["entry"]["metadata"]
    return Puzzle(tuple(int(x) for x in meta["numbers"]), int(meta["target"]))


def to_problems(puzzles: Iterable[Puzzle], prefix: str) -> list:
    return [to_problem(p, f"{prefix}-{i}", source=prefix) for i, p in enumerate(puzzles)]


def write_jsonl(problems: Sequence, path: str | os.PathLike) -> str:
    """Writes problems in the data-file schema (``rlvr_jax.data.load_file`` reads them back, task and
    metadata included)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer, "source": p.source,
                                "task": p.task, "metadata": p.metadata}) + "\n")
    return str(path)


def verify(response: str, puzzle: Puzzle) -> bool:
    """True iff Reasoning Gym's countdown scorer gives the response's answer full credit."""
    from rlvr_jax.rewards.reasoning_gym import grade_rg_response

    status, _, _ = grade_rg_response(response, "countdown", to_problem(puzzle, "verify").metadata["entry"])
    return status == "correct"
