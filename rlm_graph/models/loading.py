"""Chat models from names: any provider, or a model of the ``llm`` CLI.

Names go to ``init_chat_model``, except ``llm:<model id or alias>``, which is one of
the ``llm`` CLI's models with its keys, aliases and plugins (see llm_chat).

Model clients are cached because building one costs milliseconds and opens a
connection pool; a run makes hundreds of calls to the same few models.
"""

from __future__ import annotations

import os
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from langchain.chat_models import init_chat_model
from langchain.chat_models.base import _BUILTIN_PROVIDERS, _attempt_infer_model_provider
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.outputs import ChatResult

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

# Names with this prefix are models of the `llm` CLI, resolved by llm itself.
LLM_PREFIX = "llm:"


class ModelConfigError(ValueError):
    """A model cannot be built from the settings given (name, key, URL)."""


def split_model_name(name: str, base_url: str) -> tuple[str, str]:
    """Split ``provider:model`` into its parts.

    Without a known provider prefix the provider is ``openai`` when a base URL is set
    (an OpenAI-compatible server is meant; ``qwen2.5-coder:7b`` is a model name there,
    not a provider), and otherwise left to init_chat_model's inference ("").
    """
    provider, sep, model = name.partition(":")
    if sep and provider in _BUILTIN_PROVIDERS:
        return provider, model
    return ("openai" if base_url else ""), name


def missing_credentials(name: str, base_url: str) -> str:
    """Say which variable or flag is missing for this model, or "" when none is."""
    provider, model = split_model_name(name, base_url)
    if (
        base_url
        or name.startswith(LLM_PREFIX)
        or (provider or _attempt_infer_model_provider(model)) != "openai"
    ):
        return ""  # another provider's key, or a name no provider serves (load says so)
    if os.environ.get("OPENAI_API_KEY"):
        return ""
    return (
        f"model {name!r} needs an OpenAI API key: set OPENAI_API_KEY, or point --base-url "
        "(settings.base_url) at an OpenAI-compatible server, or run `rlm demo` to try it offline"
    )


