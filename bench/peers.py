"""The four frameworks behind one call, each fed the same cells in its own answer protocol.

A workload is written once in a neutral dialect and translated per framework:

- ``QUERY(p)``: one plain sub-call; ``BATCH(ps)``: concurrent sub-calls;
  ``RECURSE(p)``: a sub-RLM on ``p`` (depth 2);
- ``DONE(expr)`` on its own line: end the run with ``expr``.

rlm-graph gets tool calls and ``await``s its async helpers; the floor and rlms get
```` ```repl ```` blocks (rlms ends with ``answer["ready"] = True`` and its batch is
synchronous); dspy gets its ChatAdapter fields and ``SUBMIT``. dspy runs on its
``LocalInterpreter`` (a subprocess worker): its default Deno/Pyodide sandbox imports
from deno.land and cannot start offline.

The stub answers every framework the same way. A root request (system prompt first)
whose text holds :data:`ROOT_MARK` (the question) is the root model; any other root
request is a sub-RLM; a request without a system prompt is a plain sub-call. The step
wanted is read off the request: dspy states ``iteration: k/n``, the others carry one
assistant message per earlier step.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.calls import run_dspy, run_rlms
from bench.common import stub_settings
from rlm_graph.offline.stub_server import (
    StubReply,
    StubServer,
    all_text,
    is_root_request,
    last_user_text,
    replies_so_far,
)
from rlm_graph.offline.stub_server import fenced_reply as fenced
from rlm_graph.offline.stub_server import tool_reply as tool

PEERS = ("floor", "graph", "rlms", "dspy")
ROOT_MARK = "[bench root]"
_DSPY_STEP = re.compile(r"\[\[ ## iteration ## \]\]\s*(\d+)/")
_DONE = re.compile(r"^DONE\((.*)\)$", re.MULTILINE)
STARTUP = {
    # What a process does once before its first call: imports, including those the
    # model clients make lazily on first construction (httpx's transport, ~0.25 s).
    "floor": "import bench.floor as f; f.client('x', 'http://127.0.0.1:9/v1')",
    # ... and rlm-graph starts its sandbox zygote (with a warm spare child) once per process
    "graph": "import rlm_graph.api, rlm_graph.models.loading as m, rlm_graph.repl.process as p; "
    "p.warm_up(); m.load_chat_model('x', 'http://127.0.0.1:9/v1', 1, 0)",
    "rlms": "import rlm",
    "dspy": "import dspy, dspy.primitives.local_interpreter",
}
_DSPY_CHILD = "__import__('dspy').RLM('context, query -> answer')(context={}, query='part').answer"


def available() -> tuple[str, ...]:
    """The frameworks installed here: rlms and dspy come with the ``bench`` extra."""
    packages = {"rlms": "rlm", "dspy": "dspy"}
    return tuple(p for p in PEERS if p not in packages or importlib.util.find_spec(packages[p]))


def prepare(peer: str) -> None:
    """Pay ``peer``'s process start-up, so a timed run does not include it."""
    exec(STARTUP[peer], {})


def translate(peer: str, cell: str) -> str:
    """A neutral cell in ``peer``'s dialect."""
    query, batch, recurse = {
        "graph": ("await llm_query(", "await llm_batch(", "await llm_query("),
        "floor": ("llm_query(", "llm_batch(", "llm_query("),
        "rlms": ("llm_query(", "llm_query_batched(", "rlm_query("),
        "dspy": ("llm_query(", "llm_query_batched(", "_sub_rlm("),
    }[peer]
    code = cell.replace("QUERY(", query).replace("BATCH(", batch).replace("RECURSE(", recurse)
    if peer == "rlms":
        return _DONE.sub(r'answer["content"] = \1\nanswer["ready"] = True', code)
    if peer == "dspy":
        if "_sub_rlm(" in code:
            code = f"_sub_rlm = lambda p: {_DSPY_CHILD.format('p')}\n{code}"
        return _DONE.sub(r"SUBMIT(\1)", code)
    return _DONE.sub(r"FINAL(\1)", code)


def reply(peer: str, cell: str) -> StubReply:
    """The root model's reply that runs ``cell`` in ``peer``."""
    code = translate(peer, cell)
    if peer == "graph":
        return tool(code)
    if peer == "dspy":
        return StubReply(
            content=f"[[ ## reasoning ## ]]\nNext step.\n\n[[ ## code ## ]]\n```python\n{code}\n"
            "```\n\n[[ ## completed ## ]]"
        )
    return fenced(code)


def step_of(body: dict[str, Any]) -> int:
    """The 0-based step a root request asks for, in any framework."""
    found = _DSPY_STEP.search(last_user_text(body))
    return int(found.group(1)) - 1 if found else replies_so_far(body)


def is_root_model(body: dict[str, Any]) -> bool:
    """The top-level root model (not a sub-RLM, not a plain sub-call)."""
    return is_root_request(body) and ROOT_MARK in all_text(body)


Sub = Callable[[str], StubReply | str]


def responder(
    peer: str, cells: Sequence[str], sub: Sub | None = None, child: Sequence[str] = ()
) -> Callable[[dict[str, Any]], StubReply | str]:
    """The stub's script: root cells by step, sub-RLM cells by step, sub-calls by ``sub``."""
    root = [reply(peer, c) for c in cells]
    kids = [reply(peer, c) for c in child]

    def respond(body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            script = root if ROOT_MARK in all_text(body) or not kids else kids
            return script[min(step_of(body), len(script) - 1)]
        prompt = last_user_text(body)
        return sub(prompt) if sub is not None else "ok"

    return respond


@dataclass(frozen=True)
class Job:
    """One run of a framework: what to ask, on what, with which limits."""

    question: str
    context: Any
    max_iterations: int = 60
    max_depth: int = 1
    concurrency: int = 128
    """rlm-graph's ``max_concurrency`` and the floor's pool; rlms (16) and dspy (8) fix theirs."""


def run(peer: str, job: Job, server: StubServer) -> Any:
    """Run ``job`` on ``peer`` against ``server``; returns the framework's answer."""
    question = f"{ROOT_MARK} {job.question}"
    if peer == "graph":
        from rlm_graph import answer

        result = answer(
            question,
            job.context,
            **stub_settings(
                server,
                max_iterations=job.max_iterations,
                max_depth=job.max_depth,
                max_concurrency=job.concurrency,
                max_sub_calls=100_000,
            ),
        )
        if result.error:
            raise RuntimeError(f"graph failed: {result.error}")
        return result.answer
    if peer == "floor":
        from bench.floor import run_floor

        value, _ = run_floor(
            question,
            job.context,
            base_url=server.base_url,
            max_iterations=job.max_iterations,
            max_depth=job.max_depth,
            concurrency=job.concurrency,
        )
        return value
    if peer == "rlms":
        return run_rlms(
            question,
            job.context,
            server.base_url,
            max_iterations=job.max_iterations,
            max_depth=job.max_depth,
        )
    if peer == "dspy":
        return run_dspy(question, job.context, server.base_url, max_iterations=job.max_iterations)
    raise ValueError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")


def prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a request at 4 characters a token, tool schemas and calls included.

    The stub's own ``usage`` counts message text only, which would leave out the tool
    schema and the tool-call code rlm-graph sends; this counts what crosses the wire
    as content.
    """
    chars = len(all_text(body))
    for message in body.get("messages") or []:
        for call in message.get("tool_calls") or []:
            chars += len(call["function"]["arguments"])
    if body.get("tools"):
        chars += len(str(body["tools"]))
    return math.ceil(chars / 4)
