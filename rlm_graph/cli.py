"""The ``rlm`` command: ask a question about a large context, or try the stack offline.

stdout carries only the answer (or one JSON object) so ``rlm run ... > answer.txt`` and
pipes work; progress and errors go to stderr. Mistakes a user can fix (no key, a
missing file, a setting out of range) are found before any work starts and reported
in one line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, fields, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

from rlm_graph import demo
from rlm_graph.api import RLMResult, result_from, run_config
from rlm_graph.context import Settings
from rlm_graph.context_store import ContextError, blob_dir, blob_name, store_path, store_value
from rlm_graph.graph import build_graph, graph
from rlm_graph.models import ModelConfigError, load_chat_model, missing_credentials
from rlm_graph.persistence import PersistenceError, open_persistence
from rlm_graph.state import ContextRef
from rlm_graph.stub_server import StubServer
from rlm_graph.truncation import one_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3
MAX_DEMO_MB = 100.0
# Settings exposed as `rlm run` flags: (field name, type, metavar).
RUN_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("sub_model", str, "MODEL"),
    ("base_url", str, "URL"),
    ("sub_base_url", str, "URL"),
    ("max_iterations", int, "N"),
    ("max_depth", int, "N"),
    ("max_sub_calls", int, "N"),
    ("max_concurrency", int, "N"),
    ("cell_timeout", float, "SECONDS"),
)
EXIT_CODES = {"answered": EXIT_OK, "budget_exhausted": EXIT_BUDGET}


class UsageError(Exception):
    """A mistake in how ``rlm`` was called; reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block buries the message)."""

    def error(self, message: str) -> NoReturn:
        """Report ``message`` in one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# -- progress ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a run is doing now, folded from the graph's stream."""

    iteration: int = 0
    depth: int = 0
    code_line: str = ""
    in_flight: int = 0
    sub_calls: int = 0  # the state's count, known only when a cell ends
    finished: int = 0  # sub-calls ended since then, so a long cell shows movement


def advance(progress: Progress, event: dict[str, Any]) -> Progress:
    """Fold one custom stream event (see ``graph._emit``) into the progress."""
    kind = event.get("event")
    if kind == "iteration":
        return replace(progress, iteration=event["iteration"], depth=event["depth"], code_line="")
    if kind == "cell":
        return replace(progress, depth=event["depth"], code_line=event["code_line"])
    if kind == "sub_call_start":
        return replace(progress, in_flight=event["in_flight"])
    if kind == "sub_call_end":
        return replace(progress, in_flight=event["in_flight"], finished=progress.finished + 1)
    return progress


def status_line(progress: Progress, width: int) -> str:
    """The single line a terminal shows, clipped: a wrapped line cannot be redrawn."""
    parts = [f"iteration {progress.iteration}", f"depth {progress.depth}"]
    done = progress.sub_calls + progress.finished
    parts.append(f"sub-calls {progress.in_flight} in flight, {done} done")
    if progress.code_line:
        parts.append(f"> {progress.code_line}")
    text = "rlm: " + " · ".join(parts)
    return text if len(text) < width else text[: max(width - 2, 0)] + "…"


def log_line(event: dict[str, Any]) -> str | None:
    """A line for a log file: iterations and cells only, sub-calls are summed per cell."""
    kind = event.get("event")
    if kind == "iteration":
        return f"rlm: iteration {event['iteration']} (depth {event['depth']})"
    if kind == "cell":
        return f"rlm:   > {event['code_line']}"
    return None


class Sink(Protocol):
    """Where a run's progress goes."""

    def custom(self, event: dict[str, Any]) -> None:
        """Take one progress event from the graph."""

    def values(self, state: dict[str, Any]) -> None:
        """Take the state after a step."""

    def close(self) -> None:
        """The run ended."""


