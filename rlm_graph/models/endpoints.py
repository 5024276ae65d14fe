"""What an OpenAI-compatible server says before a run: is it there, does it serve the model.

Without this check a wrong ``--base-url`` or model name showed only at the first model
call, after the run had started printing, as the SDK's text ("Connection error.", a
404) with no URL in it.
"""

from __future__ import annotations

import os

import httpx
from langchain_core.exceptions import ModelTimeoutError

from rlm_graph.models.loading import ModelConfigError
from rlm_graph.redact import redact_secrets
from rlm_graph.text import first_of, one_line

# The list is small and served at once; a server that takes longer is left to the run.
CHECK_SECONDS = 10.0
SHOWN_MODELS = 20  # a hub may serve hundreds: name the first ones


def models_url(base_url: str) -> str:
    """Where an OpenAI-compatible server at ``base_url`` lists its models."""
    return base_url.rstrip("/") + "/models"


def served_models(base_url: str) -> list[str]:
    """The model ids the server at ``base_url`` lists; [] when it lists none (or refuses).

    Raises :class:`ModelConfigError`, naming the URL, when the server cannot be reached.
    """
    url = models_url(base_url)
    key = os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=CHECK_SECONDS)
    except httpx.HTTPError as exc:
        raise ModelConfigError(
            f"cannot reach {url}: {one_line(exc)} (is the server running, and --base-url right?)"
        ) from exc
    try:
        listed = response.json()["data"] if response.is_success else []
        return [str(model["id"]) for model in listed]
    except (ValueError, KeyError, TypeError):  # not an OpenAI-style list: nothing to check
        return []


def check_served(model: str, base_url: str) -> None:
    """Raise :class:`ModelConfigError` when the server lists its models and ``model`` is not one."""
    served = served_models(base_url)
    if served and model not in served:
        shown = first_of(sorted(served), SHOWN_MODELS)
        raise ModelConfigError(
            f"{base_url} does not serve model {model!r}; it serves: {shown} (see --model)"
        )


def call_failure(exc: BaseException, timeout_advice: str = "") -> str:
    """One line for a failed model call, naming the URL it went to.

    The SDKs' errors carry the request: "Connection error." or a 404 alone does not say
    which of the root and sub model's servers failed. A timeout is followed by
    ``timeout_advice`` (``Settings.timeout_advice``): "Request timed out." alone named
    neither the setting that bounds it nor the likely cause (issue 18).
    """
    text = one_line(exc)
    if timeout_advice and is_timeout(exc):
        text += f" {timeout_advice}"  # before the URL: a shortened line keeps the advice
    url = str(getattr(getattr(exc, "request", None), "url", "") or "")
    return redact_secrets(f"{text} ({url})") if url and url not in text else text


# How servers word a prompt past the window: vLLM, llama-cpp-python and OpenAI
# ("maximum context length", code context_length_exceeded), llama.cpp's llama-server
# ("exceeds the available context size"), Anthropic ("prompt is too long").
_WINDOW_ERRORS = (
    "maximum context length",
    "context_length_exceeded",
    "exceeds the available context size",
    "exceed_context_size",
    "prompt is too long",
)


def exceeds_window(exc: BaseException) -> bool:
    """Whether a model call failed because its prompt did not fit the model's window."""
    text = str(exc).lower()
    return any(marker in text for marker in _WINDOW_ERRORS)


def is_timeout(exc: BaseException) -> bool:
    """Whether a model call failed because no reply came within its timeout."""
    return isinstance(exc, ModelTimeoutError | TimeoutError)
