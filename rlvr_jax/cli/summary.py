"""The closing summary every CLI prints: where its outputs are and the headline numbers.

::

    == train done: 4 steps of w_reinforce in runs/tiny_w_reinforce
      metrics      runs/tiny_w_reinforce/metrics.jsonl
      tensorboard  runs/tiny_w_reinforce/tensorboard  (open: tensorboard --logdir runs/tiny_w_reinforce/tensorboard)
      ...
      step 4: reward -1, correct 0, entropy 6.19

Only paths that exist are listed; they are shown relative to the working directory when inside it.
"""
from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass
class Output:
    label: str          # what it is: metrics, tensorboard, checkpoints, model, report, log, ...
    path: str
    note: str = ""      # e.g. how to open it


@dataclasses.dataclass
class Summary:
    title: str                                       # "train done: 4 steps of w_reinforce"
    outputs: list[Output] = dataclasses.field(default_factory=list)
    numbers: list[str] = dataclasses.field(default_factory=list)  # headline lines, e.g. "math500: pass@1 0.41"

    def add(self, label: str, path: str | None, note: str = "") -> "Summary":
        if path:
            self.outputs.append(Output(label, path, note))
        return self

    def existing(self) -> list[Output]:
        return [o for o in self.outputs if os.path.exists(o.path)]


def shown(path: str) -> str:
    """``path`` relative to the working directory when it is inside it, else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    return full if rel == ".." or rel.startswith(".." + os.sep) else rel


def format_summary(s: Summary) -> str:
    outs = s.existing()
    width = max([len(o.label) for o in outs] + [0])
    lines = [f"== {s.title}"]
    for o in outs:
        lines.append(f"  {o.label.ljust(width)}  {shown(o.path)}" + (f"  ({o.note})" if o.note else ""))
    lines += [f"  {n}" for n in s.numbers]
    return "\n".join(lines)
