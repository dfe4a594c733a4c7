"""``--help`` of a config-driven CLI: its flags, then every config field with its default and comment.

The fields come from the config file named by ``--config=FILE[:ARG]`` on the command line (else the CLI's
default), so ``--help`` shows the values a run with that config would start from. The one-line comments are
read from the source of the module that defines the fields (``name=value,  # comment`` lines, within the
``c.<section> = ...`` block they belong to).
"""
from __future__ import annotations

import inspect
import re
import textwrap
from typing import Iterator

import ml_collections

_SECTION = re.compile(r"^\s*c\.(\w+)\s*=")
_FIELD = re.compile(r"^\s*(\w+)\s*=\s*[^=].*?#\s*(.+?)\s*$")


def flatten(cfg: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, object]]:
    """``(dotted name, value)`` of every leaf field, sections in order of their names."""
    for key in sorted(cfg.keys()):
        value = cfg[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def source_comments(source: str) -> dict[str, str]:
    """``{"section.name" or "name": comment}`` from ``name=value,  # comment`` lines of ``source``."""
    comments: dict[str, str] = {}
    section = ""
    for line in source.splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1)
            continue
        m = _FIELD.match(line)
        if m:
            name = f"{section}.{m.group(1)}" if section else m.group(1)
            comments.setdefault(name, m.group(2))
    return comments


def comments_of(*funcs) -> dict[str, str]:
    """:func:`source_comments` of the modules that define ``funcs`` (missing sources are skipped)."""
    out: dict[str, str] = {}
    for f in funcs:
        try:
            out.update(source_comments(inspect.getsource(inspect.getmodule(f))))
        except (OSError, TypeError):
            pass
    return out


def field_lines(cfg: ml_collections.ConfigDict, comments: dict[str, str] | None = None, width: int = 116) -> list[str]:
    """One line per field: ``  --config.a.b=<default>  # comment`` (long comments shortened)."""
    comments = comments or {}
    lines = []
    for name, value in flatten(cfg):
        text = f"  --config.{name}={value!r}" if isinstance(value, str) else f"  --config.{name}={value}"
        note = comments.get(name)
        if note:
            room = max(20, width - len(text) - 4)
            text += "  # " + textwrap.shorten(note, room, placeholder="...")
        lines.append(text)
    return lines


def help_text(usage: str, flag_lines: list[str], cfg: ml_collections.ConfigDict | None, source: str,
              comments: dict[str, str] | None = None) -> str:
    """The whole ``--help`` text: usage, flags, config fields (defaults of ``source``)."""
    parts = [usage.strip(), ""]
    if flag_lines:
        parts += ["flags:", *flag_lines, ""]
    if cfg is not None:
        parts += [f"config fields (--config.FIELD=value; defaults of {source}):", *field_lines(cfg, comments), ""]
    parts.append("--helpfull lists every flag, absl's included.")
    return "\n".join(parts)