class Reporter:
    """Shows progress on stderr: one rewritten line on a terminal, plain lines otherwise.

    Sub-call events can arrive hundreds per second, so the plain form prints the
    in-flight count at most every ``interval`` seconds and the total once per cell.
    """

    def __init__(self, stream: TextIO, *, live: bool, interval: float = 2.0) -> None:
        self.stream = stream
        self.live = live
        self.interval = interval
        self.progress = Progress()
        self._last_flight_line = time.monotonic()

    def custom(self, event: dict[str, Any]) -> None:
        """Take one progress event from the graph."""
        self.progress = advance(self.progress, event)
        if self.live:
            self._redraw()
        elif line := log_line(event):
            self._last_flight_line = time.monotonic()
            self._write(line)
        elif event.get("event") == "sub_call_start" and self._flight_line_due():
            self._write(f"rlm:   {count(self.progress.in_flight, 'sub-call')} in flight")

    def values(self, state: dict[str, Any]) -> None:
        """Take the state after a step; reports sub-calls that a cell finished."""
        total = state.get("sub_calls", 0)
        if total == self.progress.sub_calls:
            return
        self.progress = replace(self.progress, sub_calls=total, finished=0, in_flight=0)
        if self.live:
            self._redraw()
        else:
            self._write(f"rlm:   {count(total, 'sub-call')} so far")

    def close(self) -> None:
        """Clear the status line so what follows starts on a clean line."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _flight_line_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_flight_line < self.interval:
            return False
        self._last_flight_line = now
        return True

    def _redraw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r" + status_line(self.progress, width) + "\x1b[K")
        self.stream.flush()

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class Silent:
    """The sink of ``--quiet``: nothing on stderr, for scripts that treat it as trouble."""

    def custom(self, event: dict[str, Any]) -> None:
        """Drop the event."""

    def values(self, state: dict[str, Any]) -> None:
        """Drop the state."""

    def close(self) -> None:
        """Nothing was drawn."""


def reporter_for(quiet: bool) -> Sink:
    """The progress display for this terminal (or none)."""
    return Silent() if quiet else Reporter(sys.stderr, live=sys.stderr.isatty())


# -- running ----------------------------------------------------------------------------


Graph = CompiledStateGraph[Any, Any, Any, Any]


def run_graph(
    question: str,
    ref: ContextRef,
    settings: Settings,
    reporter: Sink,
    *,
    durable: tuple[Graph, RunnableConfig] | None = None,
) -> RLMResult:
    """Run the graph, streaming progress to ``reporter``.

    The graph is streamed rather than invoked because ``invoke`` drops the custom
    events that say what the run is doing. A model or network failure ends the run
    as a failed result (not an exception), so every caller prints one outcome.
    ``durable`` is a checkpointed graph and its thread's config: a thread that was
    cut off while on this question continues from its last completed step.
    """
    started = time.perf_counter()
    state: dict[str, Any] = {}
    target, config = durable or (graph, run_config(settings))
    inputs: dict[str, Any] | None = {"question": question, "context_ref": ref}
    if durable is not None:
        snapshot = target.get_state(config)
        if resumable(snapshot, question):
            inputs = None
            state = dict(snapshot.values)
            step = state.get("iteration", 0)
            print(
                f"rlm: resuming thread {thread_of(config)} after iteration {step}: completed "
                "steps are not run (or paid for) again",
                file=sys.stderr,
            )
    # A durable run saves each step before the next starts: a kill loses nothing.
    options: dict[str, Any] = {"durability": "sync"} if durable else {}
    # With a list of modes LangGraph yields (mode, chunk) pairs; its signature cannot say so.
    chunks = cast(
        Iterator[tuple[str, Any]],
        target.stream(
            inputs, config=config, context=settings, stream_mode=["custom", "values"], **options
        ),
    )
    try:
        for mode, chunk in chunks:
            if mode == "values":
                state = chunk
                reporter.values(chunk)
            else:
                reporter.custom(chunk)
    except Exception as exc:
        return result_from(state, time.perf_counter() - started, one_line(exc))
    finally:
        reporter.close()
    return result_from(state, time.perf_counter() - started)


def resumable(snapshot: StateSnapshot, question: str) -> bool:
    """Whether a thread stopped part-way through this same question (a crash, a kill)."""
    values = snapshot.values or {}
    asked = values.get("active_question") or values.get("question")
    return bool(snapshot.next) and asked == question and not snapshot.interrupts


def thread_of(config: RunnableConfig) -> str:
    """The thread id of a config."""
    return str(config.get("configurable", {}).get("thread_id", ""))


def total_tokens(tokens: dict[str, dict[str, int]]) -> int:
    """Input plus output tokens over all models."""
    return sum(t.get("input_tokens", 0) + t.get("output_tokens", 0) for t in tokens.values())


def count(n: int, noun: str) -> str:
    """``n`` nouns, in words a person reads without stumbling ("1 iteration")."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def summary(result: RLMResult) -> str:
    """One line on what the run cost."""
    return (
        f"{result.status.replace('_', ' ')} in {count(result.iterations, 'iteration')}, "
        f"{count(result.sub_calls, 'sub-call')}, {count(total_tokens(result.tokens), 'token')}, "
        f"{result.seconds:.1f} s"
    )


