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


_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escape pair (skipped) or a brace
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")


def _closing_braces(text: str) -> dict[int, int]:
    """``{open index: matching close index}`` for every closed brace group of ``text``, in one pass.

    LaTeX escapes (``\\{``, ``\\}``, ``\\\\``) are skipped; an unmatched ``}`` is ignored. One pass over the
    text for all boxes (the earlier scan per box was quadratic on repeated unclosed boxes: 24 s for 70 KB)."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(text):
        ch = m.group(0)
        if ch == "{":
            stack.append(m.start())
        elif ch == "}" and stack:
            closing[stack.pop()] = m.start()
    return closing


def _box_content(text: str, end_of_command: int, closing: dict[int, int]) -> str | None:
    i = end_of_command
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "{":
        close = closing.get(i)
        return None if close is None else text[i + 1:close]
    if i > end_of_command:  # "\boxed 5": the next token up to whitespace or '$'
        m = _BARE_TOKEN_RE.match(text, i)
        return m.group(0) if m else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete, non-empty ``\\boxed``/``\\fbox`` in ``text`` (None if there is none).

    Linear in ``len(text)``: the brace groups are matched once for the whole text."""
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    closing = _closing_braces(text)
    for m in reversed(boxes):
        content = _box_content(text, m.end(), closing)
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


_WRAPPER_OR_BRACE_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|mbox)\{|[{}]")


def _unwrap_wrappers(s: str) -> str:
    """Removes ``\\text{X}``-like wrappers whose content X holds no brace once the wrappers inside it are
    removed (``\\text{\\mathrm{cm}}`` -> ``cm``; ``\\text{a{b}}`` is kept). One pass with a stack, so deep
    nesting costs linear time (a regex applied to a fixed point took 7.8 s on 70 KB of nested wrappers)."""
    if "{" not in s:
        return s
    out: list[str] = []
    stack: list[list] = []  # open groups: [index of the opening chunk in out, wrapper text or None, holds a brace]
    pos = 0
    for m in _WRAPPER_OR_BRACE_RE.finditer(s):
        out.append(s[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok == "}":
            if not stack:
                out.append("}")
                continue
            index, wrapper, holds_brace = stack.pop()
            if wrapper is not None and not holds_brace:
                continue  # drop the wrapper: its opening chunk stays empty and no "}" is written
            if wrapper is not None:
                out[index] = wrapper
            out.append("}")
            if stack:
                stack[-1][2] = True
            continue
        wrapper = None if tok == "{" else tok
        if stack and wrapper is None:
            stack[-1][2] = True
        out.append("{" if wrapper is None else "")  # a wrapper's text is written only if the group is kept
        stack.append([len(out) - 1, wrapper, False])
    out.append(s[pos:])
    for index, wrapper, _ in stack:  # unclosed wrappers stay as written
        if wrapper is not None:
            out[index] = wrapper
    return "".join(out)


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
    s = _unwrap_wrappers(s)
    for tok in _DROP:
        s = s.replace(tok, "")
    s = s.replace("{,}", "")
    return re.sub(r"\s+", "", s).rstrip(".")
