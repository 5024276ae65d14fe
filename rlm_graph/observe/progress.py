"""Showing a run while it happens: a live view on a terminal, plain lines in a log.

Every display is a *sink* fed by the graph's stream: ``custom`` gets the progress events
(typed in ``observe/events.py``), ``values`` the state after each step, ``close`` the end.
A trace file is a sink too (``trajectory.TraceWriter``), so ``Tee`` feeds several.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from rlm_graph.models.usage import total_tokens
from rlm_graph.observe.events import Event

RECENT_LINES = 6


class Sink(Protocol):
    """Where a run's progress goes."""

    def custom(self, event: Event) -> None:
        """Take one progress event from the graph."""

    def values(self, state: dict[str, Any]) -> None:
        """Take the state after a step."""

    def close(self) -> None:
        """The run ended."""


@dataclass(frozen=True)
class Progress:
    """What a run is doing now, folded from the graph's stream."""

    iteration: int = 0  # of the root run; sub-RLMs count their own
    depth: int = 0  # where the latest event came from
    code_line: str = ""
    in_flight: int = 0  # sub-calls running anywhere in the tree
    sub_calls: int = 0  # the state's count, known only when a cell ends
    finished: int = 0  # sub-calls ended since then, so a long cell shows movement
    tokens: int = 0


def event_tokens(event: Event) -> int:
    """Tokens an event reports spending (a sub-RLM's sub-call reports none: its parts do)."""
    if event["event"] in ("reply", "sub_call_end"):
        return total_tokens(event["usage"])
    return 0


def advance(progress: Progress, event: Event) -> Progress:
    """Fold one custom stream event into the progress."""
    tokens = progress.tokens + event_tokens(event)
    progress = replace(progress, depth=event["depth"], tokens=tokens)
    if event["event"] == "iteration" and event["depth"] == 0:
        return replace(progress, iteration=event["iteration"], code_line="")
    if event["event"] == "cell":
        return replace(progress, code_line=event["code_line"])
    if event["event"] == "sub_call_start":
        return replace(progress, in_flight=progress.in_flight + 1)
    if event["event"] == "sub_call_end":
        in_flight = max(progress.in_flight - 1, 0)
        return replace(progress, in_flight=in_flight, finished=progress.finished + 1)
    return progress


def status_line(progress: Progress) -> str:
    """One line on where the run is."""
    done = progress.sub_calls + progress.finished
    return (
        f"iteration {progress.iteration} · depth {progress.depth} · sub-calls "
        f"{progress.in_flight} in flight, {done} done · {progress.tokens:,} tokens"
    )


def log_line(event: Event) -> str | None:
    """A line for a log: iterations and cells (sub-RLMs' indented by depth), never sub-calls.

    Sub-call events can arrive hundreds per second; they are summed instead.
    """
    indent = "  " * event["depth"]
    if event["event"] == "iteration":
        line = f"rlm: {indent}iteration {event['iteration']} (depth {event['depth']})"
        return f"{line}\nrlm: {indent}  note: {event['notice']}" if "notice" in event else line
    if event["event"] == "cell":
        return f"rlm: {indent}  > {event['code_line']}"
    return None


def count(n: int, noun: str) -> str:
    """``n`` nouns, in words a person reads without stumbling ("1 iteration")."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class LineReporter:
    """Plain lines on a stream that is not a terminal (a log file, CI output).

    The in-flight count is printed at most every ``interval`` seconds and the total
    once per cell.
    """

    def __init__(self, stream: TextIO, *, interval: float = 2.0) -> None:
        self.stream = stream
        self.interval = interval
        self.progress = Progress()
        self._last_flight_line = time.monotonic()

    def custom(self, event: Event) -> None:
        """Print iterations and cells; an in-flight count now and then."""
        self.progress = advance(self.progress, event)
        if line := log_line(event):
            self._last_flight_line = time.monotonic()
            self._write(line)
        elif event["event"] == "sub_call_start" and self._flight_line_due():
            self._write(f"rlm:   {count(self.progress.in_flight, 'sub-call')} in flight")

    def values(self, state: dict[str, Any]) -> None:
        """Report sub-calls that a cell finished."""
        total = state.get("sub_calls", 0)
        if total == self.progress.sub_calls:
            return
        self.progress = replace(self.progress, sub_calls=total, finished=0, in_flight=0)
        self._write(f"rlm:   {count(total, 'sub-call')} so far")

    def close(self) -> None:
        """Nothing to clean up: every line is complete."""

    def _flight_line_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_flight_line < self.interval:
            return False
        self._last_flight_line = now
        return True

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class LiveReporter:
    """A live view on a terminal: the status, the code running, the latest steps.

    Drawn by rich and removed when the run ends, so only the answer and the summary
    stay on screen. Drawing starts with the first event, so a run that fails before it
    starts leaves the terminal as it was.
    """

    def __init__(self, console: Console) -> None:
        self.progress = Progress()
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)
        self._live = Live(console=console, transient=True, refresh_per_second=8)

    def custom(self, event: Event) -> None:
        """Fold the event in and redraw."""
        self.progress = advance(self.progress, event)
        if line := log_line(event):
            self.recent.append(line.removeprefix("rlm: "))
        self._redraw()

    def values(self, state: dict[str, Any]) -> None:
        """Take the sub-call total a cell finished with."""
        total = state.get("sub_calls", 0)
        if total != self.progress.sub_calls:
            self.progress = replace(self.progress, sub_calls=total, finished=0, in_flight=0)
            self._redraw()

    def close(self) -> None:
        """Remove the view."""
        if self._live.is_started:
            self._live.stop()

    def _redraw(self) -> None:
        if not self._live.is_started:
            self._live.start()
        self._live.update(self._view())

    def _view(self) -> Group:
        status = Text("rlm ", style="bold cyan") + Text(status_line(self.progress))
        code = Text(f"> {self.progress.code_line}", style="green", overflow="ellipsis")
        code.no_wrap = True
        recent = [
            Text(line, style="dim", overflow="ellipsis", no_wrap=True) for line in self.recent
        ]
        return Group(status, code, *recent)


class Silent:
    """The sink of ``--quiet``: nothing on stderr, for scripts that treat it as trouble."""

    def custom(self, event: Event) -> None:
        """Drop the event."""

    def values(self, state: dict[str, Any]) -> None:
        """Drop the state."""

    def close(self) -> None:
        """Nothing was drawn."""


class Tee:
    """Feeds several sinks (the display and a trace file)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def custom(self, event: Event) -> None:
        """Pass the event to every sink."""
        for sink in self.sinks:
            sink.custom(event)

    def values(self, state: dict[str, Any]) -> None:
        """Pass the state to every sink."""
        for sink in self.sinks:
            sink.values(state)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


def reporter_for(quiet: bool, stream: TextIO | None = None) -> Sink:
    """The progress display for this stream (stderr by default): live, plain, or none."""
    stream = stream or sys.stderr
    if quiet:
        return Silent()
    if stream.isatty():
        return LiveReporter(Console(file=stream))
    return LineReporter(stream)