def token_lines(tokens: dict[str, dict[str, int]]) -> list[str]:
    """Per-model usage, because root and sub model are priced differently."""
    return [
        f"{model}: {count(t.get('calls', 0), 'call')}, {t.get('input_tokens', 0):,} in / "
        f"{t.get('output_tokens', 0):,} out"
        for model, t in sorted(tokens.items())
    ]


# -- rlm run ----------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags given; omitted flags keep the defaults Settings defines."""
    values = {name: getattr(args, name) for name, _, _ in RUN_FLAGS}
    values = {name: value for name, value in values.items() if value is not None}
    return Settings(model=args.model, **values)


def check_models(settings: Settings) -> None:
    """Fail now on a missing key or an unusable model name, not after the first cell.

    Building the clients makes no request, and they are cached for the run itself.
    """
    pairs = [
        (settings.model, settings.base_url),
        (settings.effective_sub_model, settings.effective_sub_base_url),
    ]
    for name, base_url in pairs:
        if problem := missing_credentials(name, base_url):
            raise UsageError(problem)
        try:
            load_chat_model(name, base_url, settings.model_timeout, settings.model_max_retries)
        except ModelConfigError as exc:
            raise UsageError(str(exc)) from exc


def read_context(source: str, stdin: TextIO) -> ContextRef:
    """Store the context named on the command line ('-' is stdin) and return its reference.

    stdin is read as bytes and decoded leniently: piped logs often hold a stray byte.
    """
    try:
        if source == "-":
            if stdin.isatty():
                print("rlm: reading the context from stdin; end it with Ctrl-D", file=sys.stderr)
            return store_value(stdin.buffer.read())
        return store_path(Path(source))
    except ContextError as exc:
        raise UsageError(str(exc)) from exc


def print_answer(result: RLMResult, as_json: bool) -> None:
    """The answer on stdout; a best-effort answer says so on its first line."""
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    elif result.status == "budget_exhausted":
        spent = count(result.iterations, "iteration")
        print(f"[budget exhausted after {spent}: best-effort answer]")
        print(result.answer_text())
    elif result.status == "answered":
        print(result.answer_text())


