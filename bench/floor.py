"""The floor: a minimal exec()-based RLM loop in the style of rlm-minimal.

It does the least an RLM can do (one chat client, a regex for ```repl blocks, ``exec`` in
a dict, output appended to the conversation) with no sandbox, state, checkpoints or
budget. Whatever the graph spends beyond this is the price of those features.
"""

from __future__ import annotations

import io
import re
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

SYSTEM = "Answer the question. `context` is a variable in a Python REPL; run ```repl blocks."
_REPL = re.compile(r"```repl\n(.*?)```", re.DOTALL)
_FINAL = re.compile(r"^\s*FINAL(_VAR)?\((.*)\)\s*$", re.MULTILINE)
_DONE = object()
CHILD = "Answer for the calling program from `context`."


def client(model: str, base_url: str) -> ChatOpenAI:
    """A chat client on the stub, without retries."""
    return ChatOpenAI(model=model, base_url=base_url, api_key=SecretStr("x"), max_retries=0)


def run_floor(
    question: str,
    context: Any,
    *,
    base_url: str,
    max_iterations: int = 100,
    max_depth: int = 1,
    concurrency: int = 128,
) -> tuple[Any, int]:
    """Answer like an RLM with nothing but ``exec``; returns (answer, iterations).

    Below ``max_depth`` a sub-call is a whole floor run on the prompt; ``llm_batch``
    runs sub-calls on a pool of ``concurrency`` threads.
    """
    llm, sub = client("stub-root", base_url), client("stub-sub", base_url)
    final: list[Any] = [_DONE]
    ns: dict[str, Any] = {"context": context}

    def query(prompt: str) -> Any:
        if max_depth > 1:
            return run_floor(CHILD, prompt, base_url=base_url, max_depth=max_depth - 1)[0]
        return sub.invoke([HumanMessage(prompt)]).content

    ns["llm_query"] = query
    ns["llm_batch"] = lambda prompts: list(ThreadPoolExecutor(concurrency).map(query, prompts))
    ns["FINAL"] = lambda value: final.__setitem__(0, value)
    ns["FINAL_VAR"] = lambda name: final.__setitem__(0, ns[name])
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    for iteration in range(1, max_iterations + 1):
        reply = llm.invoke(messages)
        assert isinstance(reply, AIMessage) and isinstance(reply.content, str)
        messages.append(reply)
        out = io.StringIO()
        for code in _REPL.findall(reply.content):
            with redirect_stdout(out):
                try:
                    exec(code, ns)
                except Exception:
                    traceback.print_exc(file=out)
        outside = _REPL.sub("", reply.content)
        if final[0] is _DONE and (match := _FINAL.search(outside)):
            final[0] = ns[match.group(2).strip("'\" ")] if match.group(1) else match.group(2)
        if final[0] is not _DONE:
            return final[0], iteration
        messages.append(HumanMessage(f"REPL output:\n{out.getvalue()[:20_000]}"))
    return None, max_iterations
