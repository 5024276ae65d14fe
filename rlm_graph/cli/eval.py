"""``rlm eval``: the paper's tasks by the paper's methods, scored (``rlm_graph.eval``).

Its flags and their checks live in ``eval/flags.py``; this runs what they describe,
online against the user's models, or offline against a scripted policy and an oracle.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rlm_graph.cli.common import UsageError, flag_values, settings_from
from rlm_graph.cli.run import check_models
from rlm_graph.eval import policies, report
from rlm_graph.eval.flags import DEFAULT_OFFLINE_OUT, DEFAULT_OUT, plan_from, window_from
from rlm_graph.eval.oracle import ORACLE_MODEL
from rlm_graph.eval.plan import Plan
from rlm_graph.eval.results import ResultsFile
from rlm_graph.eval.runner import Eval, evaluate, summary_json, usage_models
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.settings import Settings

FREE = {"input": 0.0, "output": 0.0}


def eval_command(args: argparse.Namespace) -> int:
    """``rlm eval``: every check first (settings, models, flags), then the eval."""
    try:
        settings = settings_from(args.model, flag_values(args), args.prices)
        if not args.offline:
            check_models(settings)
        return run(args, settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


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
    # No request log: an oolong run at 1b tokens sends 4 GB of prompts, and the eval reads
    # what it needs (usage) from the replies.
    with StubServer(policies.respond, keep=0) as server:
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
