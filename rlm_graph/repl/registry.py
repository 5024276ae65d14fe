"""Live sandboxes of this process, keyed by the sandbox id kept in graph state.

State can only hold an id; this registry maps it to a live session, and brings that
session to exactly the cells state describes: a missing session (a new process, an
evicted one, a crashed child), a broken one (after a halt) or one that ran other cells
(a fork) is rebuilt by replaying the recorded cells with their sub-call journals.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field

from rlm_graph.offload import owns_loop
from rlm_graph.repl.process import IsolatedSandbox
from rlm_graph.repl.session import (
    Limits,
    NoSubCalls,
    Sandbox,
    SandboxBase,
    SandboxError,
    SubCallHandler,
    env_number,
)
from rlm_graph.storage.contexts import ContextRef, context_file
from rlm_graph.storage.ranges import Chunks
from rlm_graph.storage.records import Cell, CellRef

# Hygiene for long-lived servers: idle sessions are closed, and at most this many stay
# live (a closed one is rebuilt from state when its thread comes back, in ~0.1-0.4 s).
# A live sandbox is an eryx session in a shared worker process, ~11 MB PSS (32 measured
# at 353 MB in 2 workers, issue 20), so sandboxes of finished runs are kept for their
# follow-ups; the host's free memory, not only this count, decides when they go.
IDLE_SECONDS = 600.0
MAX_LIVE = 64
BUSY_SECONDS = 60.0
ISOLATION_ENV = "RLM_SANDBOX_ISOLATION"
# Below this much available host memory (MB), idle sandboxes are closed, least recently
# used first, until there is this much again.
MIN_AVAILABLE_ENV = "RLM_MIN_AVAILABLE_MB"
MIN_AVAILABLE_MB = 512


def open_sandbox(ref: ContextRef, limits: Limits, chunks: Chunks | None = None) -> SandboxBase:
    """A new sandbox: in a child process of its own (the default), or in this process.

    ``RLM_SANDBOX_ISOLATION=inline`` gives up the crash containment of a child process
    (see ``sandbox_process``) for memory: no worker runtime (~120 MB per worker of up to
    ``SESSIONS_PER_WORKER`` sandboxes). ``chunks``: the context is read from the store.
    """
    mode = os.environ.get(ISOLATION_ENV, "process")
    if mode == "inline":
        return Sandbox(ref, limits, chunks)
    if mode != "process":
        raise SandboxError(f"{ISOLATION_ENV}={mode!r}: use 'process' (the default) or 'inline'")
    return IsolatedSandbox(ref, limits, chunks)


def replayable(cells: Sequence[CellRef]) -> list[CellRef]:
    """The cells whose effects the session holds: code that ran and did not halt."""
    return [c for c in cells if c["kind"] != "note" and not c["halted"]]


LoadCells = Callable[[Sequence[CellRef]], list[Cell]]


@dataclass(frozen=True)
class Checkout:
    """A session asked of the registry: whose, in which state, answering whom while held."""

    sandbox_id: str
    ref: ContextRef
    cells: Sequence[CellRef]
    """The cells state records: the session is brought to exactly their effects."""
    limits: Limits
    handler: SubCallHandler
    chunks: Chunks | None = None
    """The store's chunks of a lazy context this machine does not hold (``stored_text``)."""


MemoryReading = Callable[[], int | None]