@cache
def lean_chat_openai() -> type[ChatOpenAI]:
    """``ChatOpenAI`` that hands its messages to the openai SDK untouched.

    The SDK walks every request body against its TypedDict schemas (``maybe_transform``)
    before sending it; for chat messages, which LangChain has already turned into plain
    JSON dicts, that walk changes nothing but costs ~0.3 ms per message per request. A
    root conversation grows by two messages an iteration, so at 50 iterations the walk
    was most of a step's overhead (docs/benchmarks.md). The messages travel in
    ``extra_body`` instead, which the SDK merges into the JSON body as given (its
    documented precedence: ``extra_body`` keys override); the bytes on the wire are the
    same. Imported lazily: the OpenAI integration is only loaded when it is used.
    """
    from langchain_openai import ChatOpenAI

    class LeanChatOpenAI(ChatOpenAI):
        def _get_request_payload(
            self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
            if "messages" in payload:  # Chat Completions (the Responses API has "input")
                payload["extra_body"] = {
                    **(payload.get("extra_body") or {}),
                    "messages": payload["messages"],
                }
                payload["messages"] = []
            return payload

        def _create_chat_result(
            self, response: Any, generation_info: dict[str, Any] | None = None
        ) -> ChatResult:
            return super()._create_chat_result(with_cache_n(response), generation_info)

    return LeanChatOpenAI


def with_cache_n(response: Any) -> Any:
    """A llama.cpp reply with its ``timings.cache_n`` as the OpenAI field of cached tokens.

    llama.cpp reports the prompt tokens it reused from its cache in ``timings`` (a field
    of its own beside ``usage``); only its later versions also send vLLM's and OpenAI's
    ``usage.prompt_tokens_details.cached_tokens``, the one field the client reads, so
    every reply of the others counted 0 cached tokens. Other replies pass unchanged.
    """
    is_dict = isinstance(response, dict)
    timings = response.get("timings") if is_dict else getattr(response, "timings", None)
    if not isinstance(timings, dict):
        return response
    reply: dict[str, Any] = response if is_dict else response.model_dump(warnings=False)
    cache_n = timings.get("cache_n")
    usage = reply.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(cache_n, int) or not usage or details.get("cached_tokens") is not None:
        return response
    details = {**details, "cached_tokens": cache_n}
    return {**reply, "usage": {**usage, "prompt_tokens_details": details}}


@lru_cache(maxsize=64)
def load_chat_model(
    name: str,
    base_url: str,
    timeout: float,
    max_retries: int,
    *,
    api_key: str | None = None,
    max_tokens: int = 0,
) -> BaseChatModel:
    """Build (once per process) the chat model for ``name``.

    With a ``base_url``, an OpenAI-compatible server gets ``api_key`` (``None``: the
    environment's ``OPENAI_API_KEY``, for the operator's own runs; a server passes only
    the key its operator bound to that URL, see ``rlm_graph.deployment``).
    A timeout is always set: ChatOpenAI has none by default, and a request that never
    returns would otherwise hang a sandbox callback forever. (``llm`` models have no
    timeout setting; the sub-call broker's own deadline bounds them.)

    ``max_tokens`` (0: none) caps each reply. An OpenAI-compatible server gets it as
    ``max_tokens``, which llama.cpp, llama-cpp-python, Ollama and vLLM all read; the
    client would send ``max_completion_tokens``, which OpenAI's own API wants instead.
    """
    if name.startswith(LLM_PREFIX):
        return _llm_model(name.removeprefix(LLM_PREFIX))
    if problem := missing_credentials(name, base_url):  # else the SDK's own text, later
        raise ModelConfigError(problem)
    provider, model = split_model_name(name, base_url)
    kwargs: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries}
    if base_url:
        kwargs["base_url"] = base_url
        if provider == "openai":
            given = os.environ.get("OPENAI_API_KEY") if api_key is None else api_key
            kwargs["api_key"] = given or "not-needed"
            kwargs["stream_usage"] = True
            if max_tokens:
                kwargs["extra_body"] = {"max_tokens": max_tokens}
    if max_tokens and "extra_body" not in kwargs:
        kwargs["max_tokens"] = max_tokens
    if not provider and not _attempt_infer_model_provider(model):
        raise ModelConfigError(unknown_provider(name))
    try:
        if (provider or _attempt_infer_model_provider(model)) == "openai":
            chat = lean_chat_openai()(model=model, **kwargs)
        else:
            chat = init_chat_model(model, model_provider=provider or None, **kwargs)
    except (ValueError, ImportError) as exc:  # their text runs on to a provider list
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelConfigError(f"cannot use model {name!r}: {reason}") from exc
    if not isinstance(chat, BaseChatModel):
        raise ModelConfigError(f"model {name!r} did not resolve to a chat model")
    return chat


def unknown_provider(name: str) -> str:
    """Why ``name`` names no model, and the two ways to name one."""
    prefix, sep, _ = name.partition(":")
    said = f"{prefix!r} is not a provider" if sep else "no provider is known for it"
    return (
        f"cannot use model {name!r}: {said}. Name one as PROVIDER:MODEL with a provider of "
        f"{', '.join(sorted(_BUILTIN_PROVIDERS))}; or pass --base-url for an OpenAI-compatible "
        "server, which serves bare model names"
    )


def _llm_model(model_id: str) -> BaseChatModel:
    """An ``llm`` model; the package is optional, so it is imported only when named."""
    try:
        from rlm_graph.models.llm_cli import load_llm_model
    except ImportError as exc:
        raise ModelConfigError(
            f"model {LLM_PREFIX}{model_id} needs the llm package: pip install 'rlm-graph[llm]'"
        ) from exc
    return load_llm_model(model_id)
