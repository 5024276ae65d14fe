"""What a cell shows the model besides what it printed, as a notebook would show it.

- The value of the cell's last bare expression, when the cell printed nothing: a 1.5B
  model ended its cells with ``await llm_batch(...)`` and read "(no output)" (issue 18).
- Tracebacks without eryx's own frames: every error raised under an ``await`` began
  with five of them (its exec wrapper and its async driver, pyeryx 0.11), and a failed
  sub-call with a frame of the prelude, none of them code the model wrote.
"""

from __future__ import annotations

import ast
import io
import re

# The guest variable that takes the last expression's value (the prelude prints it).
SHOWN = "_rlm_shown"
SHOW = "_rlm_show()"
# Calls whose value is no news: print's is None, FINAL's is the answer being given.
_QUIET_CALLS = {"print", "FINAL", "FINAL_VAR"}
# A frame of eryx's exec wrapper or async driver, or of a prelude helper (the prelude
# runs as "<user>" too, so its frames are told by their function), with its source lines.
_INTERNAL_FRAME = re.compile(
    r'^  File "(?:<string>|_eryx[^"]*)", line \d+, in .*\n(?:    .*\n)*'
    r'|^  File "<user>", line \d+, in (?:llm_query|llm_batch|_rlm_\w+)\n(?:    .*\n)*',
    re.MULTILINE,
)


def with_shown_value(code: str) -> str:
    """``code`` with its last statement, if a bare expression, kept in ``_rlm_shown``.

    The expression is wrapped where it stands, so line numbers in tracebacks stay
    true; code the host's parser cannot read (newer syntax than the host's Python)
    runs as it is.
    """
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError):
        return code
    if not body or not isinstance(body[-1], ast.Expr) or _is_quiet(body[-1].value):
        return code
    last = body[-1]
    assert last.end_lineno is not None and last.end_col_offset is not None
    # Lines as the tokenizer counts them: str.splitlines also breaks at \x0c or U+2028,
    # which a string literal may hold.
    lines = [line.encode() for line in io.StringIO(code, newline="").readlines()]
    end = lines[last.end_lineno - 1]  # ast offsets count UTF-8 bytes
    lines[last.end_lineno - 1] = end[: last.end_col_offset] + b")" + end[last.end_col_offset :]
    start = lines[last.lineno - 1]
    lines[last.lineno - 1] = (
        start[: last.col_offset] + f"{SHOWN} = (".encode() + start[last.col_offset :]
    )
    return b"".join(lines).decode()


def _is_quiet(value: ast.expr) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in _QUIET_CALLS
    )


def clean_traceback(text: str) -> str:
    """``text`` without the frames of eryx's machinery and of the prelude's helpers."""
    return _INTERNAL_FRAME.sub("", text)
