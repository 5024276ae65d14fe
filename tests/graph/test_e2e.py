"""End-to-end runs through the real graph, sandbox and ChatOpenAI client, against the stub."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from support import Script, fast_settings, fenced, replies_so_far, tool
from typing_extensions import TypedDict

from rlm_graph import aanswer, answer, build_graph
from rlm_graph.offline.stub_server import StubReply

NEEDLE_CODE = """
import re
match = re.search(r"special magic numbers? for (\\w+) is: (\\d+)", context)
key, number = match.group(1), match.group(2)
print(key, number)
"""


def haystack(size: int, needle: str, seed: int = 7) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper"]
    parts: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(12)) + ".\n"
        parts.append(line)
        total += len(line)
    parts.insert(len(parts) * 3 // 5, needle + "\n")
    return "".join(parts)


def test_needle_in_5mb_context_never_reaches_the_model(stub: Any) -> None:
    context = haystack(5_000_000, "One of the special magic numbers for rowan is: 918273.")
    script = Script([tool(NEEDLE_CODE), "The number is known.\nFINAL_VAR(number)"])
    server = stub(script)
    result = answer("What is the special magic number for rowan?", context, **fast_settings(server))
    assert result.status == "answered"
    assert result.answer == "918273"
    assert result.iterations == 2
    # The context is never sent: every request is prompt + history + previews only.
    assert max(r.raw_size for r in server.requests) < 30_000
    # The needle's sentence sits in the middle of the context: no request ever held it.
    assert not any("One of the special magic" in json.dumps(r.body) for r in server.requests)


def test_chunked_aggregation_with_llm_batch(stub: Any) -> None:
    records = [f"record {i}: {'apple' if i % 3 == 0 else 'pear'}" for i in range(3_000)]
    context = "\n".join(records)
    code = """
