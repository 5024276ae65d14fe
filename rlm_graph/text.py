"""Cutting long text down for the model without hiding that it was cut; valid text only.

Imports only ``redact``: every layer may use it.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from rlm_graph.redact import redact_secrets

_NARROWER = "print a narrower slice to see them"
_REPLACEMENT = "\ufffd".encode()


def _as_replacement(error: UnicodeError) -> tuple[bytes, int]:
    """An encode error handler: U+FFFD for each character UTF-8 cannot encode."""
    assert isinstance(error, UnicodeEncodeError)
    # As bytes: the UTF-8 encoder takes only ASCII from a handler that returns text.
    return _REPLACEMENT * (error.end - error.start), error.end


# The only characters UTF-8 cannot encode are lone surrogates.
codecs.register_error("rlm-surrogates", _as_replacement)


def utf8(text: str) -> bytes:
    r"""``text`` in UTF-8, each lone surrogate as U+FFFD.

    Python turns bytes that are not UTF-8 in file names and ``argv`` into lone surrogates
    (surrogateescape), and JSON may spell one (``"\udcff"``). No model client, checkpoint
    or trace can encode them ("surrogates not allowed"), so text from outside is made
    valid where it enters: every context (``storage.contexts.store_value``) and every
    question (``graph.runner.Run``). Valid text costs a plain encode: the handler runs
    only for what cannot be encoded.
    """
    return text.encode("utf-8", errors="rlm-surrogates")


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (see :func:`utf8`)."""
    return utf8(text).decode("utf-8")


def truncate(text: str, limit: int, why: str = _NARROWER) -> str:
    """Keep the head and tail of ``text`` within ``limit`` characters.

    Both ends matter in REPL output (the head shows what started, the tail shows the
    error or the final print), and the marker tells the model how much it did not see
    and ``why``, so it can narrow its next print instead of guessing.
    """
    if len(text) <= limit:
        return text
    # The marker counts what it replaces, and its own length changes what it replaces:
    # shrink what is kept until the two agree (the count only grows, so this ends).
    keep = limit
    while True:
        marker = _cut_marker(len(text) - keep, why)
        fitted = max(limit - len(marker), 0)
        if fitted == keep:
            break
        keep = fitted
    head = keep * 2 // 3
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else "")


def _cut_marker(cut: int, why: str) -> str:
    return f"\n[... {cut:,} characters cut; {why} ...]\n"


def preview(text: str, limit: int) -> str:
    """The first ``limit`` characters, with an ellipsis when there is more."""
    return text if len(text) <= limit else text[:limit] + "…"


def first_of(names: Sequence[str], limit: int) -> str:
    """``names`` joined with commas, the first ``limit`` of them and how many more."""
    more = f" and {len(names) - limit:,} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: the type says what failed, the first line says why.

    Used wherever an error crosses to a model or a terminal: no traceback, no paths.
    """
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
    return redact_secrets(text)
