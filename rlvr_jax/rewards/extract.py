r"""Final-answer extraction from a model response.

Rule (in order):

1. The content of the **last complete** ``\boxed{...}`` or ``\fbox{...}`` (nested braces matched; LaTeX-escaped
   braces ``\{ \}`` do not count), also the brace-less form ``\boxed 5``. A box left open by a truncated
   response is ignored, so the previous complete box counts. An empty box counts as no box.
2. Only when there is no box (``fallbacks=True``): the text after the last "final answer is", "the answer is"
   or "answer:" on its line, with surrounding ``$``/``\(\)`` and a trailing period removed.
3. Otherwise ``None`` (graded ``no_answer``).

With several boxes only the last one is the answer ("\boxed{2} and \boxed{3}" answers 3).
:func:`normalize_answer` gives the canonical string used for the fast exact-match path of the grader and
for grouping answers in the answer-level entropy.
"""
from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_FALLBACK_RE = re.compile(r"(?:final answer is|the answer is|answer\s*:)\s*(.*)", re.IGNORECASE)


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == '{'`` and the index after it; None if unclosed."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def _box_content(text: str, end_of_command: int) -> str | None:
    i = end_of_command
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        got = _braced(text, i)
        return None if got is None else got[0]
    if i > end_of_command:  # "\boxed 5": the next token up to whitespace or '$'
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete, non-empty ``\\boxed``/``\\fbox`` in ``text`` (None if there is none)."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        content = _box_content(text, m.end())
        if content is not None and content.strip():
            return content.strip()
    return None


def _strip_math_delims(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left):len(s) - len(right)].strip()
    return s


def fallback_answer(text: str) -> str | None:
    """The answer after the last 'final answer is' / 'the answer is' / 'answer:' (to the end of its line)."""
    matches = list(_FALLBACK_RE.finditer(text))
    if not matches:
        return None
    s = matches[-1].group(1).strip().rstrip(".").strip()
    s = _strip_math_delims(s).rstrip(".").strip()
    return s or None


def extract_answer(text: str, fallbacks: bool = True) -> str | None:
    """The final answer of ``text`` by the module's rule, or None."""
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str response, got {type(text).__name__}")
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    return fallback_answer(text) if fallbacks else None


_UNWRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|mbox)\{([^{}]*)\}")
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "^\\circ", "^{\\circ}", "\\circ",
         "\\%", "%", "$")


def normalize_answer(s: str | None) -> str | None:
    """A canonical string: no spaces, ``\\left``/``\\right``/thin spaces/``$``, degree and percent signs
    dropped, ``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``\\text{..}``-like wrappers removed, ``{,}`` thousands
    separators removed, trailing period dropped (case kept). None stays None."""
    if s is None:
        return None
    s = _strip_math_delims(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    prev = None
    while prev != s:
        prev, s = s, _UNWRAP_RE.sub(r"\1", s)
    for tok in _DROP:
        s = s.replace(tok, "")
    s = s.replace("{,}", "")
    return re.sub(r"\s+", "", s).rstrip(".")