lines = context.splitlines()
chunks = ["\\n".join(lines[i:i + 500]) for i in range(0, len(lines), 500)]
counts = await llm_batch(["Tally:\\n" + c for c in chunks])
total = sum(int(c) for c in counts)
print(len(chunks), counts, total)
"""
    seen: list[str] = []

    def sub(prompt: str) -> str:
        seen.append(prompt)
        return str(prompt.count("apple"))

    server = stub(Script([tool(code), tool("FINAL(total)")], sub=sub))
    result = answer("How many apples?", context, **fast_settings(server, max_concurrency=3))
    assert result.answer == 1_000
    assert result.sub_calls == 6
    assert len(seen) == 6
    assert result.tokens["stub-sub"]["calls"] == 6


def test_final_in_code_returns_the_value_not_the_name(stub: Any) -> None:
    server = stub(Script([tool("x = 6 * 7\nFINAL(x)")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == 42


def test_final_var_on_a_tuple_returns_the_value(stub: Any) -> None:
    server = stub(Script([tool("pair = (1, 'two')\nFINAL_VAR('pair')")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == [1, "two"]


def test_answer_dict_protocol(stub: Any) -> None:
    server = stub(Script([fenced('answer = {"content": "done here", "ready": True}')]))
    result = answer("q", "ctx", **fast_settings(server, tool_calling=False))
    assert result.answer == "done here"
    assert "tools" not in server.requests[0].body


def test_final_text_without_code_ends_the_run(stub: Any) -> None:
    server = stub(Script(["I know it.\nFINAL(Paris is the capital)"]))
    result = answer("q", "ctx", **fast_settings(server))
    assert (result.answer, result.status, result.iterations) == (
        "Paris is the capital",
        "answered",
        1,
    )


def test_code_and_final_in_one_reply_runs_code_and_refuses_imagined_answer(stub: Any) -> None:
    script = Script(
        [
            fenced("value = len(context)\nprint(value)", text="FINAL(12)"),
            "FINAL(3)",
        ]
    )
    server = stub(script)
    result = answer("q", "abc", **fast_settings(server, tool_calling=False))
    assert result.answer == "3"
    assert result.iterations == 2
    second = json.dumps(server.requests[1].body)
    assert "not accepted" in second and "REPL output" in second


def test_fenced_code_with_final_var_uses_the_computed_variable(stub: Any) -> None:
    server = stub(Script([fenced("result = context.upper()", text="FINAL_VAR(result)")]))
    result = answer("q", "abc", **fast_settings(server, tool_calling=False))
    assert result.answer == "ABC"


def test_budget_exhausted_returns_marked_best_effort(stub: Any) -> None:
    def root(body: dict[str, Any]) -> StubReply | str:
        if "tools" not in body:  # the best-effort request is sent without tools
            return "best guess: 7"
        return tool("print('still looking')")

    server = stub(lambda body: root(body) if body["messages"][0]["role"] == "system" else "sub")
    result = answer("q", "ctx", **fast_settings(server, max_iterations=3))
    assert result.status == "budget_exhausted"
    assert result.answer == "best guess: 7"
    assert result.iterations == 3


def test_the_model_reads_cell_output_cut_to_max_output_chars(stub: Any) -> None:
    server = stub(Script([tool("print('H' * 3000 + 'T' * 3000)"), "FINAL(done)"]))
    answer("q", "ctx", **fast_settings(server, max_output_chars=240))
    (shown,) = [m for m in server.requests[1].body["messages"] if m["role"] == "tool"]
    assert len(shown["content"]) <= 240
    assert "characters cut" in shown["content"]
    assert shown["content"].startswith("H") and shown["content"].rstrip().endswith("T")


def test_a_raising_cell_is_reported_and_the_run_continues(stub: Any) -> None:
    script = Script([tool("keep = 5\n1/0"), tool("FINAL(keep)")])
    server = stub(script)
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == 5
    shown = json.dumps(server.requests[1].body)
    assert "ZeroDivisionError" in shown
    assert "_eryx_exec" not in shown


def test_a_timed_out_cell_keeps_earlier_variables(stub: Any) -> None:
    script = Script(
        [
            tool("keep = 'safe'\ndef helper():\n    return keep + '!'"),
            tool("import time\nlost = 1\ntime.sleep(30)"),
            tool("print(helper(), 'lost' in globals())"),
            "FINAL(ok)",
        ]
    )
    server = stub(script)
    result = answer("q", "ctx", **fast_settings(server, cell_timeout=2.0))
    assert result.answer == "ok"
    third = json.dumps(server.requests[2].body)
    assert "TimeoutError" in third
    fourth = json.dumps(server.requests[3].body)
    assert "safe! False" in fourth


def test_malformed_output_is_explained_to_the_model(stub: Any) -> None:
    bad_args = StubReply(tool_calls=[{"name": "execute_python", "arguments": "{not json"}])
    script = Script([bad_args, "just words, no code", tool("FINAL('recovered')")])
    server = stub(script)
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == "recovered"
    assert "not valid JSON" in json.dumps(server.requests[1].body)
    assert "no code and no final answer" in json.dumps(server.requests[2].body)


def test_sub_call_failures_are_per_item(stub: Any) -> None:
    def sub(prompt: str) -> StubReply | str:
        if "bad" in prompt:
            return StubReply(status=400, error="nope")
        return prompt.upper()

    code = """
res = await llm_batch(["ok one", "bad two", "ok three"])
print([isinstance(r, SubCallError) for r in res], res[0], res[2])
FINAL([str(r)[:6] for r in res])
"""
    server = stub(Script([tool(code)], sub=sub))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == ["OK ONE", "Error:", "OK THR"]


def test_identical_sub_calls_are_cached(stub: Any) -> None:
    code = """
a = await llm_batch(["same"] * 5)
b = await llm_query("same")
FINAL(a + [b])
"""
    server = stub(Script([tool(code)], sub=lambda p: "answer"))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == ["answer"] * 6
    assert sum(1 for r in server.requests if r.body["messages"][0]["role"] == "user") == 1
    assert result.sub_calls == 1  # repeats cost no budget


def test_oversized_sub_call_is_refused_before_sending(stub: Any) -> None:
    code = """
try:
    await llm_query("x" * 4000)
except SubCallFailed as e:
    FINAL(str(e))
"""
    server = stub(Script([tool(code)]))
    result = answer("q", "ctx", **fast_settings(server, sub_model_window_tokens=1000))
    assert "exceeds the sub model's window" in result.answer
    assert len(server.requests) == 1


def test_sub_call_budget_is_enforced(stub: Any) -> None:
    code = """
try:
    await llm_batch([f"p{i}" for i in range(50)])
