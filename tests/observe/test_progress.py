"""The progress display: events folded into a status, live on a terminal, plain in a log."""

from __future__ import annotations

import io

from rich.console import Console

from rlm_graph.observe import events
from rlm_graph.observe.progress import (
    LineReporter,
    LiveReporter,
    Progress,
    Silent,
    advance,
    log_line,
    reporter_for,
    status_line,
)


def test_progress_folds_events_of_the_whole_tree() -> None:
    usage = {"m": {"input_tokens": 10, "output_tokens": 5}}
    progress = Progress()
    for event in [
        {"event": "iteration", "iteration": 3, "depth": 0},
        {"event": "cell", "depth": 0, "code_line": "x = 1"},
        {"event": "sub_call_start", "depth": 1},
        {"event": "sub_call_start", "depth": 1},
        {"event": "iteration", "iteration": 1, "depth": 1, "path": ["a"]},
        {"event": "reply", "depth": 1, "usage": usage, "path": ["a"]},
        {"event": "sub_call_end", "depth": 1, "usage": usage},
    ]:
        progress = advance(progress, event)
    assert progress == Progress(3, 1, "x = 1", in_flight=1, finished=1, tokens=30)
    assert status_line(progress) == (
        "iteration 3 · depth 1 · sub-calls 1 in flight, 1 done · 30 tokens"
    )


def test_terminal_reporter_draws_a_live_view_and_removes_it() -> None:
    screen = io.StringIO()
    reporter = LiveReporter(Console(file=screen, force_terminal=True, width=100))
    reporter.custom({"event": "iteration", "iteration": 1, "depth": 0})
    reporter.custom({"event": "cell", "depth": 0, "code_line": "print(len(context))"})
    reporter.custom({"event": "sub_call_start", "depth": 1})
    reporter.values({"sub_calls": 5})
    reporter.close()
    text = screen.getvalue()
    assert "iteration 1" in text and "> print(len(context))" in text
    assert "sub-calls 0 in flight, 5 done" in text
    assert text.endswith("\x1b[1A\x1b[2K")  # the view is erased when the run ends
    idle = io.StringIO()
    LiveReporter(Console(file=idle, force_terminal=True)).close()  # failed before any event
    assert idle.getvalue() == ""


def test_log_reporter_throttles_sub_call_lines() -> None:
    log = io.StringIO()
    reporter = LineReporter(log, interval=0.0)
    reporter.custom({"event": "sub_call_start", "depth": 1, "in_flight": 1})
    reporter.values({"sub_calls": 1})
    quiet = LineReporter(log, interval=3600.0)
    for n in range(50):
        quiet.custom({"event": "sub_call_start", "depth": 1, "in_flight": n})
    assert log.getvalue().splitlines() == [
        "rlm:   1 sub-call in flight",
        "rlm:   1 sub-call so far",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_live_on_a_terminal_plain_in_a_log_and_silent_when_quiet() -> None:
    assert isinstance(reporter_for(quiet=False, stream=Terminal()), LiveReporter)
    assert isinstance(reporter_for(quiet=False, stream=io.StringIO()), LineReporter)
    assert isinstance(reporter_for(quiet=True, stream=Terminal()), Silent)


def test_a_log_says_a_notice_under_its_iteration() -> None:
    event = events.iteration(
        depth=0, iteration=3, prompt_chars=1, prompt_messages=2, notice="tool calling off"
    )
    assert log_line(event) == "rlm: iteration 3 (depth 0)\nrlm:   note: tool calling off"
