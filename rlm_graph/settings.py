"""Runtime settings of an RLM run: LangGraph's ``context_schema``.

Everything a user may tune per run lives here, so Studio renders it as a form and the
API, CLI and Python helpers share one definition of names, defaults and limits. Nothing
internal does: a run's place in its recursion tree is a ``subcalls.scope.Scope``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any, NamedTuple

from rlm_graph.models.pricing import (
    FREE,
    PriceTable,
    check_prices,
    over_budget,
    price_of,
    unpriced_models,
)
from rlm_graph.models.servers import is_local_url, server_window
from rlm_graph.models.usage import Usage

# The window assumed when none is set and no server reports one: today's hosted models.
DEFAULT_WINDOW_TOKENS = 128_000

# Known root → sub model pairings, following the paper (GPT-5 root, GPT-5-mini sub-calls).
_SMALLER_MODEL = {
    "gpt-5": "gpt-5-mini",
    "gpt-5.1": "gpt-5-mini",
    "gpt-4.1": "gpt-4.1-mini",
    "gpt-4o": "gpt-4o-mini",
    "o3": "o4-mini",
}
SUB_RLM_EXECUTORS = ("local", "ray")
MISSING_RAY = "sub_rlm_executor='ray' needs Ray: pip install 'rlm-graph[ray]'"
# What each (base URL, model) was found to have as its window; None: the server said none.
WindowCache = dict[tuple[str, str], int | None]
SERVER_PROFILES = ("auto", "hosted", "local")
# The value of a setting left to the server profile (every one of them is >= 0 when set).
BY_PROFILE = -1


class ProfileDefault(NamedTuple):
    """A setting's value for a hosted API and for a server people run themselves."""

    hosted: float
    local: float


# What a self-hosted server needs differently (issue 18, llama-cpp-python with one slot
# on CPU): it computes one request at a time, so 16 concurrent sub-calls only queue, and
# the timeout counts the queue; a retry of a timed-out request queues behind the
# abandoned one, which the server is still computing; and a reply with no cap runs on,
# at CPU speed, until the window is full when a small model repeats itself.
PROFILE_DEFAULTS = {
    "max_concurrency": ProfileDefault(16, 2),
    "model_timeout": ProfileDefault(180.0, 600.0),
    "model_max_retries": ProfileDefault(2, 0),
    "reply_max_tokens": ProfileDefault(0, 2_048),
}


def _by_profile(name: str, unit: str = "") -> str:
    """The end of a profile setting's description: what -1 means, in numbers."""
    hosted, local = PROFILE_DEFAULTS[name]
    return (
        f" -1: by server_profile, {hosted:g}{unit} for a hosted API, {local:g}{unit} for a "
        "local server."
    )


