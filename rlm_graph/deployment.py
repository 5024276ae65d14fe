"""What the operator of a server allows, which no run's settings can widen.

Per-run ``Settings`` come from whoever starts the run; on a LangGraph server that is a
caller over HTTP, not the operator. A :class:`Deployment` holds the operator's side,
read from the server's environment (:meth:`Deployment.from_env`) and bound into the
graph when it is built (``build_graph(deployment=...)``), never taken from a run:

- which base URLs a run may point a model at, and which environment variable holds the
  key for each (``RLM_ALLOWED_BASE_URLS``), so a key only ever goes to the URL it was
  configured for: a caller who names their own server gets no key, and is refused;
- which model names a run may use (``RLM_ALLOWED_MODELS``);
- which folders a run's ``context_path`` may come from (``RLM_CONTEXT_ROOTS``; none
  unless named, so a caller cannot read ``/etc/passwd`` or the server's ``.env``);
- ceilings on the budgets a run may set (``RLM_CEILINGS``), which clamp its settings;
- the prices that budgets in dollars count with (``RLM_PRICES``, a JSON file): a run's
  own ``prices`` or ``server_profile`` (which prices local models at $0) would let it
  spend past a ``max_dollars`` ceiling, so on a server a run may set neither.

The CLI and the Python API, whose caller *is* the operator, use :data:`TRUSTED`: any
URL (with ``OPENAI_API_KEY``, as before), any model, any path, no ceiling.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from rlm_graph.models.loading import load_chat_model, split_model_name
from rlm_graph.models.pricing import PriceTable, check_prices
from rlm_graph.settings import Settings, WindowCache
from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.roots import PathLike, check_roots, confine

# Settings where 0 means "no limit": under a ceiling, 0 becomes the ceiling.
_ZERO_IS_UNLIMITED = frozenset({"max_tokens", "max_dollars"})
# Settings a ceiling may cap: the numeric ones, where more means more spend or time.
CEILABLE = frozenset(f.name for f in fields(Settings) if f.type in ("int", "float"))
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SettingsRefused(ValueError):
    """A run asked for something the deployment does not allow (a URL, a model)."""


@dataclass(frozen=True)
class Deployment:
    """The operator's limits on every run; ``None`` means "anything" (the trusted CLI)."""

    base_urls: tuple[tuple[str, str], ...] | None = None
    """Allowed base URLs, each with the variable holding its key ("" for none)."""
    models: frozenset[str] | None = None
    """Allowed model names, exactly as a run names them."""
    context_roots: tuple[Path, ...] | None = None
    """Folders a ``context_path`` may come from; ``()`` allows none."""
    ceilings: tuple[tuple[str, float], ...] = ()
    """Highest value a run may give each named setting."""
    prices: PriceTable | None = field(default=None, compare=False, hash=False)
    """The operator's price table for every run (``None``: each run's own, the CLI)."""
    windows: WindowCache = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The windows its servers reported, asked once per process (see with_server_windows)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Deployment:
        """A server's deployment: nothing beyond what the operator's variables name.

        Unset, a run may use no base URL of its own, no file, and any model name
        (models reach their providers' own endpoints with their own keys).
        """
        env = os.environ if environ is None else environ
        models = _items(env.get("RLM_ALLOWED_MODELS", ""))
        roots = [r for r in env.get("RLM_CONTEXT_ROOTS", "").split(os.pathsep) if r.strip()]
        urls = _items(env.get("RLM_ALLOWED_BASE_URLS", ""))
        return cls(
            base_urls=tuple(_url_binding(item, env) for item in urls),
            models=frozenset(models) if models else None,
            context_roots=check_roots(roots),
            ceilings=tuple(_ceiling(item) for item in _items(env.get("RLM_CEILINGS", ""))),
            prices=_prices(env.get("RLM_PRICES", "")),
        )

    def admit(self, settings: Settings) -> Settings:
        """``settings`` if this deployment allows them, clamped to its ceilings.

        A base URL or model it does not allow is a :class:`SettingsRefused` naming the
        variable the operator would change.
        """
        self.check_model(settings.model, settings.base_url)
        self.check_model(settings.effective_sub_model, settings.effective_sub_base_url)
        settings = self._priced(settings)
        clamped: dict[str, Any] = {
            name: ceiling
            for name, ceiling in self.ceilings
            if _exceeds(name, getattr(settings, name), ceiling)
        }
        return replace(settings, **clamped) if clamped else settings

    def _priced(self, settings: Settings) -> Settings:
        """``settings`` priced by the operator's table, or refused if the run priced them."""
        if self.prices is None:
            return settings
        # Settings price a local server's models at $0 by themselves; what differs from
        # that was sent by the run. The "local" profile prices every model at $0, any URL.
        unpriced = replace(settings, prices={})
        if settings.server_profile == "local" or settings.prices != unpriced.prices:
            raise SettingsRefused(
                "prices and server_profile='local' are not accepted from a run on this "
                "server: the operator prices models in RLM_PRICES, and models at a local "
                "base URL the operator allows are priced $0 by themselves"
            )
        return replace(settings, prices=dict(self.prices)) if self.prices else settings

    def with_server_windows(self, settings: Settings) -> Settings:
        """``settings`` with unset windows filled in from what the operator's servers report.

        Only a server's deployment asks here, once per server and model for the life of
        the process: Studio and ``langgraph dev`` runs do not go through the runner,
        which asks before each CLI or Python run (``TRUSTED`` leaves it to the runner).
        The base URLs asked are the operator's: ``admit`` refused any other.
        """
        if self.base_urls is None:
            return settings
        return settings.with_server_windows(self.windows)

    def check_model(self, name: str, base_url: str) -> None:
        """Refuse a model or base URL this deployment does not allow."""
        if self.models is not None and name not in self.models:
            raise SettingsRefused(
                f"model {name!r} is not allowed on this server: the operator lists the "
                f"allowed ones in RLM_ALLOWED_MODELS ({', '.join(sorted(self.models))})"
            )
        if not base_url or self.base_urls is None:
            return
        if _normal(base_url) not in self._urls:
            raise SettingsRefused(
                f"base_url {base_url!r} is not allowed on this server: the operator lists "
                "the allowed ones in RLM_ALLOWED_BASE_URLS"
            )
        if split_model_name(name, base_url)[0] != "openai":  # others read their own env key
            raise SettingsRefused(
                f"model {name!r}: a base_url here serves OpenAI-compatible models only; "
                "name the model without a provider prefix"
            )

    @property
    def _urls(self) -> dict[str, str]:
        return dict(self.base_urls or ())

    def api_key(self, base_url: str) -> str | None:
        """The key for ``base_url``: its bound variable's value ("" for none).

        ``None`` (the trusted CLI) keeps the historical ``OPENAI_API_KEY``.
        """
        if self.base_urls is None:
            return None
        variable = self._urls.get(_normal(base_url), "")
        return os.environ.get(variable, "") if variable else ""

    def chat_model(self, name: str, base_url: str, settings: Settings) -> BaseChatModel:
        """The client for a model this deployment allows, holding only its URL's key."""
        self.check_model(name, base_url)
        return load_chat_model(
            name,
            base_url,
            settings.model_timeout,
            settings.model_max_retries,
            api_key=self.api_key(base_url) if base_url else None,
            max_tokens=settings.reply_cap(name),
        )

    def readable(self, path: PathLike) -> PathLike:
        """The path a run may read as its context, or a ContextError saying why not."""
        if self.context_roots is None:
            return path
        if not self.context_roots:
            raise ContextError(
                "context_path is not accepted here: this server reads no files unless its "
                "operator names folders in RLM_CONTEXT_ROOTS; send the text as `context`"
            )
        return confine(path, self.context_roots)


