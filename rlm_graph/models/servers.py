"""Asking a self-hosted OpenAI-compatible server how large its context window is.

A hosted API's window is known from the model's name; a server people run themselves
has the window it was started with (``llama-server -c 8192``, ``vllm serve
--max-model-len``, an Ollama ``num_ctx``). Stating the wrong one cost a real run
everything (issue 18): the root copied "about 384,000 characters" into one sub-call and
got HTTP 400 on every try. Each server says it without a key, in its own way:

- llama.cpp's ``GET /props``: ``default_generation_settings.n_ctx``;
- vLLM's ``GET /v1/models``: ``max_model_len`` of the model's entry;
- Ollama's ``POST /api/show``: ``num_ctx`` among the model's ``parameters``.

The probes are blocking HTTP with a short timeout; async code runs them in a thread.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.request
from functools import cache
from typing import Any
from urllib.parse import urlsplit

PROBE_TIMEOUT = 3.0  # seconds per probe: a local server answers in milliseconds
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)", re.MULTILINE)


def is_local_url(base_url: str) -> bool:
    """Whether ``base_url`` names this machine or a private network, where people run servers.

    ``localhost``, 127.0.0.1, 10.x, 192.168.x, fd00::/8 and the like. Only the URL is read:
    a host name other than ``localhost`` is not looked up, so a LAN server known by name is
    not recognised (``server_profile="local"`` says it is one).
    """
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def _get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """The JSON at ``url`` (POSTing ``body`` when given), or None on any failure."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    open_url = _plain_opener().open if request.type == "http" else urllib.request.urlopen
    try:
        with open_url(request, timeout=PROBE_TIMEOUT) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):  # not this kind of server
        return None


@cache
def _plain_opener() -> urllib.request.OpenerDirector:
    """``build_opener()`` without its HTTPS handler, for http:// servers.

    That handler makes an SSL context when built, loading the system's certificates:
    ~30 ms of the first run of a process (the first cell's time), for a local server
    that speaks plain HTTP.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def llama_cpp_window(root: str, model: str) -> int | None:
    """llama.cpp's ``n_ctx`` (one server, one model: ``model`` is not needed)."""
    props = _get_json(f"{root}/props")
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    return _positive(settings.get("n_ctx") if isinstance(settings, dict) else props.get("n_ctx"))


def vllm_window(root: str, model: str) -> int | None:
    """VLLM's ``max_model_len`` of ``model`` (or of the only model served)."""
    listing = _get_json(f"{root}/v1/models")
    data = listing.get("data") if isinstance(listing, dict) else None
    entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    named = [e for e in entries if e.get("id") == model] or entries[:1]
    return _positive(named[0].get("max_model_len")) if named else None


def ollama_window(root: str, model: str) -> int | None:
    """Ollama's ``num_ctx`` for ``model``, when its parameters set one.

    Without one Ollama uses its default num_ctx, which has changed between versions,
    so no number is guessed: the default window applies and ``--root-window-tokens``
    says better.
    """
    shown = _get_json(f"{root}/api/show", {"model": model})
    parameters = shown.get("parameters") if isinstance(shown, dict) else None
    match = _NUM_CTX.search(parameters) if isinstance(parameters, str) else None
    return int(match.group(1)) if match else None


PROBES = (llama_cpp_window, vllm_window, ollama_window)


def server_window(base_url: str, model: str) -> int | None:
    """The context window in tokens the server at ``base_url`` reports for ``model``.

    ``None`` when it reports none: a hosted API, a server of another kind, or one that
    is down (the model call will then say so itself).
    """
    root = base_url.rstrip("/").removesuffix("/v1")
    for probe in PROBES:
        if window := probe(root, model):
            return window
    return None
