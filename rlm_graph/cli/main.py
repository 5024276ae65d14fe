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
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import Field, fields, replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot

from rlm_graph.api import STREAM_MODES, RLMResult, open_trace, result_from, run_config, stream_into
from rlm_graph.eval import command as eval_cli
from rlm_graph.graph import build_graph, graph
from rlm_graph.graph.approval import Approver, terminal_approver
from rlm_graph.models.loading import ModelConfigError, load_chat_model, missing_credentials
from rlm_graph.models.pricing import CostReport
from rlm_graph.models.usage import total_tokens
from rlm_graph.observe.official_log import (
    is_official,
    parse_official,
    to_trajectory,
    write_official,
)
from rlm_graph.observe.progress import Sink, Tee, count, reporter_for
from rlm_graph.observe.trajectory import TraceError, read_lines_of, read_trajectory, trajectory_from
from rlm_graph.observe.viewer import render_html
from rlm_graph.offline import demo
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import (
    ContextError,
    ContextRef,
    ContextWarning,
    blob_dir,
    blob_name,
    store_path,
    store_stream,
    store_value,
)
from rlm_graph.storage.persistence import PersistenceError, open_persistence
from rlm_graph.text import one_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
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
    ("max_tokens", int, "N"),
    ("max_dollars", float, "DOLLARS"),
)
EXIT_CODES = {"answered": EXIT_OK, "budget_exhausted": EXIT_BUDGET}
TRACE_HELP = "write the run's trajectory (JSON lines) to FILE; open it with `rlm view FILE`"


class UsageError(Exception):
    """A mistake in how ``rlm`` was called; reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block buries the message)."""

    def error(self, message: str) -> NoReturn:
        """Report ``message`` in one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# -- running ----------------------------------------------------------------------------


Graph = CompiledStateGraph[Any, Any, Any, Any]


def run_graph(
    question: str,
    ref: ContextRef,
    settings: Settings,
    reporter: Sink,
    *,
    durable: tuple[Graph, RunnableConfig] | None = None,
    trace: Path | None = None,
    approve: Approver | None = None,
) -> RLMResult:
    """Run the graph, streaming progress to ``reporter`` (and to a trace file).

    The graph is streamed rather than invoked because ``invoke`` drops the custom
    events that say what the run is doing. A model or network failure ends the run
    as a failed result (not an exception), so every caller prints one outcome.
    ``durable`` is a checkpointed graph and its thread's config: a thread that was
    cut off while on this question continues from its last completed step. ``approve``
    answers each pause of ``approve_code`` (the run resumes with its decision).
    """
    writer = open_trace(trace, question, settings, {"context_ref": ref}) if trace else None
    sink = Tee(reporter, writer) if writer else reporter
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
    chunks = target.stream(
        inputs, config=config, context=settings, stream_mode=STREAM_MODES, **options
    )
    try:
        try:
            state = stream_into(chunks, sink) or state
            while approve is not None and (asked := target.get_state(config).interrupts):
                decision: Command[Any] = Command(resume=approve(asked[0].value))
                more = target.stream(
                    decision, config=config, context=settings, stream_mode=STREAM_MODES, **options
                )
                state = stream_into(more, sink) or state
            result = result_from(state, time.perf_counter() - started, settings)
        except Exception as exc:
            result = result_from(state, time.perf_counter() - started, settings, one_line(exc))
        if writer:
            writer.result(result.to_json())
    finally:
        sink.close()
    return result


def resumable(snapshot: StateSnapshot, question: str) -> bool:
    """Whether a thread stopped part-way through this same question (a crash, a kill)."""
    values = snapshot.values or {}
    asked = values.get("active_question") or values.get("question")
    return bool(snapshot.next) and asked == question and not snapshot.interrupts


def thread_of(config: RunnableConfig) -> str:
    """The thread id of a config."""
    return str(config.get("configurable", {}).get("thread_id", ""))


def summary(result: RLMResult) -> str:
    """One line on what the run cost."""
    return (
        f"{result.status.replace('_', ' ')} in {count(result.iterations, 'iteration')}, "
        f"{count(result.sub_calls, 'sub-call')}, {count(total_tokens(result.tokens), 'token')}, "
        f"{dollars_text(result.cost)}, {result.seconds:.1f} s"
    )


def dollars_text(cost: CostReport | None) -> str:
    """The cost in dollars, saying which models had no price."""
    if cost is None:
        return "cost unknown"
    text = f"${cost['dollars']:.4f}" if cost["models"] else "cost unknown"
    if cost["unpriced"]:
        text += f" (no price for {', '.join(cost['unpriced'])}: see --prices)"
    return text


def token_lines(tokens: dict[str, dict[str, int]], cost: CostReport | None = None) -> list[str]:
    """Per-model usage and cost, because root and sub model are priced differently."""
    priced = cost["models"] if cost else {}
    return [
        f"{model}: {count(t.get('calls', 0), 'call')}, {t.get('input_tokens', 0):,} in "
        f"({t.get('cached_tokens', 0):,} cached) / {t.get('output_tokens', 0):,} out"
        + (f", ${priced[model]:.4f}" if model in priced else "")
        for model, t in sorted(tokens.items())
    ]


# -- rlm run ----------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags given; omitted flags keep the defaults Settings defines."""
    values = {name: getattr(args, name) for name, _, _ in RUN_FLAGS}
    values = {name: value for name, value in values.items() if value is not None}
    if args.prices:
        values["prices"] = read_prices(args.prices)
    return Settings(model=args.model, **values)