TRUSTED = Deployment()
"""The operator's own runs (CLI, Python API): anything, as before deployments existed."""


def _items(value: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", value) if item]


def _normal(url: str) -> str:
    return url.strip().rstrip("/")


def _url_binding(item: str, env: Mapping[str, str]) -> tuple[str, str]:
    """``URL`` or ``URL=VARIABLE``: the URL and the variable holding its key."""
    url, _, variable = item.rpartition("=")
    if not url or not _VARIABLE.fullmatch(variable):
        url, variable = item, ""
    if not re.match(r"https?://", url):
        raise ValueError(f"RLM_ALLOWED_BASE_URLS: {url!r} is not an http(s) URL")
    if variable and not env.get(variable):
        raise ValueError(f"RLM_ALLOWED_BASE_URLS binds {url} to {variable}, which is not set")
    return _normal(url), variable


def _prices(path: str) -> PriceTable:
    """The table in the JSON file RLM_PRICES names; none named is an empty table."""
    if not path.strip():
        return {}
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"RLM_PRICES: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"RLM_PRICES: {path} is not JSON: {exc.msg}") from None
    check_prices(table)
    return dict(table)


def _ceiling(item: str) -> tuple[str, float]:
    """``name=value`` of RLM_CEILINGS, for a setting a ceiling can cap."""
    name, _, value = item.partition("=")
    if name not in CEILABLE:
        raise ValueError(
            f"RLM_CEILINGS: {name!r} cannot be capped; use one of {', '.join(sorted(CEILABLE))}"
        )
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"RLM_CEILINGS: {item!r} needs a number, e.g. {name}=10") from None
    kind = next(f.type for f in fields(Settings) if f.name == name)
    return name, int(number) if kind == "int" else number


def _exceeds(name: str, value: float, ceiling: float) -> bool:
    return value > ceiling or (name in _ZERO_IS_UNLIMITED and value == 0)
