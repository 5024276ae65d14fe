"""What a cell shows besides its prints: its last expression's value, clean tracebacks."""

from __future__ import annotations

from rlm_graph.repl.display import clean_traceback, with_shown_value


def test_the_last_bare_expression_is_kept_where_it_stands() -> None:
    assert with_shown_value("x = 1\nx") == "x = 1\n_rlm_shown = (x)"
    assert with_shown_value("await llm_batch(p)  # go\n") == (
        "_rlm_shown = (await llm_batch(p))  # go\n"
    )
    assert with_shown_value("y = 'é'; y") == "y = 'é'; _rlm_shown = (y)"  # byte offsets
    assert with_shown_value("(1 +\n 2)") == "_rlm_shown = ((1 +\n 2))"
    assert with_shown_value("s = '\u2028'\ns") == "s = '\u2028'\n_rlm_shown = (s)"


def test_statements_prints_finals_and_unreadable_code_are_left_alone() -> None:
    for code in ("x = 1", "print(x)", "FINAL(x)", "FINAL_VAR('x')", "for i in x:\n    i", "1 +"):
        assert with_shown_value(code) == code, code


def test_tracebacks_lose_eryx_and_prelude_frames() -> None:
    raw = (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 3, in <module>\n'
        '  File "_eryx_async", line 194, in resume\n'
        '  File "_eryx_async", line 224, in _poll\n'
        '  File "<user>", line 1, in <module>\n'
        "    await llm_query('q')\n"
        '  File "<user>", line 49, in llm_query\n'
        "SubCallFailed: refused\n"
    )
    assert clean_traceback(raw) == (
        "Traceback (most recent call last):\n"
        '  File "<user>", line 1, in <module>\n'
        "    await llm_query('q')\n"
        "SubCallFailed: refused\n"
    )
