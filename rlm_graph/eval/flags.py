"""``rlm eval``'s flags and their checks, for the CLI to register (it runs them in cli/eval.py).

Everything a user can get wrong (a size, a task name, a method, a price, a results file
of other models) is checked before the first task is generated, and reported as a
ValueError that the CLI prints in one line with exit code 2. Light (no LangChain, no
graph), so ``rlm --help`` builds these flags without importing the graph.
"""

from __future__ import annotations

import argparse

from rlm_graph.eval import windows
from rlm_graph.eval.families import FAMILIES, STREAMED
from rlm_graph.eval.plan import METHODS, OFFLINE_METHODS, Plan
from rlm_graph.eval.tasks import IN_MEMORY_TOKENS, MAX_TOKENS, format_size, parse_size
from rlm_graph.settings import Settings

DEFAULT_OUT = "rlm-eval.jsonl"
DEFAULT_OFFLINE_OUT = "rlm-eval-offline.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``rlm eval`` besides the model flags it shares with ``rlm run``."""
    parser.add_argument(
        "--task",
        default="all",
        metavar="NAMES",
        help=f"comma-separated task families: {', '.join(FAMILIES)}, or all (default: all)",
    )
    parser.add_argument(
        "--size",
        default="32k",
        metavar="SIZES",
        help="comma-separated context sizes in tokens, 8k to 10m, e.g. 32k,131k,1m "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--n", type=int, default=3, metavar="N", help="tasks per family and size (default: 3)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="first seed; tasks use S..S+N-1"
    )
    parser.add_argument(
        "--methods",
        metavar="NAMES",
        help=f"comma-separated, from {', '.join(METHODS)} (default: all; offline: "
        f"{', '.join(OFFLINE_METHODS)})",
    )
    parser.add_argument(
        "--offline",
        "--oracle",
        dest="offline",
        action="store_true",
        help="no key, no network: a scripted root policy and an oracle sub model on "
        "127.0.0.1 stand in for the models; every run must score 100%%",
    )
    parser.add_argument(
        "--window",
        type=int,
        metavar="TOKENS",
        help="context window of --model for the plain-model method (default: known "
        f"models' own, else {windows.DEFAULT_WINDOW:,})",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help=f"results file, one JSON line per run; an existing one is resumed "
        f"(default: {DEFAULT_OUT}, offline: {DEFAULT_OFFLINE_OUT})",
    )
    parser.add_argument("--json", action="store_true", help="print the summary and runs as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    names = list(known) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what} {', '.join(unknown)!r}: choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def plan_from(args: argparse.Namespace) -> Plan:
    """The runs the flags ask for."""
    if args.n < 1:
        raise ValueError(f"--n {args.n} is out of range: use at least 1")
    allowed = OFFLINE_METHODS if args.offline else METHODS
    methods = _names(args.methods or ",".join(allowed), METHODS, "method")
    if not set(methods) <= set(allowed):
        raise ValueError(
            "offline runs measure the framework with the oracle, which only answers "
            f"sub-calls: use --methods {','.join(OFFLINE_METHODS)}"
        )
    tasks = _names(args.task, FAMILIES, "task")
    sizes = list(dict.fromkeys(parse_size(s) for s in args.size.split(",")))
    held = [t for t in tasks if t not in STREAMED]
    if held and max(sizes) > IN_MEMORY_TOKENS:
        raise ValueError(
            f"{', '.join(held)} is built in memory, up to {format_size(IN_MEMORY_TOKENS)} "
            f"tokens; only {', '.join(STREAMED)} are written to disk and go to "
            f"{format_size(MAX_TOKENS)}"
        )
    return Plan(
        tasks=tasks, sizes=sizes, seeds=list(range(args.seed, args.seed + args.n)), methods=methods
    )


def window_from(args: argparse.Namespace, settings: Settings) -> int:
    """The plain model's window: the flag's, else the model's known one."""
    if args.window is not None and args.window < 1:
        raise ValueError(f"--window {args.window} is out of range: use tokens >= 1")
    return int(args.window or windows.window_of(settings.model))
