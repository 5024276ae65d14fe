"""Pure pieces: reply parsing, truncation, settings, context storage."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langgraph.store.base import Op, Result
from langgraph.store.memory import InMemoryStore

from rlm_graph.graph.plan import begin_turn
from rlm_graph.graph.replies import parse_reply
from rlm_graph.graph.steps import step_from
from rlm_graph.models.loading import missing_credentials, split_model_name
from rlm_graph.models.usage import add_usage
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import (
    ContextError,
    ContextWarning,
    blob_dir,
    check_ref,
    store_path,
    store_value,
)
from rlm_graph.subcalls.memo import SubCallMemo
from rlm_graph.text import truncate


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


def test_truncate_keeps_head_tail_and_says_how_much() -> None:
    text = "H" * 1000 + "T" * 1000
    out = truncate(text, 300)
    assert len(out) <= 300
    assert out.startswith("H") and out.endswith("T")
    shown = out.count("H") + out.count("T")
    assert f"{len(text) - shown:,} characters cut" in out
    assert truncate("short", 300) == "short"


def test_settings_validation_and_sub_model_defaults() -> None:
    assert Settings().effective_sub_model == "openai:gpt-5-mini"
    assert Settings(model="qwen", base_url="http://x/v1").effective_sub_model == "qwen"
    assert Settings(model="a", sub_model="b").effective_sub_model == "b"
    assert Settings(base_url="u").effective_sub_base_url == "u"
    with pytest.raises(ValueError, match="max_depth=0"):
        Settings(max_depth=0)
    with pytest.raises(ValueError, match="cell_timeout"):
        Settings(cell_timeout=-1)
    with pytest.raises(ValueError, match="4096"):
        Settings(sandbox_memory_mb=8000)


def test_model_names_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_model_name("anthropic:claude", "") == ("anthropic", "claude")
    assert split_model_name("qwen2.5-coder:7b", "http://h/v1") == ("openai", "qwen2.5-coder:7b")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    message = missing_credentials("openai:gpt-5", "")
    assert "OPENAI_API_KEY" in message and "--base-url" in message
    assert missing_credentials("gpt-5", "http://localhost:8000/v1") == ""


def test_usage_is_summed_per_model() -> None:
    total = add_usage(
        {"a": {"calls": 1, "input_tokens": 5}}, {"a": {"calls": 2}, "b": {"calls": 1}}
    )
    assert total == {"a": {"calls": 3, "input_tokens": 5}, "b": {"calls": 1}}


def test_store_value_kinds_and_dedup() -> None:
    text = store_value("hello")
    assert (text["kind"], text["length"], text["preview"]) == ("text", 5, "hello")
    assert store_value("hello")["hash"] == text["hash"]
    data = store_value({"k": [1]})
    assert data["kind"] == "json"
    assert json.loads((blob_dir(data) / "context.json").read_text()) == {"k": [1]}
    with pytest.warns(ContextWarning, match="replaced 1 invalid byte"):
        lenient = store_value(b"ok \xff bad")
    assert "\ufffd" in lenient["preview"]


def test_store_path_file_json_dir_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"line\n" * 1000 + b"\xfe")
    with pytest.warns(ContextWarning, match="not valid UTF-8"):
        ref = store_path(tmp_path / "a.txt")
    assert ref["kind"] == "text" and ref["length"] == 5001
    (tmp_path / "d.json").write_text('{"x": 1}')
    assert store_path(tmp_path / "d.json")["kind"] == "json"
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ContextError, match="not valid JSON"):
        store_path(tmp_path / "bad.json")
    with pytest.raises(ContextError, match="does not exist"):
        store_path(tmp_path / "missing")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f.txt").write_text("x")
    (folder / ".hidden").write_text("secret")
    assert store_path(folder)["kind"] == "directory"


def test_context_refs_from_callers_are_checked() -> None:
    ref = store_value("abc")
    assert check_ref(ref) == ref
    with pytest.raises(ContextError, match="malformed"):
        check_ref({**ref, "hash": "../../etc"})
    with pytest.raises(ContextError, match="not in the blob store"):
        check_ref({**ref, "hash": "0" * 64})


def test_a_new_question_starts_a_new_turn() -> None:
    running = {"status": "running", "active_question": "q", "turn": 1, "question": "q"}
    assert begin_turn(running, "q") == {}  # resuming the same question
    fresh = begin_turn({**running, "status": "answered"}, "q2")
    assert fresh["turn"] == 2 and fresh["iteration"] == 0 and fresh["status"] == "running"


def test_readme_documents_every_setting() -> None:
    from dataclasses import fields

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [f.name for f in fields(Settings) if f"| `{f.name}` |" not in readme]
    assert missing == []


def test_an_unchanged_file_is_not_stored_twice(tmp_path: Path) -> None:
    import os

    log = tmp_path / "log.txt"
    log.write_text("first version")
    first = store_path(log)
    assert store_path(log) == first
    log.write_text("second version, longer")
    os.utime(log, ns=(1, 1))
    second = store_path(log)
    assert second["hash"] != first["hash"] and second["preview"] == "second version, longer"


class CountingStore(InMemoryStore):
    """A store that counts its round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        self.batches.append(len(ops))
        return super().batch(ops)


def test_memo_prefetch_looks_up_a_batch_in_one_store_round_trip() -> None:
    store = CountingStore()
    SubCallMemo(Blobs(store), "sandbox", "scope").put("known", "yes")
    store.batches.clear()
    memo = SubCallMemo(Blobs(store), "sandbox", "scope")
    memo.prefetch({"known", "new 1", "new 2"})
    assert [memo.get(p) for p in ("known", "new 1", "new 2")] == ["yes", None, None]
    assert store.batches == [3]  # one lookup for all three; misses are not asked again
    memo.put("new 1", "later")
    assert memo.get("new 1") == "later"
