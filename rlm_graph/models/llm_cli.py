"""A LangChain chat model backed by a model of Simon Willison's ``llm`` library.

The graph and the sub-call broker speak LangChain; ``llm`` users have their models,
aliases and keys configured in ``llm`` (``llm keys set``, ``llm aliases``, plugins such
as llm-anthropic or llm-ollama). This adapter lets the graph use any of those models
under the name ``llm:<model id or alias>`` without knowing about ``llm``: keys are
resolved by ``llm`` on the host and never reach the sandbox.

The conversation goes to ``llm`` as its structured message list (llm >= 0.32), so tool
calls and their results keep their ids; a model without tool support gets no tools and
answers with fenced code blocks, which the graph reads just as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llm
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from llm.parts import TextPart, ToolCallPart, ToolResultPart
from pydantic import PrivateAttr

from rlm_graph.models.loading import ModelConfigError


class LLMChatModel(BaseChatModel):
    """One ``llm`` model as a LangChain chat model; build it with :func:`load_llm_model`."""

    model_id: str
    _model: llm.Model = PrivateAttr()

    @property
    def _llm_type(self) -> str:
        return "llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` (in OpenAI's format) to the model, if it supports tools at all."""
        if not self._model.supports_tools:
            return self  # its replies are AIMessages
        schemas = [convert_to_openai_tool(tool)["function"] for tool in tools]
        return self.bind(tools=schemas, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools: list[Any] = [
            llm.Tool(
                name=schema["name"],
                description=schema.get("description"),
                input_schema=schema.get("parameters") or {},
            )
            for schema in kwargs.get("tools") or []
        ]
        response = self._model.prompt(
            messages=to_llm_messages(messages), tools=tools or None, stream=False
        )
        text = response.text()
        calls = [
            ToolCall(name=call.name, args=call.arguments, id=call.tool_call_id, type="tool_call")
            for call in response.tool_calls()
        ]
        usage = response.usage()
        tokens_in, tokens_out = usage.input or 0, usage.output or 0
        message = AIMessage(
            content=text,
            tool_calls=calls,
            usage_metadata={
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def default_model_id() -> str:
    """The model llm uses when none is named (``llm models default``)."""
    return str(llm.get_default_model())  # type: ignore[no-untyped-call]


def keys_dir() -> Path:
    """Llm's own directory (keys, logs): never to be read into a sandbox."""
    return Path(llm.user_dir()).resolve()  # type: ignore[no-untyped-call]


def load_llm_model(model_id: str) -> LLMChatModel:
    """The ``llm`` model called ``model_id`` (an id or alias), checked now.

    An unknown name or a missing key is found here, before a run starts, with ``llm``'s
    own advice (``llm models``, ``llm keys set ...``).
    """
    try:
        model = llm.get_model(model_id)
        model.get_key()
    except llm.UnknownModelError as exc:  # a KeyError: its str() would add quotes
        detail = exc.args[0] if exc.args else "unknown model"
        raise ModelConfigError(
            f"cannot use model 'llm:{model_id}': {detail} (`llm models` lists them)"
        ) from exc
    except llm.NeedsKeyException as exc:
        raise ModelConfigError(f"cannot use model 'llm:{model_id}': {exc}") from exc
    chat = LLMChatModel(model_id=model_id)
    chat._model = model
    return chat


def to_llm_messages(messages: Sequence[BaseMessage]) -> list[llm.Message]:
    """LangChain messages as ``llm`` messages; tool results get their tool's name back."""
    names: dict[str, str] = {}
    converted: list[llm.Message] = []
    for message in messages:
        text = message.text
        if isinstance(message, SystemMessage):
            converted.append(llm.system(text))
        elif isinstance(message, HumanMessage):
            converted.append(llm.user(text))
        elif isinstance(message, AIMessage):
            parts: list[Any] = [TextPart(text=text)] if text else []
            for call in message.tool_calls:
                names[call["id"] or ""] = call["name"]
                parts.append(
                    ToolCallPart(name=call["name"], arguments=call["args"], tool_call_id=call["id"])
                )
            converted.append(llm.Message(role="assistant", parts=parts))
        elif isinstance(message, ToolMessage):
            result = ToolResultPart(
                name=names.get(message.tool_call_id, ""),
                output=text,
                tool_call_id=message.tool_call_id,
            )
            converted.append(llm.Message(role="tool", parts=[result]))
        else:
            raise TypeError(f"cannot send a {type(message).__name__} to an llm model")
    return converted
