"""``rlm run`` (and ``llm rlm``): ask a question about a large context.

stdout carries only the answer (or one JSON object) so ``rlm run ... > answer.txt`` and
pipes work; progress and errors go to stderr. Mistakes a user can fix (no key, a
missing file, a setting out of range) are found before any work starts and reported
in one line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from langgraph.checkpoint.memory import InMemorySaver

from rlm_graph.cli.common import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    UsageError,
    flag_values,
    settings_from,
)
from rlm_graph.cli.summary import summary, token_lines
from rlm_graph.graph import build_graph, graph
from rlm_graph.graph.approval import terminal_approver
from rlm_graph.graph.runner import Graph, RLMResult, Run, run_graph
from rlm_graph.models.endpoints import check_served
from rlm_graph.models.loading import (
    LLM_PREFIX,
    ModelConfigError,
    load_chat_model,
    missing_credentials,
    split_model_name,
)
from rlm_graph.observe.progress import count, reporter_for
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import (
    ContextError,
    ContextRef,
    ContextWarning,
    store_path,
    store_stream,
)
from rlm_graph.text import valid_text


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """What a run is asked for: ``rlm run``'s flags, or ``llm rlm``'s translated to them."""

    question: str
    context: str | None  # a file or folder, or "-" for stdin; None: the thread's own
    model: str
    settings: dict[str, Any] = field(default_factory=dict)  # RUN_FLAGS by name; None: unset
    prices: str | None = None  # a JSON price table file
    trace: str | None = None  # where to write the trajectory
    checkpoint: str | None = None  # a SQLite file or postgresql:// URL: a durable thread
    thread: str | None = None  # the thread in the checkpoint (default: a new one)
    wait: bool = False  # wait while another process runs the thread (else exit 2)
    approve_code: bool = False  # ask at the terminal before each cell runs
    as_json: bool = False  # print one JSON object, not the answer
    quiet: bool = False  # no progress on stderr

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunRequest:
        """The request ``rlm run``'s parsed flags make."""
        return cls(
            question=args.question,
            context=args.context,
            model=args.model,
            settings=flag_values(args),
            prices=args.prices,
            trace=args.trace,
            checkpoint=args.checkpoint,
            thread=args.thread,
            wait=args.wait,
            approve_code=args.approve_code,
            as_json=args.json,
            quiet=args.quiet,
        )


def run_command(args: argparse.Namespace) -> int:
    """``rlm run``."""
    return run_request(RunRequest.from_args(args))


def run_request(request: RunRequest) -> int:
    """Every check first, then the run, then the answer and its exit code."""
    if not request.question.strip():
        raise UsageError('the question is empty: rlm run --context FILE "your question"')
    try:
        settings = settings_from(request.model, request.settings, request.prices)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    check_thread(request.thread, request.checkpoint)
    approve = terminal_approver(*open_terminal()) if request.approve_code else None
    settings = replace(settings, approve_code=approve is not None)
    reporter = reporter_for(request.quiet or approve is not None)  # the prompt owns the terminal
    if request.context is None and not request.thread:
        raise UsageError("--context is needed (a file, a folder, or - for stdin)")
    # A follow-up on a thread may leave the context out: the thread keeps its own.
    context_ref = (
        None if request.context is None else read_context(request.context, sys.stdin, settings)
    )
    check_models(settings)  # after the context's checks: this one may ask the server
    run = Run(
        question=request.question,
        settings=settings,
        graph=graph,
        context_ref=context_ref,
        sink=reporter,
        trace=request.trace,
        approve=approve,
        catch=True,  # a model or network failure is a failed result: one outcome to print
    )
    if request.checkpoint:
        return run_durable(run, request.checkpoint, request)
    if approve is not None:  # a pause needs a checkpointer: one in memory, for this run
        run = on_thread(run, build_graph(checkpointer=InMemorySaver()), uuid.uuid4().hex)
    return finish(run_graph(run), request)