def read_prices(path: str) -> Any:
    """The user's price table from a JSON file (its shape is checked by Settings)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --prices {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"--prices {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc


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

    stdin is streamed as bytes and decoded leniently: piped logs often hold a stray
    byte. What was replaced (or an empty context) is said on stderr in one line.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextWarning)
        try:
            if source == "-":
                if stdin.isatty():
                    print(
                        "rlm: reading the context from stdin; end it with Ctrl-D", file=sys.stderr
                    )
                ref = store_stream(stdin.buffer, "stdin")
            else:
                ref = store_path(Path(source))
        except ContextError as exc:
            raise UsageError(str(exc)) from exc
    for warning in caught:
        if issubclass(warning.category, ContextWarning):
            print(f"rlm: warning: {warning.message}", file=sys.stderr)
    return ref


def print_answer(result: RLMResult, as_json: bool) -> None:
    """The answer on stdout; a best-effort answer says so on its first line."""
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    elif result.status == "budget_exhausted":
        if result.stop_reason:
            print(f"[{result.stop_reason}: best answer so far, the last output of the code]")
        else:
            spent = count(result.iterations, "iteration")
            print(f"[budget exhausted after {spent}: best-effort answer]")
        print(result.answer_text())
    elif result.status == "answered":
        print(result.answer_text())


def resume_hint(thread: str) -> str:
    """How to continue a durable run that stopped: the thread kept every completed step."""
    return f"every completed step is saved: run the same command with --thread {thread} to continue"


def open_terminal() -> tuple[TextIO, TextIO]:
    """The controlling terminal, to ask a person about code (stdin may be the context)."""
    try:
        terminal = open("/dev/tty", "r+", encoding="utf-8")  # noqa: SIM115 - lives for the run
    except OSError as exc:
        raise UsageError("--approve-code asks at a terminal, and this process has none") from exc
    return terminal, terminal


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
    approve = terminal_approver(*open_terminal()) if args.approve_code else None
    settings = replace(settings, approve_code=approve is not None)
    reporter = reporter_for(args.quiet or approve is not None)  # the prompt owns the terminal
    check_models(settings)
    ref = read_context(args.context, sys.stdin)
    trace = Path(args.trace) if args.trace else None
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
                    reporter,
                    durable=(durable, config),
                    trace=trace,
                    approve=approve,
                )
        except PersistenceError as exc:
            raise UsageError(str(exc)) from exc
        except KeyboardInterrupt:
            print(f"rlm: interrupted; {resume_hint(thread)}", file=sys.stderr)
            return EXIT_INTERRUPTED
    elif approve is not None:  # a pause needs a checkpointer: one in memory, for this run
        thread = ""
        paused = build_graph(checkpointer=InMemorySaver())
        config = run_config(settings, {"configurable": {"thread_id": uuid.uuid4().hex}})
        result = run_graph(
            args.question,
            ref,
            settings,
            reporter,
            durable=(paused, config),
            trace=trace,
            approve=approve,
        )
    else:
        thread = ""
        result = run_graph(args.question, ref, settings, reporter, trace=trace)
    print_answer(result, args.json)
    if result.status == "failed":
        print(f"rlm: error: {result.error or 'the run failed'}", file=sys.stderr)
        if thread:
            print(f"rlm: {resume_hint(thread)}", file=sys.stderr)
    elif not args.quiet:
        print(f"rlm: {summary(result)}", file=sys.stderr)
        for line in token_lines(result.tokens, result.cost):
            print(f"rlm:   {line}", file=sys.stderr)
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
        "Tokens: " + "; ".join(token_lines(result.tokens, result.cost)),
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
        trace = Path(args.trace) if args.trace else None
        result = run_graph(demo.QUESTION, ref, settings, reporter_for(quiet=False), trace=trace)
    correct = result.status == "answered" and result.answer == context.expected()
    if args.json:
        report = {**result.to_json(), "expected": context.expected(), "correct": correct}
        print(json.dumps({**report, "offline": True, "context_file": str(saved)}))
    else:
        print("\n" + "\n".join(demo_report(result, context, correct, saved)))
    return EXIT_OK if correct else EXIT_FAILED


# -- rlm view ---------------------------------------------------------------------------


def view_command(args: argparse.Namespace) -> int:
    """``rlm view``: a trace as one offline HTML page."""
    records = read_lines_of(args.trace)
    if is_official(records):
        trajectory = to_trajectory(parse_official(records, args.trace))
    else:
        trajectory = trajectory_from(records, args.trace)
    out = Path(args.output) if args.output else Path(args.trace).with_suffix(".html")
    try:
        out.write_text(render_html(trajectory), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}") from exc
    print(out)
    return EXIT_OK


def export_command(args: argparse.Namespace) -> int:
    """``rlm export``: a trace in the official library's log format."""
    out = Path(args.output) if args.output else Path(args.trace).with_suffix(".official.jsonl")
    write_official(read_trajectory(args.trace), out)
    print(out)
    return EXIT_OK


