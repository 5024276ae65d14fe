"""``rlm demo``: the real stack against a scripted stand-in model, checked against the truth.

Graph, sandbox and OpenAI client are real; only the models are a script on loopback
(``offline/demo.py``), so the demo needs no key and no network, and says so first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from rlm_graph.cli.common import EXIT_FAILED, EXIT_OK, UsageError
from rlm_graph.cli.summary import summary, token_lines
from rlm_graph.graph import graph
from rlm_graph.graph.runner import RLMResult, Run, run_graph
from rlm_graph.models.pricing import FREE
from rlm_graph.observe.progress import reporter_for
from rlm_graph.offline import demo
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import blob_dir, blob_name, store_value

MAX_DEMO_MB = 100.0


def demo_settings(base_url: str) -> Settings:
    """Both models at the stand-in, named apart so the token table shows both.

    The stand-in plays a hosted model, although it listens on 127.0.0.1, but is priced
    at $0: a first run that ends "cost unknown (no price for rlm-demo-root ...)" reads as
    something the user must fix.
    """
    return Settings(
        model=demo.ROOT_MODEL,
        sub_model=demo.SUB_MODEL,
        base_url=base_url,
        server_profile="hosted",
        prices={demo.ROOT_MODEL: FREE, demo.SUB_MODEL: FREE},
    )


def demo_banner(base_url: str, context: demo.DemoContext) -> str:
    """Said before anything runs, so nobody mistakes the stand-in's answers for a model's."""
    return (
        f"Offline demo: root and sub model are a scripted stand-in at {base_url}; "
        "graph, sandbox and client are real.\n"
        f"Context: {len(context.text):,} characters of synthetic service logs "
        f"({context.lines:,} lines).\n"
        f"Question: {demo.QUESTION}"
    )


def rlm_command() -> str:
    """How to type ``rlm`` from here: bare when the shell finds this same script.

    ``make demo`` runs ``.venv/bin/rlm`` without activating the venv, so the bare name
    would not be found by a shell that types the hint as shown.
    """
    script = Path(sys.executable).with_name("rlm")
    found = shutil.which("rlm")
    if found and Path(found).resolve() == script.resolve():
        return "rlm"
    shown = os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)
    return shlex.quote(shown)


def demo_report(
    result: RLMResult, context: demo.DemoContext, correct: bool, saved: Path
) -> list[str]:
    """What the demo tells a human: the answer, whether it is right, the cost, what next."""
    root_tokens = result.tokens.get(demo.ROOT_MODEL, {}).get("input_tokens", 0)
    verdict = "correct" if correct else f"WRONG, expected {json.dumps(context.expected())}"
    rlm = rlm_command()
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
        f'  OPENAI_API_KEY=sk-... {rlm} run --context "$CTX" {shlex.quote(demo.QUESTION)}',
        "or any OpenAI-compatible server (vLLM, llama.cpp, Ollama):",
        f'  {rlm} run --base-url http://localhost:8000/v1 --model MODEL --context "$CTX" "..."',
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
        run = Run(
            question=demo.QUESTION,
            settings=demo_settings(server.base_url),
            graph=graph,
            context_ref=ref,
            sink=reporter_for(quiet=False),
            trace=args.trace,
            catch=True,
        )
        result = run_graph(run)
    correct = result.status == "answered" and result.answer == context.expected()
    if args.json:
        report = {**result.to_json(), "expected": context.expected(), "correct": correct}
        print(json.dumps({**report, "offline": True, "context_file": str(saved)}))
    else:
        print("\n" + "\n".join(demo_report(result, context, correct, saved)))
    return EXIT_OK if correct else EXIT_FAILED
