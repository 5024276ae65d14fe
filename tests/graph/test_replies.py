"""Reading root-model replies, and the steps they become."""

from __future__ import annotations

from langchain_core.messages import AIMessage

from rlm_graph.graph.plan import begin_turn
from rlm_graph.graph.replies import parse_reply
from rlm_graph.graph.steps import step_from


def test_tool_call_code_is_taken() -> None:
    msg = AIMessage(
        content="", tool_calls=[{"id": "c1", "name": "execute_python", "args": {"code": "x=1"}}]
    )
    parsed = parse_reply(msg)
    assert (parsed.code, parsed.tool_call_id, parsed.problem) == ("x=1", "c1", "")


def test_fenced_blocks_of_several_languages_are_joined() -> None:
    text = "a\n```repl\nx = 1\n```\nthen\n```python\ny = 2\n```\n```bash\nls\n```"
    assert parse_reply(AIMessage(content=text)).code == "x = 1\n\ny = 2"


def test_final_outside_code_and_inside_code() -> None:
    assert parse_reply(AIMessage(content="FINAL(42 apples)")).final_text == "42 apples"
    assert parse_reply(AIMessage(content='FINAL("quoted")')).final_text == "quoted"
    assert parse_reply(AIMessage(content="FINAL_VAR(result)")).final_var == "result"
    several = parse_reply(AIMessage(content="Found them.\nFINAL(first line\nsecond line)"))
    assert several.final_text == "first line\nsecond line"
    inside = parse_reply(AIMessage(content="```repl\nFINAL(x)\n```"))
    assert inside.final_text is None and inside.code == "FINAL(x)"


def test_final_var_text_runs_after_the_code() -> None:
    parsed = parse_reply(AIMessage(content="```repl\nres = 1\n```\nFINAL_VAR(res)"))
    assert step_from(parsed)["code"] == "res = 1\nFINAL_VAR('res')"


def test_nothing_actionable_is_a_problem() -> None:
    assert "no code and no final answer" in parse_reply(AIMessage(content="hmm")).problem
    bad = AIMessage(
        content="",
        invalid_tool_calls=[{"name": "execute_python", "args": "{x", "id": "1", "error": "bad"}],
    )
    assert "not valid JSON" in parse_reply(bad).problem


def test_a_new_question_starts_a_new_turn() -> None:
    running = {"status": "running", "active_question": "q", "turn": 1, "question": "q"}
    assert begin_turn(running, "q") == {}  # resuming the same question
    fresh = begin_turn({**running, "status": "answered"}, "q2")
    assert fresh["turn"] == 2 and fresh["iteration"] == 0 and fresh["status"] == "running"


def test_tool_calls_written_as_text_are_run() -> None:
    call = '{"name": "execute_python", "arguments": {"code": "x = 1"}}'
    fenced = parse_reply(AIMessage(content=f"Let me look.\n```json\n{call}\n```"))
    tagged = parse_reply(AIMessage(content=f"<tool_call>\n{call}\n</tool_call>"))
    as_string = '{"name": "execute_python", "arguments": "{\\"code\\": \\"x = 1\\"}"}'
    untagged = parse_reply(AIMessage(content=f"```\n{as_string}\n```"))
    assert fenced.code == tagged.code == untagged.code == "x = 1"
    assert fenced.problem == ""


def test_a_final_answer_written_as_a_tool_call_is_taken() -> None:
    reply = parse_reply(
        AIMessage(content='```json\n{"name": "FINAL", "arguments": {"a": "42"}}\n```')
    )
    assert (reply.final_text, reply.code) == ("42", "")


def test_fences_of_json_or_one_word_are_not_run() -> None:
    for body in ('{"answer": true}', "repl", "[1, 2]"):
        parsed = parse_reply(AIMessage(content=f"```\n{body}\n```"))
        assert parsed.code == "" and parsed.problem.startswith("no code"), body


def test_tagged_fences_of_json_or_one_word_are_not_run_either() -> None:
    for body in ('{"answer": true}', "repl", "true"):
        parsed = parse_reply(AIMessage(content=f"```repl\n{body}\n```"))
        assert parsed.code == "", body
        assert "a fenced block holding only JSON or one word is not run" in parsed.problem


def test_the_no_code_note_names_the_way_to_send_code_in_this_run() -> None:
    with_tools = parse_reply(AIMessage(content="hmm"), tool_calling=True).problem
    without = parse_reply(AIMessage(content="hmm"), tool_calling=False).problem
    assert "call the execute_python tool" in with_tools
    assert "execute_python" not in without and "there is no tool to call" in without
