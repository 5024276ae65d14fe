"""Cutting long text down for the model without hiding that it was cut."""

from __future__ import annotations

import os
import re


def truncate(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` within ``limit`` characters.

    Both ends matter in REPL output (the head shows what started, the tail shows the
    error or the final print), and the marker tells the model how much it did not see,
    so it can narrow its next print instead of guessing.
    """
    if len(text) <= limit:
        return text
    # The marker counts what it replaces, and its own length changes what it replaces:
    # shrink what is kept until the two agree (the count only grows, so this ends).
    keep = limit
    while True:
        marker = _cut_marker(len(text) - keep)
        fitted = max(limit - len(marker), 0)
        if fitted == keep:
            break
        keep = fitted
    head = keep * 2 // 3
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else "")


def _cut_marker(cut: int) -> str:
    return f"\n[... {cut:,} characters cut; print a narrower slice to see them ...]\n"


def preview(text: str, limit: int) -> str:
    """The first ``limit`` characters, with an ellipsis when there is more."""
    return text if len(text) <= limit else text[:limit] + "…"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: the type says what failed, the first line says why.

    Used wherever an error crosses to a model or a terminal: no traceback, no paths.
    """
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
    return redact_secrets(text)


# Environment variables whose values must never reach a model, the sandbox or a log line.
_SECRET_NAMES = re.compile(r"(_API_KEY|_TOKEN|_SECRET|_PASSWORD)$|^(API_KEY|SECRET_KEY)$")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a key, token or password."""
    return bool(_SECRET_NAMES.search(name.upper()))


def redact_secrets(text: str) -> str:
    """``text`` with the value of every key-like environment variable blanked out.

    Provider errors quote what they were sent (an HTTP 401 may echo the key), and such
    errors are shown to the model and, through its code, could be sent anywhere.
    """
    for name, value in os.environ.items():
        if len(value) >= 8 and is_secret_name(name) and value in text:
            text = text.replace(value, f"[{name} redacted]")
    return text