def run_command(args: argparse.Namespace) -> int:
    """``rlm run``: every check first, then the run, then the answer and its exit code."""
    if not args.question.strip():
        raise UsageError('the question is empty: rlm run --context FILE "your question"')
    try:
        settings = settings_from(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.thread and not args.checkpoint:
        raise UsageError("--thread needs --checkpoint FILE: a thread lives in a checkpoint file")
    check_models(settings)
    ref = read_context(args.context, sys.stdin)
    if args.checkpoint:
        thread = args.thread or uuid.uuid4().hex[:12]
        if not args.thread:
            print(
                f"rlm: thread {thread} (resume or follow up with --thread {thread})",
                file=sys.stderr,
            )
        try:
            with open_persistence(args.checkpoint) as persistence:
                durable = build_graph(
                    checkpointer=persistence.checkpointer, store=persistence.store
                )
                config = run_config(settings, {"configurable": {"thread_id": thread}})
                result = run_graph(
                    args.question,
                    ref,
                    settings,
                    reporter_for(args.quiet),
                    durable=(durable, config),
                )
        except PersistenceError as exc:
            raise UsageError(str(exc)) from exc
    else:
        result = run_graph(args.question, ref, settings, reporter_for(args.quiet))
    print_answer(result, args.json)
    if result.status == "failed":
        print(f"rlm: error: {result.error or 'the run failed'}", file=sys.stderr)
    elif not args.quiet:
        print(f"rlm: {summary(result)}", file=sys.stderr)
    return EXIT_CODES.get(result.status, EXIT_FAILED)


# -- rlm threads ------------------------------------------------------------------------


def thread_row(thread: str, snapshot: StateSnapshot) -> dict[str, Any]:
    """What ``rlm threads`` says of one thread."""
    values = snapshot.values or {}
    if snapshot.interrupts:
        status = "waiting for approval"
    elif snapshot.next:
        status = "cut off (resumable)"
    else:
        status = str(values.get("status", "new")).replace("_", " ")
    question = values.get("active_question") or values.get("question") or ""
    return {
        "thread": thread,
        "status": status,
        "iterations": values.get("iteration", 0),
        "cells": len(values.get("cells") or []),
        "question": question,
        "updated": snapshot.created_at or "",
    }


def threads_command(args: argparse.Namespace) -> int:
    """``rlm threads``: the threads of a checkpoint, newest first."""
    if (
        not args.checkpoint.startswith(("postgres://", "postgresql://"))
        and not Path(args.checkpoint).is_file()
    ):
        raise UsageError(f"no checkpoint file at {args.checkpoint!r}")
    try:
        with open_persistence(args.checkpoint) as persistence:
            durable = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
            seen: list[str] = []
            for saved in persistence.checkpointer.list(None):
                thread = thread_of(saved.config)
                if thread not in seen:
                    seen.append(thread)
            rows = [
                thread_row(t, durable.get_state({"configurable": {"thread_id": t}})) for t in seen
            ]
    except PersistenceError as exc:
        raise UsageError(str(exc)) from exc
    rows.sort(key=lambda row: str(row["updated"]), reverse=True)
    for row in rows:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            question = one_line_text(row["question"], 60)
            print(f"{row['thread']}  {row['status']:<22} {row['iterations']:>4} it  {question}")
    if not rows and not args.json:
        print("rlm: no threads in this checkpoint", file=sys.stderr)
    return EXIT_OK


def one_line_text(text: str, limit: int) -> str:
    """Text on one line, clipped, for a table cell."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- rlm demo ---------------------------------------------------------------------------


def demo_settings(base_url: str) -> Settings:
    """Both models at the stand-in, named apart so the token table shows both."""
    return Settings(model=demo.ROOT_MODEL, sub_model=demo.SUB_MODEL, base_url=base_url)


def demo_banner(base_url: str, context: demo.DemoContext) -> str:
    """Said before anything runs, so nobody mistakes the stand-in's answers for a model's."""
    return (
        f"Offline demo: root and sub model are a scripted stand-in at {base_url}; "
        "graph, sandbox and client are real.\n"
        f"Context: {len(context.text):,} characters of synthetic service logs "
        f"({context.lines:,} lines).\n"
        f"Question: {demo.QUESTION}"
    )


def demo_report(
    result: RLMResult, context: demo.DemoContext, correct: bool, saved: Path
) -> list[str]:
    """What the demo tells a human: the answer, whether it is right, the cost, what next."""
    root_tokens = result.tokens.get(demo.ROOT_MODEL, {}).get("input_tokens", 0)
    verdict = "correct" if correct else f"WRONG, expected {json.dumps(context.expected())}"
    return [
        f"Answer: {result.answer_text()}",
        f"Check: {verdict} (the generator knows the true answer)",
        *([f"Error: {result.error}"] if result.error else []),
        f"Run: {summary(result)}",
        "Tokens: " + "; ".join(token_lines(result.tokens)),
        f"The root model read {root_tokens:,} prompt tokens in all: the "
        f"{len(context.text):,}-character log stayed in the sandbox, sub-calls read it in chunks.",
        "",
        "Next, ask a real model about the same log:",
        f"  CTX={shlex.quote(str(saved))}",
        f'  OPENAI_API_KEY=sk-... rlm run --context "$CTX" {shlex.quote(demo.QUESTION)}',
        "or any OpenAI-compatible server (vLLM, llama.cpp, Ollama):",
        '  rlm run --base-url http://localhost:8000/v1 --model MODEL --context "$CTX" "..."',
    ]


def demo_command(args: argparse.Namespace) -> int:
    """``rlm demo``: the real stack against the scripted stand-in, checked against the truth."""
    if not 0 < args.size_mb <= MAX_DEMO_MB:
        raise UsageError(
            f"--size-mb {args.size_mb:g} is out of range: use 0 < N <= {MAX_DEMO_MB:g}"
        )
    context = demo.make_context(args.size_mb)
    ref = store_value(context.text)
    saved = blob_dir(ref) / blob_name(ref)
    with StubServer(demo.respond) as server:
        banner = demo_banner(server.base_url, context)
        print(banner, file=sys.stderr if args.json else sys.stdout, flush=True)
        settings = demo_settings(server.base_url)
        result = run_graph(demo.QUESTION, ref, settings, reporter_for(quiet=False))
    correct = result.status == "answered" and result.answer == context.expected()
    if args.json:
        report = {**result.to_json(), "expected": context.expected(), "correct": correct}
        print(json.dumps({**report, "offline": True, "context_file": str(saved)}))
    else:
        print("\n" + "\n".join(demo_report(result, context, correct, saved)))
    return EXIT_OK if correct else EXIT_FAILED


# -- parser -----------------------------------------------------------------------------


def _setting(name: str) -> Field[Any]:
    """The definition of one setting: its default and description live only there."""
    return next(f for f in fields(Settings) if f.name == name)


def setting_help(name: str) -> str:
    """A flag's help: the setting's own description, so CLI and Studio never disagree."""
    field = _setting(name)
    default = f" (default: {field.default})" if field.default != "" else ""
    return (str(field.metadata["description"]) + default).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The ``rlm`` argument parser; ``RLM_MODEL`` is read now so tests can set it."""
    parser = _Parser(
        prog="rlm",
        description="Recursive Language Models: answer questions about contexts far larger "
        "than a prompt, with code in a sandbox and sub-calls on chunks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="answer a question about a file, a directory or stdin",
        description="Answer QUESTION about a context too large for a prompt. The answer "
        "goes to stdout; progress goes to stderr. Exit codes: 0 answered, 1 failed, "
        "2 usage error, 3 iteration budget exhausted (best-effort answer printed).",
    )
    run.add_argument("question", help="the question to answer")
    run.add_argument(
        "--context",
        required=True,
        metavar="PATH",
        help="a text file, a .json file (parsed), a directory (read as {relative path: "
        "text}), or - for stdin",
    )
    run.add_argument(
        "--model",
        default=os.environ.get("RLM_MODEL") or _setting("model").default,
        metavar="MODEL",
        help="root model as provider:name, e.g. openai:gpt-5, anthropic:claude-sonnet-4-5; "
        "with --base-url a bare name is served by that OpenAI-compatible server "
        f"(default: $RLM_MODEL, else {_setting('model').default})",
    )
    for name, kind, metavar in RUN_FLAGS:
        flag = "--" + name.replace("_", "-")
        run.add_argument(flag, dest=name, type=kind, metavar=metavar, help=setting_help(name))
    run.add_argument(
        "--checkpoint",
        metavar="FILE|URL",
        help="keep the run in a SQLite file (or a postgresql:// URL): after a crash, the "
        "same command with the same --thread resumes where it stopped",
    )
    run.add_argument(
        "--thread",
        metavar="ID",
        help="thread in the checkpoint: resume it, or ask a follow-up question that "
        "reuses its sandbox (default: a new thread, whose id is printed)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object, not the answer")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(handler=run_command)

    threads = commands.add_parser(
        "threads",
        help="list the threads kept in a checkpoint file, with their status",
        description="List the threads in a checkpoint file (or postgresql:// URL): "
        "question, status, iterations, and whether a run was cut off and can resume.",
    )
    threads.add_argument("--checkpoint", required=True, metavar="FILE|URL")
    threads.add_argument("--json", action="store_true", help="print one JSON object per line")
    threads.set_defaults(handler=threads_command)

    demo_parser = commands.add_parser(
        "demo",
        help="run the whole stack offline against a scripted model",
        description="Run the real graph, sandbox and OpenAI client against a scripted "
        "stand-in model on 127.0.0.1: no key and no network needed.",
    )
    demo_parser.add_argument(
        "--size-mb",
        type=float,
        default=2.0,
        metavar="N",
        help="size of the synthetic log in MB (default: %(default)g)",
    )
    demo_parser.add_argument("--json", action="store_true", help="print one JSON object")
    demo_parser.set_defaults(handler=demo_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``rlm``; returns the exit code instead of raising, so tests call it directly."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already reported
        return int(exit_.code or 0)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"rlm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
