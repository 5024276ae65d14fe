"""Cutting text for the model."""

from __future__ import annotations

from rlm_graph.text import truncate, utf8, valid_text


def test_truncate_keeps_head_tail_and_says_how_much() -> None:
    text = "H" * 1000 + "T" * 1000
    out = truncate(text, 300)
    assert len(out) <= 300
    assert out.startswith("H") and out.endswith("T")
    shown = out.count("H") + out.count("T")
    assert f"{len(text) - shown:,} characters cut" in out
    assert truncate("short", 300) == "short"


def test_lone_surrogates_become_u_fffd_and_valid_text_is_untouched() -> None:
    assert valid_text("caf\udce9 \ud800x") == "caf\ufffd \ufffdx"
    assert utf8("caf\udce9") == "caf\ufffd".encode()
    assert utf8("déjà vu ✓") == "déjà vu ✓".encode()