def check_thread(thread: str | None, checkpoint: str | None) -> None:
    """A thread lives in a checkpoint, under a name the checkpoint can store."""
    if thread and not checkpoint:
        raise UsageError("--thread needs --checkpoint FILE: a thread lives in a checkpoint file")
    if thread and valid_text(thread) != thread:  # argv bytes that are not UTF-8
        raise UsageError(f"--thread {thread!r} is not UTF-8 text: name the thread in UTF-8")


def run_durable(run: Run, checkpoint: str, request: RunRequest) -> int:
    """The run on a thread kept in ``checkpoint``: a thread cut off on it resumes."""
    # Imported here: the SQLite store brings numpy (16 MB and 0.05 s CPU, measured) that a
    # run without --checkpoint never uses.
    from rlm_graph.storage.persistence import PersistenceError, open_persistence
    from rlm_graph.storage.thread_lock import ThreadBusy, thread_lock

    thread = request.thread or uuid.uuid4().hex[:12]
    if not request.thread:
        print(f"rlm: thread {thread} (resume or follow up with --thread {thread})", file=sys.stderr)
    try:
        with (
            open_persistence(checkpoint) as persistence,
            thread_lock(checkpoint, thread, waiting(thread) if request.wait else None),
        ):
            durable = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
            result = run_graph(on_thread(run, durable, thread))
    except ThreadBusy as exc:
        raise UsageError(f"{exc}: run again when it ends, or add --wait to wait for it") from exc
    except PersistenceError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        print(f"rlm: interrupted; {resume_hint(thread)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return finish(result, request, thread)


def on_thread(run: Run, checkpointed: Graph, thread: str) -> Run:
    """``run`` on ``thread`` of a checkpointed graph; a kill loses no completed step."""
    return replace(
        run,
        graph=checkpointed,
        config={"configurable": {"thread_id": thread}},
        durability="sync",  # each step is saved before the next starts
        on_resume=resuming(thread),
    )


def waiting(thread: str) -> Callable[[], None]:
    """What to say when ``--wait`` waits for another process's run of the thread."""

    def say() -> None:
        print(
            f"rlm: thread {thread} is running in another process: waiting for it to end",
            file=sys.stderr,
        )

    return say


def resuming(thread: str) -> Callable[[int], None]:
    """What to say when a thread cut off on this question continues."""

    def say(step: int) -> None:
        print(
            f"rlm: resuming thread {thread} after iteration {step}: completed "
            "steps are not run (or paid for) again",
            file=sys.stderr,
        )

    return say


def finish(result: RLMResult, request: RunRequest, thread: str = "") -> int:
    """The answer on stdout, how the run went on stderr; the exit code."""
    print_answer(result, request.as_json)
    if result.status == "failed":
        print(f"rlm: error: {result.error or 'the run failed'}", file=sys.stderr)
        if thread:
            print(f"rlm: {resume_hint(thread)}", file=sys.stderr)
    elif not request.quiet:
        print(f"rlm: {summary(result)}", file=sys.stderr)
        for line in token_lines(result.tokens, result.cost):
            print(f"rlm:   {line}", file=sys.stderr)
    return EXIT_CODES.get(result.status, EXIT_FAILED)


def check_models(settings: Settings) -> None:
    """Fail now on a missing key, an unusable model name or an unreachable server.

    Building the clients makes no request, and they are cached for the run itself; an
    OpenAI-compatible server is asked once for the models it serves.
    """
    pairs = {
        (settings.model, settings.base_url),
        (settings.effective_sub_model, settings.effective_sub_base_url),
    }
    for name, base_url in sorted(pairs):
        if problem := missing_credentials(name, base_url):
            raise UsageError(problem)
        try:
            load_chat_model(
                name,
                base_url,
                settings.model_timeout,
                settings.model_max_retries,
                max_tokens=settings.reply_cap(name),
            )
            provider, model = split_model_name(name, base_url)
            if base_url and provider == "openai" and not name.startswith(LLM_PREFIX):
                check_served(model, base_url)
        except ModelConfigError as exc:
            raise UsageError(str(exc)) from exc


def read_context(source: str, stdin: TextIO, settings: Settings) -> ContextRef:
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
                ref = store_path(
                    Path(source), settings.lazy_folder_files, settings.lazy_context_mb << 20
                )
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
