"""``rlm eval``: flags, checks and the run, for the CLI to register.

Everything a user can get wrong (a size, a task name, a method, a price, a results file
of other models) is checked before the first task is generated, and reported as a
ValueError that the CLI prints in one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rlm_graph.eval import policies, report, windows
from rlm_graph.eval.families import FAMILIES
from rlm_graph.eval.oracle import ORACLE_MODEL
from rlm_graph.eval.results import ResultsFile
from rlm_graph.eval.runner import (
    METHODS,
    OFFLINE_METHODS,
    Eval,
    Plan,
    evaluate,
    summary_json,
    usage_models,
)
from rlm_graph.eval.tasks import parse_size
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.settings import Settings

DEFAULT_OUT = "rlm-eval.jsonl"
DEFAULT_OFFLINE_OUT = "rlm-eval-offline.jsonl"
FREE = {"input": 0.0, "output": 0.0}


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
    return Plan(
        tasks=_names(args.task, FAMILIES, "task"),
        sizes=list(dict.fromkeys(parse_size(s) for s in args.size.split(","))),
        seeds=list(range(args.seed, args.seed + args.n)),
        methods=methods,
    )


def window_from(args: argparse.Namespace, settings: Settings) -> int:
    """The plain model's window: the flag's, else the model's known one."""
    if args.window is not None and args.window < 1:
        raise ValueError(f"--window {args.window} is out of range: use tokens >= 1")
    return int(args.window or windows.window_of(settings.model))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the eval the flags describe; offline, exit 1 unless every run scored 100%."""
    plan = plan_from(args)
    window = window_from(args, settings)
    out = Path(args.out or (DEFAULT_OFFLINE_OUT if args.offline else DEFAULT_OUT))
    if not args.offline:
        results = ResultsFile(out, usage_models(settings))
        return finish(args, plan, Eval(settings, window), results)
    stand_ins = replace(  # they cost nothing, and the table should say so
        settings,
        model=policies.POLICY_MODEL,
        sub_model=ORACLE_MODEL,
        sub_base_url="",
        prices={**settings.prices, policies.POLICY_MODEL: FREE, ORACLE_MODEL: FREE},
    )
    results = ResultsFile(out, usage_models(stand_ins))
    with StubServer(policies.respond) as server:
        if not args.quiet:
            print(
                f"rlm eval: offline, the root model is a scripted policy and the sub model "
                f"an oracle at {server.base_url}; graph, sandbox and client are real",
                file=sys.stderr,
            )
        offline = replace(stand_ins, base_url=server.base_url)
        return finish(args, plan, Eval(offline, window), results)


def finish(args: argparse.Namespace, plan: Plan, config: Eval, results: ResultsFile) -> int:
    """Run the plan, then print the table (or JSON) on stdout."""
    progress = report.ProgressBar(
        plan.total, sys.stderr, live=sys.stderr.isatty(), quiet=args.quiet
    )
    try:
        rows = evaluate(plan, config, results, progress)
    except KeyboardInterrupt:
        progress.close()
        print(f"rlm eval: stopped; the same command resumes from {results.path}", file=sys.stderr)
        raise
    progress.close()
    summaries = report.summarize(rows)
    if args.json:
        print(json.dumps(summary_json(rows, summaries), ensure_ascii=False, default=str))
    else:
        print(report.table(summaries))
        if not args.quiet:
            print(
                f"rlm eval: {len(rows)} runs in {results.path} (rerun to resume)", file=sys.stderr
            )
    missed = [r for r in rows if r["status"] != report.NOT_RUN and r["score"] < 1]
    return 1 if args.offline and missed else 0
