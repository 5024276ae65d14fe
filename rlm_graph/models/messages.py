"""Reading a chat model's reply: its plain text and what it cost in tokens."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from rlm_graph.models.usage import Usage


def message_text(message: AIMessage) -> str:
    """The plain text of a message whose content may be a list of parts."""
    content: Any = message.content
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


def usage_of(message: Any, model: str) -> Usage:
    """Token usage of one model reply, keyed by model name."""
    meta = getattr(message, "usage_metadata", None) or {}
    details = meta.get("input_token_details") or {}
    return {
        model: {
            "calls": 1,
            "input_tokens": int(meta.get("input_tokens", 0) or 0),
            "output_tokens": int(meta.get("output_tokens", 0) or 0),
            "cached_tokens": int(details.get("cache_read", 0) or 0),
        }
    }
