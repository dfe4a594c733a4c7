"""The shell commands the docs show, for tests/test_doc_commands.py.

:func:`doc_commands` reads README.md, BUILD.md, launch/README.md and docs/*.md and returns every command shown in
a shell code block (fenced ```` ```bash ````/```` ```sh ```` or without a language: one command per line,
backslash continuations joined, comments dropped) and every inline code span that starts with ``python``,
``python3`` or ``make`` (after ``NAME=value`` environment assignments). Python code blocks are API examples, not
commands, and are left out. Commands are normalised (whitespace collapsed, ``python3`` spelled ``python``) so the
registry in the test does not depend on line wrapping.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHELL_FENCES = ("", "bash", "sh", "shell", "console")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_INLINE = re.compile(r"`([^`\n]+)`")
_COMMAND_START = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S+\s+)*(?:python3?|make)(?:\s|$)")


@dataclasses.dataclass(frozen=True)
class DocCommand:
    command: str  # normalised
    file: str     # relative to the repository root
    line: int


def doc_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", ROOT / "BUILD.md", ROOT / "launch" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def normalise(command: str) -> str:
    words = command.split()
    return " ".join("python" if w == "python3" else w for w in words)


def _strip_comment(line: str) -> str:
    """``cmd  # note`` -> ``cmd`` (a ``#`` that starts a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _block_commands(lines: list[str], first_line: int):
    pending, start = "", first_line
    for offset, raw in enumerate(lines):
        line = _strip_comment(raw)
        if not pending:
            start = first_line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text:
            yield start, text


def commands_in(path: pathlib.Path) -> list[DocCommand]:
    return commands_in_text(path.read_text(), str(path.relative_to(ROOT)))


def commands_in_text(text: str, rel: str) -> list[DocCommand]:
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            end = next((j for j in range(i + 1, len(lines)) if _FENCE.match(lines[j])), len(lines))
            if m.group(2).lower() in SHELL_FENCES:
                out += [DocCommand(normalise(t), rel, n) for n, t in _block_commands(lines[i + 1:end], i + 2)]
            i = end + 1
            continue
        for span in _INLINE.findall(lines[i]):
            if _COMMAND_START.match(span.strip()):
                out.append(DocCommand(normalise(span), rel, i + 1))
        i += 1
    return out


def doc_commands() -> list[DocCommand]:
    return [c for path in doc_files() if path.exists() for c in commands_in(path)]
