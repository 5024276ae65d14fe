"""What the stub does when it plays a server people run themselves (llama.cpp, vLLM, Ollama).

A run against llama-cpp-python 0.3 with an 8,192-token window (issue 18) met four
traits a hosted API does not have, all reproduced here so the offline tests see them:

- a small window: past it the server answers HTTP 400 with the OpenAI-style message
  vLLM and llama-cpp-python send ("This model's maximum context length is ...");
- probes for that window without a key: llama.cpp's ``GET /props``, vLLM's
  ``max_model_len`` in ``/v1/models``, Ollama's ``POST /api/show``;
- tool calls written as text (a fenced JSON object in the content), or honoured only
  when the request names a ``tool_choice`` (llama-cpp-python's function-calling
  template);
- one request computed at a time, the others queued (llama.cpp's single slot);
- usage without ``prompt_tokens_details``, or with llama.cpp's ``timings`` (``cache_n``:
  prompt tokens reused from its cache) in its place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rlm_graph.offline.stub_server import StubReply

ToolCallForm = Literal["native", "text", "with_choice"]
UsageForm = Literal["openai", "bare", "timings"]

# The estimate the stub's usage reports too: 4 characters per token.
STUB_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class LocalServer:
    """Traits of a self-hosted server; the defaults behave like a hosted API."""

    window_tokens: int = 0
    """Context window in tokens (prompt + requested ``max_tokens``); 0: unlimited."""
    tool_calls: ToolCallForm = "native"
    """``text``: scripted tool calls arrive as a fenced JSON object in the content;
    ``with_choice``: as real tool calls only when the request sends ``tool_choice``."""
    slots: int = 0
    """Requests computed at once, the rest waiting their turn; 0: no limit."""
    usage: UsageForm = "openai"
    """How cached prompt tokens are reported: ``openai``, in ``prompt_tokens_details``;
    ``bare``, not at all; ``timings``, as llama.cpp's ``timings.cache_n``."""

    def usage_fields(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The reply's ``usage`` (and llama.cpp's ``timings``) as this server sends them."""
        if self.usage == "openai":
            return {"usage": usage}
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        bare = {k: v for k, v in usage.items() if k != "prompt_tokens_details"}
        if self.usage == "bare":
            return {"usage": bare}
        timings = {
            "cache_n": cached,
            "prompt_n": usage["prompt_tokens"] - cached,
            "predicted_n": usage["completion_tokens"],
        }
        return {"usage": bare, "timings": timings}

    def refusal(self, body: dict[str, Any], prompt_chars: int) -> str:
        """The message of the 400 a request past the window gets, or "" when it fits."""
        if not self.window_tokens:
            return ""
        prompt = math.ceil(prompt_chars / STUB_CHARS_PER_TOKEN)
        completion = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        if prompt + completion <= self.window_tokens:
            return ""
        return (
            f"This model's maximum context length is {self.window_tokens} tokens. However, "
            f"you requested {prompt + completion} tokens ({prompt} in the messages, "
            f"{completion} in the completion). Please reduce the length of the messages or "
            "completion."
        )

    def reshape(self, body: dict[str, Any], reply: StubReply) -> StubReply:
        """The reply as this server sends it: tool calls written as text when it would."""
        calls = reply.tool_calls or []
        if not calls or not self._calls_as_text(body):
            return reply
        written = [
            "```json\n"
            + json.dumps({"name": c["name"], "arguments": c.get("arguments", {})})
            + "\n```"
            for c in calls
        ]
        return replace(
            reply, content="\n".join([reply.content or "", *written]).strip(), tool_calls=None
        )

    def _calls_as_text(self, body: dict[str, Any]) -> bool:
        if self.tool_calls == "text":
            return True
        return self.tool_calls == "with_choice" and not body.get("tool_choice")

    def probe(self, path: str) -> dict[str, Any] | None:
        """What llama.cpp's ``GET /props`` or Ollama's ``POST /api/show`` answers; None: 404."""
        if not self.window_tokens:
            return None
        if path == "/props":
            return {
                "default_generation_settings": {"n_ctx": self.window_tokens},
                "total_slots": self.slots or 1,
            }
        if path == "/api/show":  # the window in use is num_ctx, not the model's maximum
            return {
                "parameters": f"num_ctx {self.window_tokens}\nstop <|im_end|>",
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
            }
        return None

    def model_fields(self) -> dict[str, Any]:
        """Extra fields of the ``/v1/models`` entry: vLLM's ``max_model_len``."""
        return {"max_model_len": self.window_tokens} if self.window_tokens else {}