except SubCallFailed as e:
    FINAL(str(e))
"""
    server = stub(Script([tool(code)]))
    result = answer("q", "ctx", **fast_settings(server, max_sub_calls=10))
    assert "budget exhausted" in result.answer


def test_depth_two_runs_a_sub_rlm_whose_sub_calls_are_plain(stub: Any) -> None:
    root = [tool("r = await llm_query('the word after the marker: xx KEY lemon yy')\nFINAL(r)")]
    child = [
        tool("import re\nw = re.search(r'KEY (\\w+)', context).group(1)"),
        tool("sub = await llm_query('leaf ' + w)"),
        tool("FINAL(sub)"),
    ]
    server = stub(Script(root, sub=lambda p: f"plain[{p}]", child=child))
    result = answer("q", "ctx", **fast_settings(server, max_depth=2))
    assert result.answer == "plain[leaf lemon]"
    child_requests = [r for r in server.requests if "calling program" in json.dumps(r.body)]
    assert len(child_requests) == 3
    # depth limit: the child's own sub-call was a plain call (no system prompt)
    plain = [r for r in server.requests if r.body["messages"][0]["role"] == "user"]
    assert [m["content"] for r in plain for m in r.body["messages"]] == ["leaf lemon"]
    assert result.sub_calls == 5  # the child run, its three plan calls, its plain call


def test_depth_one_sub_calls_are_plain(stub: Any) -> None:
    server = stub(Script([tool("FINAL(await llm_query('hello'))")], sub=lambda p: "hi"))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == "hi"
    assert not any("calling program" in json.dumps(r.body) for r in server.requests)


def test_a_sub_model_on_another_server_answers_the_sub_calls(stub: Any) -> None:
    root = stub(Script([tool("FINAL(await llm_query('hello'))")], sub=lambda p: "wrong server"))
    sub = stub(Script(["unused"], sub=lambda p: "from the sub server"))
    result = answer("q", "ctx", **fast_settings(root, sub_base_url=sub.base_url))
    assert result.answer == "from the sub server"
    assert [r.body["model"] for r in sub.requests] == ["stub-sub"]
    assert [r.body["model"] for r in root.requests] == ["stub-root"]


def test_json_and_directory_contexts(stub: Any, tmp_path: Any) -> None:
    server = stub(
        Script([tool("FINAL(sorted(context) if isinstance(context, dict) else context[1]['b'])")])
    )
    assert answer("q", [{"a": 1}, {"b": 2}], **fast_settings(server)).answer == 2
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("first")
    (tmp_path / "two.md").write_text("second")
    assert answer("q", tmp_path, **fast_settings(server)).answer == ["docs/one.txt", "two.md"]


def test_async_answer(stub: Any) -> None:
    server = stub(Script([tool("FINAL(len(context))")]))
    result = asyncio.run(aanswer("q", "12345", **fast_settings(server)))
    assert result.answer == 5


def test_follow_up_on_a_thread_reuses_sandbox_and_history(stub: Any) -> None:
    first = Script([tool("secret = context[::-1]\nFINAL('stored')")])
    second = Script([tool("FINAL([secret, history[0]['answer']])")])

    def responder(body: dict[str, Any]) -> StubReply | str:
        question = json.dumps(body["messages"][1])
        return (second if "again" in question else first)(body)

    server = stub(responder)
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    one = answer("store it", "abc", graph=graph, config=config, **fast_settings(server))
    assert one.answer == "stored"
    two = answer("again?", graph=graph, config=config, **fast_settings(server))
    assert two.answer == ["cba", "stored"]


def test_graph_embedded_as_a_node_of_a_user_graph(stub: Any) -> None:
    server = stub(Script([tool("FINAL(context.count('x'))")]))
    rlm = build_graph()

    class Outer(TypedDict, total=False):
        document: str
        report: str

    def ask(state: Outer) -> dict[str, Any]:
        out = rlm.invoke(
            {"question": "how many x?", "context": state["document"]},
            context=__import__("rlm_graph").Settings(**fast_settings(server)),
        )
        return {"report": f"x appears {out['answer']} times"}

    builder = StateGraph(Outer)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    outer = builder.compile(checkpointer=InMemorySaver())
    out = outer.invoke({"document": "xaxbx"}, {"configurable": {"thread_id": "outer"}})
    assert out["report"] == "x appears 3 times"


def test_bad_settings_are_rejected_with_one_line() -> None:
    with pytest.raises(ValueError, match=r"max_iterations=0 is out of range"):
        answer("q", "ctx", max_iterations=0)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) bogus"):
        answer("q", "ctx", bogus=1)


def test_no_context_is_a_clear_error(stub: Any) -> None:
    server = stub(Script(["FINAL(x)"]))
    result = answer("q", **fast_settings(server))
    assert result.status == "failed"
    assert result.error.startswith("no context given: send `context`")
    assert server.requests == []


def test_chat_messages_work_as_the_question(stub: Any) -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    server = stub(Script([tool("FINAL(context[:3])")]))
    from rlm_graph import Settings

    out = build_graph().invoke(
        {"messages": [HumanMessage("first three letters?")], "context": "abcdef"},
        context=Settings(**fast_settings(server)),
    )
    assert out["answer"] == "abc"
    assert isinstance(out["messages"][-1], AIMessage) and out["messages"][-1].content == "abc"
    assert "first three letters?" in json.dumps(server.requests[0].body)


def test_root_model_failure_is_reported_and_the_same_question_resumes(stub: Any) -> None:
    healthy = {"on": True}
    script = Script([tool("kept = 41"), tool("FINAL(kept + 1)")])

    def responder(body: dict[str, Any]) -> StubReply | str:
        if not healthy["on"]:
            return StubReply(status=503, error="overloaded")
        reply = script(body)
        if replies_so_far(body) == 0:
            healthy["on"] = False  # the provider goes down after the first reply
        return reply

    server = stub(responder)
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "flaky"}}
    failed = answer("q", "ctx", graph=graph, config=config, **fast_settings(server))
    assert failed.status == "failed"
    assert "root model call failed" in failed.error and "503" in failed.error
    assert failed.iterations == 1
    healthy["on"] = True
    resumed = answer("q", graph=graph, config=config, **fast_settings(server))
    assert (resumed.status, resumed.answer, resumed.iterations) == ("answered", 42, 2)


def test_a_context_too_big_for_the_sandbox_fails_clearly(stub: Any) -> None:
    server = stub(Script([tool("print(len(context))")]))
    result = answer("q", "x" * 40_000_000, **fast_settings(server, sandbox_memory_mb=64))
    assert result.status == "failed"
    assert "could not be loaded into the sandbox" in result.error
    assert "sandbox_memory_mb" in result.error and "or lower lazy_context_mb" in result.error
    lazily = fast_settings(stub(Script([tool("FINAL(context.size)")])), lazy_context_mb=16)
    lazy = answer("q", "x" * 40_000_000, **{**lazily, "sandbox_memory_mb": 64})
    assert lazy.answer == 40_000_000  # read on demand, it fits


def test_checkpoints_hold_a_reference_not_the_context(stub: Any) -> None:
    server = stub(Script([tool(NEEDLE_CODE), tool("FINAL(number)")]))
    saver = InMemorySaver()
    graph = build_graph(checkpointer=saver)
    config = {"configurable": {"thread_id": "small-state"}}
    context = haystack(5_000_000, "One of the special magic numbers for ash is: 777.")
    result = answer("number for ash?", context, graph=graph, config=config, **fast_settings(server))
    assert result.answer == "777"
    history = list(graph.get_state_history(config))
    assert len(history) >= 6
    for snapshot in history:
        dumped = json.dumps(snapshot.values, default=str)
        assert len(dumped) < 40_000
        assert "special magic numbers for ash" not in dumped
    ref = graph.get_state(config).values["context_ref"]
    assert ref["length"] == len(context) and ref["kind"] == "text"


def test_without_a_key_the_run_says_what_to_do_not_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # What `langgraph dev` shows in Studio: the plan node's error, as the CLI words it.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = answer("q?", "some text", model="openai:gpt-5", sub_model="openai:gpt-5-mini")
    assert result.status == "failed"
    assert result.error == (
        "model 'openai:gpt-5' needs an OpenAI API key: set OPENAI_API_KEY, or point "
        "--base-url (settings.base_url) at an OpenAI-compatible server, or run `rlm demo` "
        "to try it offline"
    )