def available_memory() -> int | None:
    """The host's available memory in bytes (MemAvailable), None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError):
        return None
    return None


@dataclass
class _Entry:
    """A registry slot; its lock is held while the session is built, replayed or used."""

    sandbox: SandboxBase | None = None
    applied: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


class SandboxRegistry:
    """Live sessions of this process, keyed by the sandbox id kept in state."""

    def __init__(
        self,
        idle_seconds: float = IDLE_SECONDS,
        max_live: int = MAX_LIVE,
        busy_seconds: float = BUSY_SECONDS,
        available: MemoryReading = available_memory,
        min_available_mb: int | None = None,
    ) -> None:
        """Keep live sessions; ``available`` reads the host's free memory.

        ``min_available_mb`` defaults to ``RLM_MIN_AVAILABLE_MB`` (else
        ``MIN_AVAILABLE_MB``), read at each checkout: the registry is made at import,
        where a bad value would stop every import of the package instead of saying so.
        """
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._idle_seconds = idle_seconds
        self._max_live = max_live
        self._busy_seconds = min(busy_seconds, idle_seconds)
        self._available = available
        self._min_available_mb = min_available_mb

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, sandbox_id: object) -> bool:
        with self._lock:
            return sandbox_id in self._entries

    def prepare(self, sandbox_id: str, ref: ContextRef, limits: Limits) -> None:
        """Start building a new thread's session in the background.

        Called while the root model is still thinking about its first reply, so
        loading the runtime and reading a large context overlap the model's latency.
        A failure here is left for :meth:`checkout` to raise where it can be reported,
        and a context this machine does not hold is left for it too: it knows the store.
        """
        if not context_file(ref).exists():
            return
        try:
            entry = self._entry_for(sandbox_id)
        except SandboxError:  # a bad operator setting: the checkout reports it
            return

        def build() -> None:
            with entry.lock:
                if entry.sandbox is None:
                    with suppress(Exception):
                        entry.sandbox = open_sandbox(ref, limits)

        threading.Thread(target=build, name=f"rlm-prepare-{sandbox_id[:8]}", daemon=True).start()

    @contextmanager
    def checkout(self, want: Checkout, load: LoadCells) -> Iterator[SandboxBase]:
        """Hold the session ``want`` names, in the state its cells describe.

        A missing session (new process, evicted), a broken one, one with other limits,
        or one whose applied cells differ from state (a fork, another worker moved on)
        is rebuilt by replay; one that is merely behind gets only the missing cells.
        Full records are loaded (``load``) only for the cells that must be replayed.
        """
        entry, box = self._hold(want, load)
        try:
            yield box
        finally:
            _give_back(entry, box)

    @asynccontextmanager
    async def acheckout(self, want: Checkout, load: LoadCells) -> AsyncIterator[SandboxBase]:
        """:meth:`checkout` for a coroutine (see :meth:`_ahold`)."""
        entry, box = await self._ahold(want, load)
        try:
            yield box
        finally:
            _give_back(entry, box)

    async def _ahold(self, want: Checkout, load: LoadCells) -> tuple[_Entry, SandboxBase]:
        """:meth:`_hold` waiting, building and replaying on a thread (``offload``).

        Inline when the loop is its synchronous caller's own, which nothing cancels.
        Cancelled while the thread still works, the session is given back when it is done,
        so the next run on this sandbox never waits for a lock nobody holds.
        """
        if owns_loop():
            return self._hold(want, load)
        holding = asyncio.ensure_future(asyncio.to_thread(self._hold, want, load))
        try:
            return await asyncio.shield(holding)
        except asyncio.CancelledError:
            holding.add_done_callback(_give_back_when_held)
            raise

    def _hold(self, want: Checkout, load: LoadCells) -> tuple[_Entry, SandboxBase]:
        """Lock the entry ``want`` names and bring its session to its cells (see checkout)."""
        wanted = replayable(want.cells)
        prints = [c["record"] for c in wanted]
        entry = self._entry_for(want.sandbox_id)
        entry.lock.acquire()
        try:
            box = entry.sandbox
            if (
                box is None
                or box.broken
                or box.ref != want.ref
                or box.limits != want.limits
                or entry.applied != prints[: len(entry.applied)]
            ):
                if box is not None:
                    box.close()
                box = entry.sandbox = open_sandbox(want.ref, want.limits, want.chunks)
                entry.applied = []
            box.handler = want.handler
            if len(entry.applied) < len(prints):
                box.replay(load(wanted[len(entry.applied) :]))
                entry.applied = prints
        except BaseException:
            entry.lock.release()
            raise
        return entry, box

    def record(self, sandbox_id: str, cell: CellRef) -> None:
        """Note that ``cell`` is now applied in the live session."""
        with self._lock:
            entry = self._entries.get(sandbox_id)
        if entry is not None and replayable([cell]):
            entry.applied.append(cell["record"])

    def release(self, sandbox_id: str) -> None:
        """Drop the session (run finished, thread done)."""
        with self._lock:
            entry = self._entries.pop(sandbox_id, None)
        if entry is not None:
            _close(entry)

    def _entry_for(self, sandbox_id: str) -> _Entry:
        with self._lock:
            self._evict()
            return self._entries.setdefault(sandbox_id, _Entry())

    def _evict(self) -> None:
        """Close idle sessions, keep at most ``max_live``, and give memory back to the host.

        A session used within ``busy_seconds`` belongs to a run that is still going (it is
        between two cells): closing it would only make that run rebuild it, so a burst of
        more than ``max_live`` runs may exceed the cap until they finish.
        """
        floor = self._min_available()
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if now - entry.last_used > self._idle_seconds and not entry.lock.locked():
                _close(self._entries.pop(key))
        idle = self._least_recently_used(now)
        over = max(0, len(self._entries) - self._max_live + 1)
        for key in idle[:over]:
            _close(self._entries.pop(key))
        for key in idle[over:]:
            # Read again after each close. The reading may lag (a worker drops a session
            # after the message, and eryx keeps freed pages for reuse until its worker
            # ends), so pressure may close more idle sandboxes than strictly needed:
            # they are rebuilt by replay when their thread comes back.
            free = self._available()
            if free is None or free >= floor:
                break
            _close(self._entries.pop(key))

    def _min_available(self) -> int:
        """Host memory (bytes) under which idle sessions close; SandboxError if set wrong."""
        megabytes = self._min_available_mb
        if megabytes is None:
            megabytes = env_number(os.environ, MIN_AVAILABLE_ENV, MIN_AVAILABLE_MB, 0)
        return megabytes << 20

    def _least_recently_used(self, now: float) -> list[str]:
        """Sessions no run holds or used within ``busy_seconds``, oldest use first."""
        idle = sorted(
            (e.last_used, k)
            for k, e in self._entries.items()
            if not e.lock.locked() and now - e.last_used > self._busy_seconds
        )
        return [key for _, key in idle]


def _give_back(entry: _Entry, box: SandboxBase) -> None:
    """A held session is free again, answering no sub-calls until the next checkout."""
    box.handler = NoSubCalls()
    entry.last_used = time.monotonic()
    entry.lock.release()


def _give_back_when_held(holding: asyncio.Future[tuple[_Entry, SandboxBase]]) -> None:
    if not holding.cancelled() and holding.exception() is None:
        _give_back(*holding.result())


def _close(entry: _Entry) -> None:
    """End an entry's session (one still being built is ended when it is collected)."""
    if entry.sandbox is not None:
        entry.sandbox.close()


REGISTRY = SandboxRegistry()
