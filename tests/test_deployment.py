"""The operator's deployment: what no run's settings can widen (rlm_graph/deployment.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import Script, fast_settings, tool

from rlm_graph.deployment import TRUSTED, Deployment, SettingsRefused
from rlm_graph.graph import build_graph
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import ContextError

KEY = "sk-operator-secret-0123456789"


def test_a_server_with_no_variables_allows_no_url_and_no_file() -> None:
    server = Deployment.from_env({})
    with pytest.raises(SettingsRefused, match="RLM_ALLOWED_BASE_URLS"):
        server.admit(Settings(model="m", base_url="http://attacker.example/v1"))
    with pytest.raises(ContextError, match="RLM_CONTEXT_ROOTS"):
        server.readable("/etc/passwd")
    assert server.admit(Settings(model="openai:gpt-5")) == Settings(model="openai:gpt-5")


def test_a_key_goes_only_to_the_url_it_is_bound_to() -> None:
    env = {
        "RLM_ALLOWED_BASE_URLS": "http://a.test/v1/=A_API_KEY, http://b.test/v1",
        "A_API_KEY": KEY,
    }
    server = Deployment.from_env(env)
    server.admit(Settings(model="m", base_url="http://a.test/v1"))  # trailing slash or not
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("A_API_KEY", KEY)
        patch.setenv("OPENAI_API_KEY", "sk-never-sent-anywhere-else")
        assert server.api_key("http://a.test/v1/") == KEY
        assert server.api_key("http://b.test/v1") == ""  # no key, not OPENAI_API_KEY
    with pytest.raises(SettingsRefused, match="OpenAI-compatible"):  # would read its own key
        server.admit(Settings(model="anthropic:claude-x", base_url="http://a.test/v1"))
    with pytest.raises(ValueError, match="B_API_KEY, which is not set"):
        Deployment.from_env({"RLM_ALLOWED_BASE_URLS": "http://b.test=B_API_KEY"})
    with pytest.raises(ValueError, match="not an http"):
        Deployment.from_env({"RLM_ALLOWED_BASE_URLS": "file:///etc"})


def test_models_outside_the_allow_list_are_refused_sub_model_included() -> None:
    server = Deployment.from_env({"RLM_ALLOWED_MODELS": "openai:gpt-5,openai:gpt-5-mini"})
    server.admit(Settings(model="openai:gpt-5"))
    with pytest.raises(SettingsRefused, match="'openai:o3' is not allowed"):
        server.admit(Settings(model="openai:gpt-5", sub_model="openai:o3"))


def test_ceilings_clamp_what_a_run_asks_and_unlimited_becomes_the_ceiling() -> None:
    server = Deployment.from_env(
        {"RLM_CEILINGS": "max_iterations=5 max_depth=2 max_tokens=1000 cell_timeout=30"}
    )
    admitted = server.admit(Settings(max_iterations=50, max_depth=3, max_tokens=0))
    assert (admitted.max_iterations, admitted.max_depth, admitted.max_tokens) == (5, 2, 1000)
    assert admitted.cell_timeout == 30.0
    assert server.admit(Settings(max_iterations=3)).max_iterations == 3
    with pytest.raises(ValueError, match="'model' cannot be capped"):
        Deployment.from_env({"RLM_CEILINGS": "model=1"})
    with pytest.raises(ValueError, match="needs a number"):
        Deployment.from_env({"RLM_CEILINGS": "max_depth=two"})


def test_context_paths_stay_under_the_operators_folders(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("fine")
    (root / "out").symlink_to("/etc/passwd")
    server = Deployment.from_env({"RLM_CONTEXT_ROOTS": str(root)})
    assert server.readable(root / "a.txt") == root / "a.txt"
    for escape in ("/etc/passwd", "/proc/self/environ", root / "out", root / "../docs/../.."):
        with pytest.raises(ContextError):
            server.readable(escape)


def test_the_trusted_cli_keeps_todays_behaviour() -> None:
    anything = Settings(model="x:y", base_url="http://anywhere/v1", max_iterations=500)
    assert TRUSTED.admit(anything) is anything
    assert TRUSTED.readable("/etc/hosts") == "/etc/hosts"
    assert TRUSTED.api_key("http://anywhere/v1") is None  # OPENAI_API_KEY, as before


def test_a_run_on_a_server_graph_sends_no_key_to_a_url_of_its_choice(
    stub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    capture = stub(Script([tool("FINAL(1)")]))
    graph = build_graph(deployment=Deployment.from_env({}))
    with pytest.raises(SettingsRefused, match="not allowed on this server"):
        graph.invoke({"question": "q", "context": "c"}, context=fast_settings(capture))
    assert capture.requests == []


def test_a_bound_url_gets_its_own_key_down_the_recursion_tree(
    stub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-wrong-key-for-this-url")
    monkeypatch.setenv("LOCAL_API_KEY", KEY)
    child = [tool("FINAL(context.upper())")]
    server = stub(Script([tool("x = await llm_query('hi')\nFINAL(x)")], child=child))
    deployment = Deployment.from_env(
        {"RLM_ALLOWED_BASE_URLS": f"{server.base_url}=LOCAL_API_KEY", "LOCAL_API_KEY": KEY}
    )
    graph = build_graph(deployment=deployment)
    settings = Settings(**fast_settings(server, max_depth=2, max_iterations=50))
    state = graph.invoke({"question": "q", "context": "c"}, context=settings)
    assert state["status"] == "answered", state
    assert state["answer"] == "HI"
    assert len(server.requests) == 2  # the root, and the sub-RLM (depth 1) it started
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}


def test_a_run_cannot_price_its_own_models_on_a_server(tmp_path: Path) -> None:
    # A run's own prices, or the local profile's $0, would spend past a max_dollars ceiling.
    table = tmp_path / "prices.json"
    table.write_text('{"openai:gpt-5": {"input": 2.0, "output": 20.0}}')
    server = Deployment.from_env({"RLM_PRICES": str(table), "RLM_CEILINGS": "max_dollars=1"})
    free = {"openai:gpt-5": {"input": 0.0, "output": 0.0}}
    with pytest.raises(SettingsRefused, match="RLM_PRICES"):
        server.admit(Settings(model="openai:gpt-5", prices=free))
    with pytest.raises(SettingsRefused, match="server_profile='local'"):
        server.admit(Settings(model="openai:gpt-5", server_profile="local"))
    admitted = server.admit(Settings(model="openai:gpt-5"))
    assert admitted.prices == {"openai:gpt-5": {"input": 2.0, "output": 20.0}}
    assert admitted.max_dollars == 1.0
    assert TRUSTED.admit(Settings(model="m", prices=free)).prices == free  # the CLI's own
    table.write_text("{not json")
    with pytest.raises(ValueError, match=r"RLM_PRICES: .* is not JSON"):
        Deployment.from_env({"RLM_PRICES": str(table)})
