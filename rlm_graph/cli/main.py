"""The ``rlm`` command: its parser, and the dispatch to one module per subcommand.

The parser is built from light modules only (``cli/common.py``, ``settings``, the eval
flags), and a subcommand's module is imported when that subcommand runs: ``rlm --help``
or a mistyped flag answers without importing LangGraph, LangChain or the sandbox.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from rlm_graph.allocator import return_freed_blocks
from rlm_graph.cli.common import (
    EXIT_HELP,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    TRACE_HELP,
    OneLineParser,
    UsageError,
    add_model_flags,
)
from rlm_graph.eval import flags as eval_flags
from rlm_graph.observe.trajectory import TraceError
from rlm_graph.redact import redact_secrets

Handler = Callable[[argparse.Namespace], int]


def command(
    commands: Any, name: str, runner: str, *, help: str, description: str, sandbox: bool = False
) -> argparse.ArgumentParser:
    """A subcommand's parser, and what runs it.

    ``runner`` is ``"<module>.<function>"`` in ``rlm_graph.cli``, imported when the
    subcommand runs. ``sandbox``: the subcommand opens a sandbox, so a one-shot process
    starts it first.
    """
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
    module, _, function = runner.partition(".")
    parser.set_defaults(handler=(f"rlm_graph.cli.{module}", function), sandbox=sandbox)
    return parser


def add_run(commands: Any) -> None:
    """``rlm run QUESTION --context PATH``."""
    run = command(
        commands,
        "run",
        "run.run_command",
        sandbox=True,
        help="answer a question about a file, a directory or stdin",
        description="Answer QUESTION about a context too large for a prompt. The answer "
        f"goes to stdout; progress goes to stderr. {EXIT_HELP}",
    )
    run.add_argument("question", help="the question to answer")
    run.add_argument(
        "--context",
        metavar="PATH",
        help="a text file, a .json file (parsed), a directory (read as {relative path: "
        "text}), or - for stdin; a follow-up on --thread may leave it out",
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
    run.add_argument(
        "--wait",
        action="store_true",
        help="if another process is running --thread, wait for it to end (default: exit 2 "
        "at once; one process writes a thread at a time)",
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


def add_threads(commands: Any) -> None:
    """``rlm threads --checkpoint FILE``."""
    threads = command(
        commands,
        "threads",
        "threads.threads_command",
        help="list the threads kept in a checkpoint file, with their status",
        description="List the threads in a checkpoint file (or postgresql:// URL): "
        "question, status, iterations, and whether a run was cut off and can resume.",
    )
    threads.add_argument("--checkpoint", required=True, metavar="FILE|URL")
    threads.add_argument("--json", action="store_true", help="print one JSON object per line")


def add_demo(commands: Any) -> None:
    """``rlm demo``."""
    demo = command(
        commands,
        "demo",
        "demo.demo_command",
        sandbox=True,
        help="run the whole stack offline against a scripted model",
        description="Run the real graph, sandbox and OpenAI client against a scripted "
        "stand-in model on 127.0.0.1: no key and no network needed.",
    )
    demo.add_argument(
        "--size-mb",
        type=float,
        default=2.0,
        metavar="N",
        help="size of the synthetic log in MB (default: %(default)g)",
    )
    demo.add_argument("--trace", metavar="FILE", help=TRACE_HELP)
    demo.add_argument("--json", action="store_true", help="print one JSON object")


def add_eval(commands: Any) -> None:
    """``rlm eval``."""
    evaluation = command(
        commands,
        "eval",
        "eval.eval_command",
        help="score the RLM against the plain model on the paper's long-context tasks",
        description="Generate S-NIAH, OOLONG, OOLONG-Pairs and multi-hop tasks at any "
        "size (seeded, offline), run them by the paper's methods and report accuracy, "
        "time, tokens and dollars per method. Runs are appended to a results file as "
        "they end, so an interrupted eval resumes. See docs/eval.md.",
    )
    eval_flags.add_arguments(evaluation)
    add_model_flags(evaluation, skip=("max_depth",))


def add_mcp(commands: Any) -> None:
    """``rlm mcp FOLDER...``."""
    parser = command(
        commands,
        "mcp",
        "mcp.mcp_command",
        help="serve the RLM to MCP hosts (Claude Desktop, Claude Code, Cursor, ...)",
        description="Serve the tools rlm_answer(question, path) and rlm_followup(thread, "
        "question) over MCP: stdio by default, or streamable HTTP on 127.0.0.1 with "
        "--http PORT. Paths outside FOLDER... are refused. See docs/integrations.md.",
    )
    parser.add_argument(
        "roots", nargs="+", metavar="FOLDER", help="a folder the server may read (and below)"
    )
    add_model_flags(parser)
    parser.add_argument(
        "--checkpoint",
        metavar="FILE|URL",
        help="where threads live: a SQLite file or a postgresql:// URL "
        "(default: $RLM_GRAPH_HOME/threads.sqlite)",
    )
    parser.add_argument(
        "--trace-dir",
        metavar="DIR",
        help="write each call's trajectory to a file here (default: $RLM_GRAPH_HOME/traces)",
    )
    parser.add_argument(
        "--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT"
    )


def add_trace_command(
    commands: Any, name: str, *, help: str, description: str, output: tuple[str, str]
) -> None:
    """A subcommand that reads TRACE and writes one file (``-o``): ``view``, ``export``."""
    parser = command(commands, name, f"traces.{name}_command", help=help, description=description)
    parser.add_argument("trace", metavar="TRACE", help="a trace written by rlm run --trace")
    parser.add_argument("-o", "--output", metavar=output[0], help=output[1])


def build_parser() -> argparse.ArgumentParser:
    """The ``rlm`` argument parser; ``RLM_MODEL`` is read now so tests can set it."""
    parser = OneLineParser(
        prog="rlm",
        description="Recursive Language Models: answer questions about contexts far larger "
        "than a prompt, with code in a sandbox and sub-calls on chunks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run(commands)
    add_threads(commands)
    add_demo(commands)
    add_eval(commands)
    add_mcp(commands)
    add_trace_command(
        commands,
        "view",
        help="turn a trace (--trace FILE, or an official RLM log) into one offline HTML page",
        description="Write TRACE as an HTML page that opens offline: iterations with their "
        "code and output, sub-calls and sub-RLMs, a timeline, tokens and cost.",
        output=("HTML", "where to write the page (default: TRACE.html)"),
    )
    add_trace_command(
        commands,
        "export",
        help="write a trace in the official RLM library's log format",
        description="Write TRACE as the official RLM library's JSONL log (a metadata line, "
        "then one line per iteration), which its visualizer opens.",
        output=("JSONL", "default: TRACE.official.jsonl"),
    )
    return parser


def start_sandbox_early() -> None:
    """Start the sandbox's processes beside the imports instead of after them.

    The zygote and a spare child start and load the runtime on the other core while this
    process spends about a second importing LangGraph and the model client.
    """
    from rlm_graph.repl.process import warm_up

    threading.Thread(target=warm_up, name="rlm-sandbox-start", daemon=True).start()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection inside; what was built inside is frozen out of later ones.

    For the imports of a one-shot process: the objects LangGraph and LangChain build set
    off collections that free nothing (0.3 s of the 1.5 s CPU of a trivial ``rlm run``,
    measured). Not for a caller that lives on (tests call :func:`main`): frozen objects
    are never collected.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None, *, one_shot: bool = False) -> int:
    """Run ``rlm``; returns the exit code instead of raising, so tests call it directly.

    ``one_shot``: this process ends with the command (the console script), so start-up
    may be tuned for it.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already reported
        return int(exit_.code or 0)
    module, function = args.handler
    try:
        if one_shot and args.sandbox:
            start_sandbox_early()
        with collector_paused() if one_shot else nullcontext():
            handler: Handler = getattr(importlib.import_module(module), function)
        return handler(args)
    except (UsageError, TraceError) as exc:
        print(f"rlm: error: {redact_secrets(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console() -> None:
    """The ``rlm`` console script: a process that runs one command and ends."""
    return_freed_blocks()
    raise SystemExit(main(one_shot=True))


if __name__ == "__main__":
    console()
