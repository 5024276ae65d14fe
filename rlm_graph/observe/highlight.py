"""Python syntax highlighting as HTML spans, with the standard library's tokenizer.

The viewer must be one offline file, so no highlighting library is loaded from a CDN;
Python's own tokenizer knows the language exactly. Model-written code is often broken:
whatever follows the point where tokenizing fails is kept, unhighlighted, so the
output always holds the whole code.
"""

from __future__ import annotations

import builtins
import html
import io
import keyword
import tokenize

BUILTINS = frozenset(name for name in dir(builtins) if not name.startswith("_"))
# Names the RLM sandbox defines for the model (guest_prelude.py).
RLM_HELPERS = frozenset({"llm_query", "llm_batch", "FINAL", "FINAL_VAR", "context", "history"})
STRING_TOKENS = frozenset(
    getattr(tokenize, name)
    for name in ("STRING", "FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
    if hasattr(tokenize, name)
)


def css_class(token: tokenize.TokenInfo) -> str:
    """The class of a token's span, or "" for plain text."""
    if token.type in STRING_TOKENS:
        return "s"
    if token.type == tokenize.COMMENT:
        return "c"
    if token.type == tokenize.NUMBER:
        return "n"
    if token.type == tokenize.NAME:
        if keyword.iskeyword(token.string) or keyword.issoftkeyword(token.string):
            return "k"
        if token.string in RLM_HELPERS:
            return "r"
        if token.string in BUILTINS:
            return "b"
    return ""


def line_offsets(code: str) -> list[int]:
    """Where each line starts in ``code`` (tokenizer rows are 1-based)."""
    offsets = [0]
    for line in code.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def highlight_python(code: str) -> str:
    """``code`` as escaped HTML with highlighted tokens; the text itself is unchanged."""
    offsets = line_offsets(code)
    parts: list[str] = []
    done = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            cls = css_class(token)
            if not cls or token.start[0] > len(offsets) - 1:
                continue
            start = offsets[token.start[0] - 1] + token.start[1]
            end = offsets[token.end[0] - 1] + token.end[1]
            if start < done:
                continue
            parts.append(html.escape(code[done:start]))
            parts.append(f'<span class="{cls}">{html.escape(code[start:end])}</span>')
            done = end
    except (tokenize.TokenError, SyntaxError):
        pass  # the rest stays plain
    parts.append(html.escape(code[done:]))
    return "".join(parts)
