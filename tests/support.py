"""Scripted models for tests: root replies chosen by iteration, sub-calls by prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rlm_graph.prompts import CHILD_QUESTION
from rlm_graph.stub_server import StubReply, StubServer, last_user_text

SubAnswer = Callable[[str], StubReply | str]


def tool(code: str, text: str = "") -> StubReply:
    """A root reply that runs ``code`` through the execute_python tool."""
    return StubReply(
        content=text, tool_calls=[{"name": "execute_python", "arguments": {"code": code}}]
    )


def fenced(code: str, after: str = "") -> StubReply:
    """A root reply with a ```repl block (models without tool calling)."""
    return StubReply(content=f"Running this:\n```repl\n{code}\n```\n{after}")


def is_root(body: dict[str, Any]) -> bool:
    """Root-model requests carry the RLM system prompt; plain sub-calls do not."""
    messages = body.get("messages") or []
    return bool(messages) and messages[0].get("role") in ("system", "developer")


def is_child(body: dict[str, Any]) -> bool:
    """A sub-RLM's root request (depth >= 1)."""
    return is_root(body) and any(CHILD_QUESTION in str(m.get("content")) for m in body["messages"])


def iteration_of(body: dict[str, Any]) -> int:
    """How many root replies came before this request (0 for the first)."""
    return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")


class Script:
    """Root replies by iteration (last one repeats), sub-calls answered by a function."""

    def __init__(
        self,
        root: Sequence[StubReply | str],
        sub: SubAnswer | None = None,
        child: Sequence[StubReply | str] | None = None,
    ) -> None:
        self.root = list(root)
        self.sub = sub or (lambda prompt: f"echo:{prompt[:40]}")
        self.child = list(child or [])

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if is_child(body) and self.child:
            return self.child[min(iteration_of(body), len(self.child) - 1)]
        if is_root(body):
            return self.root[min(iteration_of(body), len(self.root) - 1)]
        return self.sub(last_user_text(body))


def fast_settings(server: StubServer, **overrides: Any) -> dict[str, Any]:
    """Settings pointing both models at the stub, with short limits for tests."""
    settings: dict[str, Any] = {
        "model": "stub-root",
        "sub_model": "stub-sub",
        "base_url": server.base_url,
        "max_iterations": 6,
        "model_timeout": 10.0,
        "model_max_retries": 0,
        "cell_timeout": 20.0,
    }
    settings.update(overrides)
    return settings
