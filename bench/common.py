"""Shared plumbing: environment, the timed stub, scripted replies, haystacks, tables."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def setup_env() -> None:
    """Point the cache at the tests' home (factory already built) and keep tracing off.

    Must run before anything reads ``RLM_GRAPH_HOME``; a fresh home would add ~15 s
    of sandbox-factory build to the first measurement.
    """
    os.environ.setdefault("RLM_GRAPH_HOME", os.path.join(tempfile.gettempdir(), "rlm-graph-tests"))
    os.environ["LANGSMITH_TRACING"] = "false"
    os.environ["LANGSMITH_TEST_TRACKING"] = "false"
    # dspy (through litellm) would fetch a model price list from the internet at first use
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "true"


setup_env()

from bench.calls import ROOT_MODEL, SUB_MODEL  # noqa: E402 (shared with the peers)
from rlm_graph.offline.stub_server import (  # noqa: E402
    StubReply,
    StubServer,
    is_root_request,
    replies_so_far,
)


class TimedStub(StubServer):
    """A stub that also records how long it held each completion (server side).

    "Stub time" is what a real model would cost: from the request's arrival to the
    finished response. Client serialization and HTTP handling stay in the overhead,
    because the framework (and the floor alike) pays them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: list[float] = []
        self._served_lock = threading.Lock()

    def _completion(self, body: dict[str, Any], reply: StubReply) -> dict[str, Any]:
        out = super()._completion(body, reply)
        done = time.monotonic()
        arrived = next((r.timestamp for r in reversed(self.requests) if r.body is body), done)
        with self._served_lock:
            self.served.append(done - arrived)
        return out

    def take_served(self) -> float:
        """Total server-side seconds since the last call, and start over."""
        with self._served_lock:
            total = sum(self.served)
            self.served.clear()
        return total


class ClientTimer:
    """Adds up the time spent in ``ChatOpenAI.invoke`` while active (root calls only).

    That is the model client's share of an iteration (request building, HTTP, parsing
    and the stub's own time); the graph and the floor use the same client, so the part
    the project controls is what remains.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._original: Any = None

    def __enter__(self) -> ClientTimer:
        from langchain_openai import ChatOpenAI

        original = ChatOpenAI.invoke
        self._original = original

        def timed(model: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(model, *args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - started

        ChatOpenAI.invoke = timed  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        from langchain_openai import ChatOpenAI

        ChatOpenAI.invoke = self._original  # type: ignore[method-assign]


Responder = Callable[[dict[str, Any]], StubReply | str]


def scripted(
    root: Sequence[StubReply], sub: Callable[[dict[str, Any]], StubReply | str] | None = None
) -> Responder:
    """Root replies by iteration (the last one repeats), sub-calls by ``sub``."""

    def respond(body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            return root[min(replies_so_far(body), len(root) - 1)]
        return sub(body) if sub is not None else "ok"

    return respond


def stub_settings(server: StubServer, **overrides: Any) -> dict[str, Any]:
    """Graph settings pointing both models at the stub, without retries."""
    settings: dict[str, Any] = {
        "model": ROOT_MODEL,
        "sub_model": SUB_MODEL,
        "base_url": server.base_url,
        "server_profile": "hosted",  # the stub plays a hosted API, not a local server
        "model_timeout": 60.0,
        "model_max_retries": 0,
        "cell_timeout": 120.0,
    }
    settings.update(overrides)
    return settings


# -- haystacks --------------------------------------------------------------------------

_WORD_TEXT = (
    "the of and a to in is was that for on are with as his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like "
    "so these her long make thing see him two has look more day could go come did number "
    "sound no most people my over know water than call first who may down side been now find "
    "river garden lantern harbor meadow copper violet engine season mirror anchor orchard"
)
_WORDS = _WORD_TEXT.split()


def haystack_text(size: int, seed: int) -> str:
    """About ``size`` characters of seeded, sentence-shaped ASCII text.

    Words are drawn in bulk per ~64 KB block, so 100 MB takes seconds, not minutes.
    """
    rng = random.Random(seed)
    blocks: list[str] = []
    total = 0
    while total < size:
        words = rng.choices(_WORDS, k=12_000)
        lines = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
        block = "\n".join(lines) + "\n"
        blocks.append(block)
        total += len(block)
    return "".join(blocks)[:size]


def write_haystack(path: Path, size: int, seed: int) -> Path:
    """Write a seeded haystack to ``path`` in 8 MB pieces (bounded memory)."""
    piece = 8 << 20
    with path.open("w", encoding="ascii") as out:
        for index, start in enumerate(range(0, size, piece)):
            out.write(haystack_text(min(piece, size - start), seed * 1_000 + index))
    return path


def forget_blob(context: Any) -> None:
    """Remove a benchmark context from the shared blob store, so runs leave no 100 MB files.

    Storing an already stored value only re-hashes it, so this costs one hash pass.
    """
    from rlm_graph.api import reference
    from rlm_graph.storage.contexts import blob_dir

    shutil.rmtree(blob_dir(reference(context)), ignore_errors=True)


# -- statistics and tables --------------------------------------------------------------


def load() -> str:
    """The 1-minute load average, for a table's title: the machine is shared."""
    return f"{os.getloadavg()[0]:.1f}"


def median(values: Sequence[float]) -> float:
    """Median; the benchmarks repeat 3 times and report the middle run."""
    return statistics.median(values)


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table cell, with a sensible number of significant digits."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits - 1}f}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (so the output pastes straight into docs/benchmarks.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([f"### {title}", "", line, rule, *body, ""])


def verdict(value: float, target: float) -> str:
    """Whether a measured value meets a backlog target (lower is better)."""
    return "met" if value <= target else "MISSED"