# -- rlm eval ---------------------------------------------------------------------------


def eval_command(args: argparse.Namespace) -> int:
    """``rlm eval``: the paper's tasks by the paper's methods, scored (``rlm_graph.eval``)."""
    try:
        settings = settings_from(args)
        if not args.offline:
            check_models(settings)
        return eval_cli.run(args, settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


# -- parser -----------------------------------------------------------------------------


def _setting(name: str) -> Field[Any]:
    """The definition of one setting: its default and description live only there."""
    return next(f for f in fields(Settings) if f.name == name)


def setting_help(name: str) -> str:
    """A flag's help: the setting's own description, so CLI and Studio never disagree."""
    field = _setting(name)
    default = f" (default: {field.default})" if field.default != "" else ""
    return (str(field.metadata["description"]) + default).replace("%", "%%")


def add_model_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``--model``, the settings flags and ``--prices``, shared by ``rlm run`` and ``rlm eval``."""
    parser.add_argument(
        "--model",
        default=os.environ.get("RLM_MODEL") or _setting("model").default,
        metavar="MODEL",
        help="root model as provider:name, e.g. openai:gpt-5, anthropic:claude-sonnet-4-5; "
        "with --base-url a bare name is served by that OpenAI-compatible server "
        f"(default: $RLM_MODEL, else {_setting('model').default})",
    )
    for name, kind, metavar in RUN_FLAGS:
        flag = "--" + name.replace("_", "-")
        if name in skip:
            parser.set_defaults(**{name: None})
        else:
            parser.add_argument(
                flag, dest=name, type=kind, metavar=metavar, help=setting_help(name)
            )
    parser.add_argument(
        "--prices",
        metavar="FILE",
        help='JSON price table, {"model": {"input": $, "output": $, "cached_input": $}} per '
        "million tokens, over the built-in one",
    )


def trace_command(
    commands: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    output: tuple[str, str],
) -> None:
    """A subcommand that reads TRACE and writes one file (``-o``): ``view``, ``export``."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("trace", metavar="TRACE", help="a trace written by rlm run --trace")
    parser.add_argument("-o", "--output", metavar=output[0], help=output[1])
    parser.set_defaults(handler=handler)


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
    add_model_flags(run)
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
    run.add_argument("--trace", metavar="FILE", help=TRACE_HELP)
    run.add_argument(
        "--approve-code",
        action="store_true",
        help="show each cell before it runs and ask at the terminal: run it, edit it "
        "($EDITOR) or refuse it (the model is told why)",
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
    demo_parser.add_argument("--trace", metavar="FILE", help=TRACE_HELP)
    demo_parser.add_argument("--json", action="store_true", help="print one JSON object")
    demo_parser.set_defaults(handler=demo_command)

    eval_parser = commands.add_parser(
        "eval",
        help="score the RLM against the plain model on the paper's long-context tasks",
        description="Generate S-NIAH, OOLONG, OOLONG-Pairs and multi-hop tasks at any "
        "size (seeded, offline), run them by the paper's methods and report accuracy, "
        "time, tokens and dollars per method. Runs are appended to a results file as "
        "they end, so an interrupted eval resumes. See docs/eval.md.",
    )
    eval_cli.add_arguments(eval_parser)
    add_model_flags(eval_parser, skip=("max_depth",))
    eval_parser.set_defaults(handler=eval_command)
    from rlm_graph.cli import mcp  # here: it imports this module's helpers

    mcp.add_command(commands)

    trace_command(
        commands,
        "view",
        view_command,
        help="turn a trace (--trace FILE, or an official RLM log) into one offline HTML page",
        description="Write TRACE as an HTML page that opens offline: iterations with their "
        "code and output, sub-calls and sub-RLMs, a timeline, tokens and cost.",
        output=("HTML", "where to write the page (default: TRACE.html)"),
    )
    trace_command(
        commands,
        "export",
        export_command,
        help="write a trace in the official RLM library's log format",
        description="Write TRACE as the official RLM library's JSONL log (a metadata line, "
        "then one line per iteration), which its visualizer opens.",
        output=("JSONL", "default: TRACE.official.jsonl"),
    )
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
    except (UsageError, TraceError) as exc:
        print(f"rlm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
