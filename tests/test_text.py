"""Cutting text for the model."""

from __future__ import annotations

from rlm_graph.text import truncate


def test_truncate_keeps_head_tail_and_says_how_much() -> None:
    text = "H" * 1000 + "T" * 1000
    out = truncate(text, 300)
    assert len(out) <= 300
    assert out.startswith("H") and out.endswith("T")
    shown = out.count("H") + out.count("T")
    assert f"{len(text) - shown:,} characters cut" in out
    assert truncate("short", 300) == "short"