@dataclass(kw_only=True)
class Settings:
    """Per-run settings; every field has a description because Studio shows it."""

    model: Annotated[str, {"__template_metadata__": {"kind": "llm"}}] = field(
        default="openai:gpt-5",
        metadata={
            "description": "Root model, as 'provider:name' for init_chat_model "
            "(openai:gpt-5, anthropic:claude-sonnet-4-5, ollama:qwen2.5-coder, ...). "
            "With a base_url and no provider prefix, an OpenAI-compatible server is assumed."
        },
    )
    sub_model: str = field(
        default="",
        metadata={
            "description": "Model for llm_query/llm_batch sub-calls. Empty: the root "
            "model's smaller sibling (gpt-5 -> gpt-5-mini), or the root model itself when "
            "a base_url is set or no sibling is known."
        },
    )
    base_url: str = field(
        default="",
        metadata={
            "description": "OpenAI-compatible base URL for the root model (vLLM, "
            "llama.cpp, a proxy). Empty: the provider's default endpoint."
        },
    )
    sub_base_url: str = field(
        default="",
        metadata={"description": "Base URL for the sub model. Empty: same as base_url."},
    )
    server_profile: str = field(
        default="auto",
        metadata={
            "description": "'local': the model server is one people run themselves "
            "(llama.cpp, Ollama, vLLM): few concurrent sub-calls, a long model timeout, no "
            "retries, a cap on reply tokens, and its models priced $0 unless prices names "
            "them. 'hosted': a provider's API. 'auto': local when a base URL is a loopback "
            "or private address (or the model is ollama:...), else hosted. Settings given "
            "explicitly win over the profile."
        },
    )
    max_iterations: int = field(
        default=20,
        metadata={
            "description": "Root iterations (model reply + cell) before the run "
            "stops and returns a best-effort answer marked budget_exhausted."
        },
    )
    max_depth: int = field(
        default=1,
        metadata={
            "description": "Recursion depth. 1 (the paper's set-up): sub-calls are "
            "plain model calls. 2: sub-calls are sub-RLMs whose own sub-calls are plain."
        },
    )
    max_output_chars: int = field(
        default=20_000,
        metadata={
            "description": "REPL output shown to the model per cell; longer output "
            "keeps its head and tail with a marker saying how much was cut."
        },
    )
    max_concurrency: int = field(
        default=BY_PROFILE,
        metadata={
            "description": "Sub-calls of one cell in flight at the same time, llm_query "
            "and llm_batch alike." + _by_profile("max_concurrency")
        },
    )
    sub_rlm_executor: str = field(
        default="local",
        metadata={
            "description": "Where sub-RLMs run (max_depth >= 2): 'local', in this process; "
            "'ray', each as a task on the Ray cluster named by the deployment's "
            "RLM_RAY_ADDRESS (the ray extra; docs/deployment.md)."
        },
    )
    max_sub_calls: int = field(
        default=1_000,
        metadata={
            "description": "Sub-calls allowed in the whole run, sub-RLMs included "
            "(shared by the recursion tree, so depth cannot multiply the spend)."
        },
    )
    max_batch_size: int = field(
        default=1_000,
        metadata={
            "description": "Prompts one llm_batch call may send; a larger batch is "
            "refused as a whole, so the code sends it in parts."
        },
    )
    max_prompt_chars: int = field(
        default=10_000_000,
        metadata={
            "description": "Characters one sub-call prompt may hold, sub-RLMs included; "
            "a larger prompt is refused so the code passes a slice."
        },
    )
    root_window_tokens: int = field(
        default=0,
        metadata={
            "description": "Context window of the root model in tokens. 0: what the "
            "server at base_url reports (llama.cpp, vLLM, Ollama), else 128000."
        },
    )
    sub_model_window_tokens: int = field(
        default=0,
        metadata={
            "description": "Context window of the sub model in tokens; a sub-call prompt "
            "estimated larger (3 characters per token) is refused so the code chunks. "
            "0: what the server at the sub model's base URL reports, else 128000."
        },
    )
    cell_timeout: float = field(
        default=600.0,
        metadata={
            "description": "Wall-clock seconds one cell may run, time spent waiting "
            "on sub-calls included."
        },
    )
    cell_cpu_instructions: int = field(
        default=100_000_000_000,
        metadata={
            "description": "WebAssembly instructions (fuel) one cell may execute: the "
            "CPU brake, about 50 s of busy Python on a typical core."
        },
    )
    sandbox_memory_mb: int = field(
        default=2_048,
        metadata={"description": "Memory cap of the sandbox in MiB (wasm32 tops out at 4096)."},
    )
    lazy_context_mb: int = field(
        default=256,
        metadata={
            "description": "Text contexts larger than this many MiB are not loaded into the "
            "sandbox: `context` is a handle that reads slices, lines and chunks on demand and "
            "searches on the host (always above 2000 MiB, the wasm32 string limit)."
        },
    )
    lazy_folder_files: int = field(
        default=10_000,
        metadata={
            "description": "Folders with more files than this are not loaded: `context` is "
            "a handle that lists the files, reads one when asked and searches them all on "
            "the host; they are read in place, never copied."
        },
    )
    cell_scan_mb: int = field(
        default=32_768,
        metadata={
            "description": "MiB of a lazy context one cell may read and search (slices, "
            "lines, chunks, context.search); the cell's output says how much it scanned."
        },
    )
    model_timeout: float = field(
        default=BY_PROFILE,
        metadata={
            "description": "Seconds one model request may take before it is retried, time "
            "queued at the server included." + _by_profile("model_timeout", " s")
        },
    )
    model_max_retries: int = field(
        default=BY_PROFILE,
        metadata={
            "description": "Retries of a failed model request (timeouts, 429 and 5xx, with "
            "backoff)." + _by_profile("model_max_retries")
        },
    )
    reply_max_tokens: int = field(
        default=BY_PROFILE,
        metadata={
            "description": "Tokens one model reply may have (the request's max_tokens); 0: "
            "the server's own limit." + _by_profile("reply_max_tokens")
        },
    )
    tool_calling: bool = field(
        default=True,
        metadata={
            "description": "Offer the root model an execute_python tool. Off: code "
            "travels only in ```repl blocks, for servers without tool support."
        },
    )
    approve_code: bool = field(
        default=False,
        metadata={
            "description": "Pause before every cell until a person accepts, edits or "
            "rejects the code (LangGraph interrupt; needs a checkpointer and a thread)."
        },
    )
    max_tokens: int = field(
        default=0,
        metadata={
            "description": "Token budget (prompt + completion, every model of the whole "
            "recursion tree). Once reached, no further model call is made and the run "
            "returns the best answer so far, marked budget_exhausted. 0: no limit."
        },
    )
    max_dollars: float = field(
        default=0.0,
        metadata={
            "description": "Dollar budget, priced with the prices table; reached, the "
            "run stops like max_tokens. 0: no limit."
        },
    )
    prices: PriceTable = field(
        default_factory=dict,
        metadata={
            "description": "Per-model prices in dollars per million tokens, e.g. "
            '{"my-model": {"input": 0.5, "output": 1.5, "cached_input": 0.05}}; '
            "extends and overrides the built-in table (rlm_graph/models/pricing.py)."
        },
    )
    trace_text_chars: int = field(
        default=2_000,
        metadata={
            "description": "Characters of each sub-call prompt and answer kept in "
            "progress events and trajectories (longer text is cut with an ellipsis)."
        },
    )

    def __post_init__(self) -> None:
        """Fill in what the server profile decides; reject impossible settings up front.

        Each rejection is one line that says what to change.
        """
        self._apply_profile()
        for name, low in (
            ("max_iterations", 1),
            ("max_depth", 1),
            ("max_output_chars", 200),
            ("max_concurrency", 1),
            ("max_sub_calls", 0),
            ("max_batch_size", 1),
            ("max_prompt_chars", 1),
            ("root_window_tokens", 0),
            ("sub_model_window_tokens", 0),
            ("sandbox_memory_mb", 64),
            ("lazy_context_mb", 1),
            ("cell_scan_mb", 1),
            ("lazy_folder_files", 0),
            ("cell_cpu_instructions", 5_000_000_000),
            ("model_max_retries", 0),
            ("reply_max_tokens", 0),
            ("max_tokens", 0),
            ("trace_text_chars", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"setting {name}={value!r} is out of range: use an integer >= {low}"
                )
        if self.sandbox_memory_mb > 4_096:
            raise ValueError(
                f"setting sandbox_memory_mb={self.sandbox_memory_mb} is out of range: "
                "the wasm32 sandbox can address at most 4096"
            )
        for name in ("cell_timeout", "model_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"setting {name}={value!r} is out of range: use seconds > 0")
        if not self.model.strip():
            raise ValueError("setting model is empty: name a model, e.g. openai:gpt-5")
        self._check_executor()
        self._check_cost_settings()

    def _apply_profile(self) -> None:
        """Settings left to the profile take its values; local models get a $0 price.

        Here rather than at each reader, so every reader (and Studio, whose form sends
        a dict LangGraph turns into Settings) sees numbers.
        """
        if self.server_profile not in SERVER_PROFILES:
            raise ValueError(
                f"setting server_profile={self.server_profile!r} is unknown: use "
                + ", ".join(map(repr, SERVER_PROFILES))
            )
        local = self.is_local
        for name, default in PROFILE_DEFAULTS.items():
            if getattr(self, name) == BY_PROFILE:
                value = default.local if local else default.hosted
                setattr(self, name, value if name == "model_timeout" else int(value))
        if isinstance(self.prices, dict):  # a malformed table is reported by check_prices
            free = {m: dict(FREE) for m in self.local_models if price_of(m, self.prices) is None}
            self.prices = {**free, **self.prices} if free else self.prices

    @property
    def is_local(self) -> bool:
        """Whether the profile in effect is the local server's."""
        if self.server_profile != "auto":
            return self.server_profile == "local"
        return bool(self.local_models)

    @property
    def local_models(self) -> list[str]:
        """The run's models served by a server people run themselves (priced $0)."""
        if self.server_profile == "hosted":
            return []
        pairs = dict.fromkeys(
            [(self.model, self.base_url), (self.effective_sub_model, self.effective_sub_base_url)]
        )
        return [name for name, url in pairs if self._served_locally(name, url)]

    def _served_locally(self, name: str, url: str) -> bool:
        if name.startswith("ollama:"):  # Ollama's provider talks to localhost:11434
            return True
        return bool(url) and (self.server_profile == "local" or is_local_url(url))

    def timeout_advice(self) -> str:
        """What bounds a model request that timed out, the likely cause, what to change.

        The timeout counts the time a request waits in the server's queue: a server that
        computes one request at a time answers the last of N concurrent ones after N
        replies' time.
        """
        return (
            f"No reply within model_timeout={self.model_timeout:g} s, which counts time "
            "queued at the server: one that computes a request at a time (llama.cpp) "
            f"answers the last of max_concurrency={self.max_concurrency} calls last. Send "
            "fewer prompts at once, or set --model-timeout higher or --max-concurrency lower."
        )

    def _check_executor(self) -> None:
        """A known executor, whose extra is installed: said now, not at the first sub-RLM."""
        if self.sub_rlm_executor not in SUB_RLM_EXECUTORS:
            raise ValueError(
                f"setting sub_rlm_executor={self.sub_rlm_executor!r} is unknown: use "
                + " or ".join(map(repr, SUB_RLM_EXECUTORS))
            )
        if self.sub_rlm_executor == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError(MISSING_RAY)

    def _check_cost_settings(self) -> None:
        """A dollar budget needs a price for every model it is to watch."""
        value = self.max_dollars
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"setting max_dollars={value!r} is out of range: use dollars >= 0")
        check_prices(self.prices)
        missing = unpriced_models([self.model, self.effective_sub_model], self.prices)
        if self.max_dollars and missing:
            raise ValueError(
                f"setting max_dollars needs a price for {', '.join(missing)}: add it to "
                'prices, e.g. {"' + missing[0] + '": {"input": 1.0, "output": 2.0}}'
            )

    def over_budget(self, spent: Usage) -> str:
        """Why ``spent`` reaches this run's token or dollar limit, or "" while it does not."""
        return over_budget(spent, self.max_tokens, self.max_dollars, self.prices)

    @property
    def effective_sub_model(self) -> str:
        """The sub model actually used, resolving the empty default."""
        if self.sub_model:
            return self.sub_model
        if self.base_url and not self.sub_base_url:
            return self.model
        provider, _, name = self.model.rpartition(":")
        smaller = _SMALLER_MODEL.get(name)
        if smaller is None:
            return self.model
        return f"{provider}:{smaller}" if provider else smaller

    @property
    def root_window(self) -> int:
        """The root model's window in tokens, resolving the unset default."""
        return self.root_window_tokens or DEFAULT_WINDOW_TOKENS

    @property
    def sub_window(self) -> int:
        """The sub model's window in tokens, resolving the unset default."""
        return self.sub_model_window_tokens or DEFAULT_WINDOW_TOKENS

    def reply_cap(self, model: str) -> int:
        """``reply_max_tokens`` for ``model``, at most a quarter of its window (0: none).

        vLLM refuses a request whose prompt plus ``max_tokens`` exceeds the window, so a
        cap of 2,048 on a 2,048-token window would refuse every request; a quarter leaves
        the prompt three (on llama.cpp's 8,192-token window the cap stays 2,048).
        """
        if not self.reply_max_tokens:
            return 0
        windows = [
            window
            for name, window in (
                (self.model, self.root_window),
                (self.effective_sub_model, self.sub_window),
            )
            if name == model
        ]
        return min([self.reply_max_tokens, *(w // 4 for w in windows)])

    def with_server_windows(self, asked: WindowCache | None = None) -> Settings:
        """These settings with each unset window filled in from what its server reports.

        Blocking HTTP (a few milliseconds against a local server, at most a few seconds
        when one does not answer): async code runs it in a thread. ``asked`` keeps the
        answers by (URL, model) for later calls (a server's deployment keeps one).
        """
        asked = {} if asked is None else asked
        updates: dict[str, Any] = {}
        for name, model, url in (
            ("root_window_tokens", self.model, self.base_url),
            ("sub_model_window_tokens", self.effective_sub_model, self.effective_sub_base_url),
        ):
            if getattr(self, name) or not url:
                continue
            served = model.removeprefix("openai:")  # the name the server knows it by
            if (url, served) not in asked:
                asked[url, served] = server_window(url, served)
            if window := asked[url, served]:
                updates[name] = window
        return replace(self, **updates) if updates else self

    @property
    def effective_sub_base_url(self) -> str:
        """The sub model's base URL, defaulting to the root's."""
        return self.sub_base_url or self.base_url

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Settings:
        """Build settings from loose keyword arguments, naming any unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}"
            )
        return cls(**values)
