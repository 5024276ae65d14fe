"""Each framework's own call on a string, importing nothing but that framework.

``python -m bench.calls PEER BASE_URL CONTEXT_FILE QUESTION`` runs one call in a fresh
process and prints the answer: the cold figure times that whole process, so it must not
pay for rlm-graph's imports (nor the stub's) on a peer's behalf, nor a peer's on
rlm-graph's (``graph``: ``rlm_graph.answer`` as an embedder calls it, the context a
string). Both models are :data:`ROOT_MODEL` and :data:`SUB_MODEL` at ``BASE_URL``; no
retries, no cache.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT_MODEL = "stub-root"
SUB_MODEL = "stub-sub"


def run_rlms(
    question: str, context: Any, base_url: str, *, max_iterations: int, max_depth: int
) -> Any:
    """rlms' ``RLM.completion`` on its local REPL; returns its answer."""
    from rlm import RLM

    def client(model: str) -> dict[str, Any]:
        return {"model_name": model, "base_url": base_url, "api_key": "x", "max_retries": 0}

    rlm = RLM(
        backend="openai",
        backend_kwargs=client(ROOT_MODEL),
        other_backends=["openai"],
        other_backend_kwargs=[client(SUB_MODEL)],
        environment="local",
        max_iterations=max_iterations,
        max_depth=max_depth,
    )
    return rlm.completion(context, root_prompt=question).response


def run_dspy(question: str, context: Any, base_url: str, *, max_iterations: int) -> Any:
    """dspy's ``RLM`` on its ``LocalInterpreter``; returns its answer.

    Its default Deno/Pyodide sandbox imports from deno.land and cannot start offline.
    """
    import dspy
    from dspy.primitives.local_interpreter import LocalInterpreter

    def lm(model: str) -> Any:
        return dspy.LM(
            f"openai/{model}", api_base=base_url, api_key="x", cache=False, num_retries=0
        )

    sub = lm(SUB_MODEL)
    with dspy.context(lm=lm(ROOT_MODEL)):
        rlm = dspy.RLM(
            "context, query -> answer",
            max_iters=max_iterations,
            max_llm_calls=100_000,
            sub_lm=sub,
            interpreter_factory=LocalInterpreter,
        )
        return rlm(context=context, query=question).answer


def run_graph(question: str, context: Any, base_url: str, *, max_iterations: int) -> Any:
    """rlm-graph's ``answer`` on ``context`` as given; returns its answer."""
    from rlm_graph.api import answer

    return answer(
        question,
        context,
        model=ROOT_MODEL,
        sub_model=SUB_MODEL,
        base_url=base_url,
        model_max_retries=0,
        max_iterations=max_iterations,
    ).answer


def main(argv: list[str]) -> None:
    """One call, as a script would make it: read the file, ask, print the answer."""
    peer, base_url, path, question = argv
    context = Path(path).read_text(encoding="utf-8")
    if peer == "graph":
        print(run_graph(question, context, base_url, max_iterations=3))
    elif peer == "rlms":
        print(run_rlms(question, context, base_url, max_iterations=3, max_depth=1))
    elif peer == "dspy":
        print(run_dspy(question, context, base_url, max_iterations=3))
    else:
        raise SystemExit(f"bench.calls: unknown peer {peer!r} (graph, rlms or dspy)")


if __name__ == "__main__":
    main(sys.argv[1:])
