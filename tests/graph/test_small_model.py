"""A scripted small model still finds the needle: the guards of issue 18 at work.

The policy plays what a 1.5B model did against an 8,192-token llama.cpp server: it
copies the window number as its reply, repeats itself, sends the whole context in one
sub-call and filters out the errors, writes its code as a JSON tool call in a fence and
fences JSON that is no code, and ends a cell with a bare expression instead of a print.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from support import fast_settings, fenced

from rlm_graph import answer
from rlm_graph.eval import niah, oracle
from rlm_graph.eval.policies import question_of
from rlm_graph.graph.prompts import STATED_CHUNK
from rlm_graph.offline import stub_server as stub_api
from rlm_graph.offline.stub_server import LocalServer, StubReply, StubServer
from rlm_graph.settings import Settings

ASK = "f'{INSTRUCTION}\\nKey: {KEY}\\n<<<\\n{text}\\n>>>'"
WHOLE = f"""text = context
r = await llm_batch([{ASK}])
print([a for a in r if not a.startswith('Error')])"""
CHUNKED = f"""chunks = [context[i:i + SIZE] for i in range(0, len(context), SIZE - 200)]
r = await llm_batch([{ASK} for text in chunks])
[a for a in r if not a.startswith('Error') and a.strip() != 'NONE']"""


def as_written_call(code: str) -> str:
    """A tool call written into the text, as llama.cpp sends it with the model's template."""
    call = {"name": "execute_python", "arguments": {"code": code}}
    return f"```json\n{json.dumps(call)}\n```"


def small_model(body: dict[str, Any]) -> StubReply | str:
    """The root model's next reply, by how many it has sent (it reads nothing else)."""
    key = niah.parse_question(question_of(body))
    assert key is not None
    setup = f"INSTRUCTION = {oracle.NEEDLE_INSTRUCTION!r}\nKEY = {key.key!r}\n"
    stated = STATED_CHUNK.search(str(body["messages"][0]["content"]))
    assert stated is not None
    window = stated.group(1)  # the number the system prompt states, copied
    steps: list[str] = [
        window,  # copied as the whole reply: no code
        window,  # and again
        as_written_call(setup + WHOLE),  # one prompt far past the window; errors dropped
        as_written_call(setup + WHOLE),  # the same again
        '```\n{"answer": true}\n```',  # JSON in a fence, not code
        fenced(setup + f"SIZE = {window.replace(',', '_')}\n" + CHUNKED),  # value not printed
    ]
    step = stub_api.replies_so_far(body)
    if step < len(steps):
        return steps[step]
    found = re.findall(r"'(\d{7})'", stub_api.all_text(body))  # in the outputs it has read
    return f"FINAL({found[-1] if found else 'not found'})"


def respond(body: dict[str, Any]) -> StubReply | str:
    return (
        small_model(body)
        if stub_api.is_root_request(body)
        else oracle.reply(stub_api.last_user_text(body))
    )


def test_a_small_models_habits_still_reach_the_needle(stub: Callable[..., StubServer]) -> None:
    task = niah.generate(32_000, seed=7)  # 128,000 characters
    server = stub(respond, local=LocalServer(window_tokens=8192))
    budget = Settings().max_iterations
    result = answer(task.question, task.context, **fast_settings(server, max_iterations=budget))

    assert (result.status, result.answer) == ("answered", task.gold)
    assert result.iterations <= budget
