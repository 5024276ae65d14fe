"""The eryx sandbox: one persistent Python session per run or thread.

Sessions are live objects and cannot live in graph state, so state keeps an id and
``registry`` keeps the live sessions under that id (each in a process of its own, see
``sandbox_process``). Everything a session holds can be rebuilt from state: the context
is mounted again from the blob store and the recorded cells are replayed with their
sub-call journals, so recorded sub-call answers come from the journal and no model is
called twice. That rebuild is what makes a timeout (which leaves an eryx session
unusable), a crash, another worker or a fork from an older checkpoint lose nothing.
Each cell starts with ``random`` seeded by its position, so random draws replay.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import eryx

from rlm_graph.repl.display import SHOW, clean_traceback, with_shown_value
from rlm_graph.repl.lazy import (
    FolderFiles,
    RangeFolder,
    Reader,
    SearchRequest,
    folder_for_ranges,
    scanned_note,
    search_request,
    search_text,
)
from rlm_graph.repl.prelude import PRELUDE
from rlm_graph.storage.contexts import blob_dir, blob_name, context_file, is_lazy
from rlm_graph.storage.home import home
from rlm_graph.storage.ranges import ChunkReader, Chunks
from rlm_graph.text import one_line, preview

if TYPE_CHECKING:
    from pathlib import Path

    from eryx._eryx import CallbackDict

    from rlm_graph.storage.contexts import ContextRef
    from rlm_graph.storage.records import Cell

_log = logging.getLogger(__name__)
CONTEXT_MOUNT = "/ctx"
# Output kept per stream and cell before the middle is dropped: printing a gigabyte
# must not take the host's memory with it.
CAPTURE_LIMIT = 4_000_000
# What the model reads after a halt: what survived and what did not.
REBUILT = "; the sandbox was rebuilt: earlier cells' variables are kept, this cell's are not."
# Largest answer (as JSON) taken from FINAL: it is stored in state and every checkpoint.
MAX_ANSWER_BYTES = 16 << 20
# Threads on which cells of in-process sandboxes wait (``RLM_SANDBOX_ISOLATION=inline``).
# A pool of their own: on the event loop's default executor, which a LangGraph server
# shares with every run (min(32, cores + 4) threads: six on 2 cores), six cells waiting
# on sub-calls held up every other run of the server (issue 20). One thread per cell in
# flight, so an operator serving more concurrent inline runs sets ``RLM_CELL_THREADS``.
CELL_THREADS_ENV = "RLM_CELL_THREADS"
CELL_THREADS = 64


class SubCallHandler(Protocol):
    """Host side of ``llm_query`` / ``llm_batch``; answers are JSON dicts for the guest."""

    def query(self, prompt: str) -> dict[str, Any]:
        """Answer one prompt."""
        ...

    def batch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Answer many prompts, or refuse the whole batch with an error dict."""
        ...


@runtime_checkable
class AsyncSubCallHandler(SubCallHandler, Protocol):
    """A handler that also answers on an event loop, holding no thread while it waits."""

    async def aquery(self, prompt: str) -> dict[str, Any]:
        """Answer one prompt."""
        ...

    async def abatch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Answer many prompts, or refuse the whole batch with an error dict."""
        ...


class NoSubCalls:
    """Handler for a sandbox used outside a run (replay with complete journals)."""

    def query(self, prompt: str) -> dict[str, Any]:
        """Refuse: no run is attached."""
        return {"ok": False, "error": "sub-calls are not available here"}

    def batch(self, prompts: list[str]) -> dict[str, Any]:
        """Refuse: no run is attached."""
        return {"ok": False, "error": "sub-calls are not available here"}


@dataclass(frozen=True)
class Limits:
    """The eryx limits of a session (the graph derives them from its settings)."""

    cell_timeout: float
    cpu_instructions: int
    memory_mb: int
    # Text contexts larger than this are a LazyText handle instead of a str.
    lazy_context_bytes: int = 256 << 20
    # Bytes of a lazy context one cell may read and search.
    scan_bytes: int = 32 << 30

    def resource_limits(self) -> eryx.ResourceLimits:
        """Eryx limits: the callback timeout outlasts the host's own wait for a sub-call.

        A host callback that outlives the callback timeout hangs the process when the
        session is dropped, so the host gives up first (see subcalls) and eryx later.
        """
        return eryx.ResourceLimits(
            execution_timeout_ms=int(self.cell_timeout * 1000),
            callback_timeout_ms=int((self.cell_timeout + 60) * 1000),
            max_memory_bytes=self.memory_mb << 20,
            max_callback_invocations=100_000,
            max_fuel=self.cpu_instructions,
        )


@dataclass
class CellOutcome:
    """What running one cell produced."""

    stdout: str
    stderr: str
    error: str
    halted: bool
    journal: list[Any]
    final: dict[str, Any] | None
    seconds: float
    scanned: int = 0
    """Bytes of a lazy context the cell read and searched."""

    @property
    def output(self) -> str:
        """Everything the model should see, in the order it matters."""
        parts = [self.stdout]
        if self.stderr:
            parts.append(self.stderr)
        if self.error and self.error not in self.stderr:  # eryx may print it there too
            parts.append(self.error)
        if self.scanned:
            parts.append(scanned_note(self.scanned))
        return "\n".join(p.rstrip("\n") for p in parts if p)


class _Capture:
    """Collects streamed output; keeps head and tail once past the limit."""

    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._head: list[bytes] = []
        self._tail = bytearray()
        self._size = 0
        self._dropped = 0
        self.written = 0

    def write(self, chunk: bytes) -> None:
        half = self._limit // 2
        tail_room = self._limit - half
        with self._lock:
            self.written += len(chunk)
            room = half - self._size
            if room > 0:
                self._head.append(chunk[:room])
                self._size += min(room, len(chunk))
                chunk = chunk[room:]
            if len(chunk) > tail_room:  # one huge print: never hold more than the limit
                self._dropped += len(self._tail) + len(chunk) - tail_room
                self._tail = bytearray(chunk[len(chunk) - tail_room :])
                return
            self._tail += chunk
            excess = len(self._tail) - tail_room
            if excess > 0:
                del self._tail[:excess]
                self._dropped += excess

    def take(self) -> str:
        """Return the captured text and start over.

        The cut is byte-wise and chunks may end inside a UTF-8 character, so the kept
        head ends and the kept tail starts on whole characters: the bytes of a character
        split by the cut count as dropped instead of showing up as U+FFFD.
        """
        with self._lock:
            head, tail, dropped = b"".join(self._head), bytes(self._tail), self._dropped
            self._head, self._tail, self._size, self._dropped = [], bytearray(), 0, 0
            self.written = 0
        if not dropped:
            return (head + tail).decode("utf-8", errors="replace")
        kept_head, kept_tail = _whole_prefix(head), _whole_suffix(tail)
        dropped += len(head) - len(kept_head) + len(tail) - len(kept_tail)
        return (
            f"{kept_head.decode('utf-8', errors='replace')}\n"
            f"[... {dropped:,} bytes of output dropped ...]\n"
            f"{kept_tail.decode('utf-8', errors='replace')}"
        )


def _whole_prefix(data: bytes) -> bytes:
    """``data`` without a UTF-8 character left incomplete at its end."""
    for back in range(1, min(len(data), 4) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the start of the last character
            needed = (
                1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            )
            return data if back >= needed else data[:-back]
    return data


def _whole_suffix(data: bytes) -> bytes:
    """``data`` without the continuation bytes of a character that began before it."""
    start = 0
    while start < min(len(data), 3) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:]


def _factory_path() -> str:
    digest = hashlib.sha256(PRELUDE.encode()).hexdigest()[:12]
    return str(home() / f"eryx-factory-{version('pyeryx')}-{digest}.bin")


def factory_ready() -> bool:
    """Whether the runtime snapshot is on disk; if not, say that the first start builds it."""
    if os.path.exists(_factory_path()):
        return True
    _log.warning("building the sandbox runtime in %s (once per machine, ~15 s)", _factory_path())
    return False


@cache
def sandbox_factory() -> eryx.SandboxFactory:
    """The factory every session comes from, built once per machine and kept on disk.

    Building takes 10-30 s; loading the saved file takes milliseconds. A file lock keeps
    parallel processes (server workers, test runs) from building it twice.
    """
    path = _factory_path()
    home().mkdir(parents=True, exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return eryx.SandboxFactory.load(path)
        except (eryx.InitializationError, OSError, ValueError):
            factory = eryx.SandboxFactory(setup_code=PRELUDE)
            tmp = f"{path}.{threading.get_ident()}.tmp"
            factory.save(tmp)
            os.replace(tmp, path)
            return factory


def clean_error(error: Exception | None, limits: Limits, printed: int = 0) -> tuple[str, bool]:
    """Turn an eryx error into (message for the model, whether the cell halted).

    Python exceptions keep their traceback minus eryx's own frame; halts (timeout,
    fuel, exit) get a sentence that says what happened and what survived. ``printed``
    is how many bytes the cell wrote: eryx also keeps all of a cell's output inside the
    sandbox, so printing a gigabyte breaks it with an opaque WebAssembly error.
    """
    if error is None:
        return "", False
    text = str(error)
    if isinstance(error, eryx.ExecutionError) and text.startswith("Traceback"):
        return clean_traceback(text).rstrip(), False
    if isinstance(error, eryx.TimeoutError):
        reason = (
            f"TimeoutError: the cell ran longer than {limits.cell_timeout:g} s (cell_timeout) "
            "and was stopped"
        )
    elif isinstance(error, eryx.ResourceLimitError):
        reason = f"ResourceLimitError: {text} (cell_cpu_instructions / sandbox_memory_mb)"
    elif "exit status" in text or "exit_exit" in text:
        reason = "SystemExit: the cell exited the interpreter"
    else:
        reason = f"SandboxError: {text.splitlines()[0] if text else type(error).__name__}"
        if printed > CAPTURE_LIMIT:
            reason += f" after the cell printed {printed:,} bytes (print less)"
    return reason + REBUILT, True


class _Journal:
    """Sub-call answers of one cell: recorded when live, served again on replay.

    eryx's own ``execute_with_journal`` snapshots every global before each cell, which
    took 12 s per cell once a model had split a 10 MB context into lines. Recording on
    the host costs nothing per cell. Entries are matched by a hash of the call, not by
    order, because concurrent sub-calls of one cell may arrive in any order.
    """

    def __init__(self, recorded: Sequence[Any] = ()) -> None:
        self._lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []
        self._replay: dict[str, deque[Any]] = {}
        for entry in recorded:
            self._replay.setdefault(entry["key"], deque()).append(entry["result"])

    @staticmethod
    def _key(call: str, args: Any) -> str:
        payload = json.dumps([call, args], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]

    def call(self, name: str, args: Any, live: Callable[[], Any]) -> Any:
        key = self._key(name, args)
        with self._lock:
            queue = self._replay.get(key)
            if queue:
                result = queue.popleft()
                self.entries.append({"call": name, "key": key, "result": result})
                return result
        result = live()
        with self._lock:
            self.entries.append({"call": name, "key": key, "result": result})
        return result


class SandboxBase(ABC):
    """What the registry sees of any sandbox: its context, limits, handler and health."""

    def __init__(self, ref: ContextRef, limits: Limits) -> None:
        self.ref = ref
        self.limits = limits
        self.handler: SubCallHandler = NoSubCalls()
        self.broken = False
        self.cells_run = 0

    @abstractmethod
    def run(self, code: str, journal: Sequence[Any] = ()) -> CellOutcome:
        """Run one cell (serving sub-calls recorded in ``journal``); collect any answer."""

    async def arun(self, code: str, journal: Sequence[Any] = ()) -> CellOutcome:
        """:meth:`run` for a coroutine.

        Here the cell waits on a thread of the cell pool (eryx's ``execute`` blocks its
        thread); a sandbox in a child process waits on its socket instead, holding none.
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(cell_pool(), self.run, code, list(journal))
        except asyncio.CancelledError:
            self.broken = True  # the cell still runs on its thread: never hand this one out
            raise

    def replay(self, cells: Sequence[Cell]) -> None:
        """Re-apply recorded cells so the session holds what it held before."""
        for cell in cells:
            self.run(cell["code"], cell["journal"])

    def close(self) -> None:  # noqa: B027 - in-process, dropping the object is enough
        """Let the session go."""


class Sandbox(SandboxBase):
    """One eryx session with the context bound and the RLM helpers defined.

    A halt (timeout, fuel, exit) leaves an eryx session unusable; the sandbox then marks
    itself ``broken`` and the registry rebuilds it from state by replay.
    """

    def __init__(
        self,
        ref: ContextRef,
        limits: Limits,
        chunks: Chunks | None = None,
        folder: Path | None = None,
    ) -> None:
        """Open a session on ``ref``: its file mounted, or served (``chunks``, a folder's files).

        ``folder``: where what is served goes, made (and removed) by the host of this
        worker process; by default one of its own.
        """
        super().__init__(ref, limits)
        self._remove_folder: Callable[[], object] = lambda: None  # a file has nothing to go
        self._journal = _Journal()
        self._searched = 0  # bytes the host searched for the current cell
        self._stdout = _Capture()
        self._stderr = _Capture()
        self._chunks = chunks
        self._ranges: RangeFolder | FolderFiles | None = None
        if chunks is not None:
            self._ranges = RangeFolder(chunks, folder or self._own_folder())
        elif ref["kind"] == "folder":
            self._ranges = FolderFiles(blob_dir(ref), folder or self._own_folder())
        mount = blob_dir(ref) if self._ranges is None else self._ranges.path
        self._session = sandbox_factory().create_session(
            resource_limits=limits.resource_limits(),
            volumes=[(str(mount), CONTEXT_MOUNT, True)],
            callbacks=self._callbacks(),
            on_stdout=self._stdout.write,
            on_stderr=self._stderr.write,
            result_variable="_rlm_result",
        )
        try:
            self._session.execute(self._binding())
        except (eryx.EryxError, TimeoutError) as exc:
            unit = "characters" if ref["kind"] == "text" else "items"
            # text can instead be read on demand, in a few MB whatever its size
            lazily = " or lower lazy_context_mb" if ref["kind"] == "text" else ""
            raise SandboxError(
                f"the context ({ref['length']:,} {unit}) could not be loaded into the "
                f"sandbox: {_last_line(exc)}; raise "
                f"sandbox_memory_mb (now {limits.memory_mb}, at most 4096){lazily}"
            ) from exc

    def _callbacks(self) -> list[CallbackDict]:
        """The host functions the prelude calls (never held strongly: see ``_weakly``)."""
        described = [
            ("_rlm_query", self._on_query, "Ask the sub model one prompt."),
            ("_rlm_batch", self._on_batch, "Ask the sub model many prompts."),
            ("_rlm_search", self._on_search, "Search a lazy context on the host."),
            ("_rlm_fetch", self._on_fetch, "Read a range of a context, or files of a folder."),
        ]
        return [{"name": n, "fn": _weakly(f), "description": d} for n, f, d in described]

    def _binding(self) -> str:
        """The code that binds ``context`` in the guest (see ``_rlm_bind_context``)."""
        scan = self.limits.scan_bytes
        if self._chunks is not None:
            return (
                f"_rlm_bind_context({CONTEXT_MOUNT!r}, 'text', True, {scan}, {self._chunks.size})"
            )
        path = f"{CONTEXT_MOUNT}/{blob_name(self.ref)}"
        lazy = is_lazy(self.ref, self.limits.lazy_context_bytes)
        return f"_rlm_bind_context({path!r}, {self.ref['kind']!r}, {lazy}, {scan})"

    def _on_query(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        prompt = kwargs.get("prompt")
        if args or set(kwargs) != {"prompt"} or not isinstance(prompt, str):
            return _refused("_rlm_query takes one keyword argument, prompt=str")
        return guarded(
            lambda: self._journal.call("query", prompt, lambda: self.handler.query(prompt))
        )

    def _on_batch(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]] | dict[str, Any]:
        prompts = kwargs.get("prompts")
        if (
            args
            or set(kwargs) != {"prompts"}
            or not isinstance(prompts, list)
            or not all(isinstance(p, str) for p in prompts)
        ):
            return _refused("_rlm_batch takes one keyword argument, prompts=[str, ...]")
        return guarded(
            lambda: self._journal.call("batch", prompts, lambda: self.handler.batch(prompts))
        )

    def _on_search(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        request = search_request(kwargs)
        if isinstance(request, str) or args:
            return _refused(request if isinstance(request, str) else "keyword arguments only")
        return guarded(lambda: self._search(request))

    def _on_fetch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Write what a read of the guest asks for into its mount.

        A ``RangeFolder`` writes bytes [start, stop), a ``FolderFiles`` files.
        """
        number, start, stop = (kwargs.get(k) for k in ("number", "start", "stop"))
        if (
            args
            or len(kwargs) != 3
            or not (isinstance(number, int) and isinstance(start, int) and isinstance(stop, int))
        ):
            return _refused("_rlm_fetch takes integer keyword arguments number, start, stop")
        if self._ranges is None:
            return _refused("the context is read from its file, not fetched")
        self._ranges.serve(number, start, stop)
        return {"ok": True}

    def _search(self, request: SearchRequest) -> dict[str, Any]:
        """Search on the host, within what is left of the cell's scan limit.

        The guest counts its own reads (it reads the mount directly) and sends the sum;
        the host counts what it searched, and the guest learns that from every reply.
        """
        budget = self.limits.scan_bytes - request.read - self._searched
        try:
            if isinstance(self._ranges, FolderFiles):
                found = self._ranges.search(request, budget)
            else:
                with self._open_context() as reader:
                    found = search_text(reader, request, budget)
        except ValueError as exc:  # a bad pattern: the model's to fix
            return {**_refused(str(exc)), "searched": self._searched}
        self._searched += found.scanned
        if found.stopped:
            return {**_refused(found.stopped), "searched": self._searched}
        return {"ok": True, "value": found.hits, "searched": self._searched}

    def _open_context(self) -> AbstractContextManager[Reader]:
        """The context's bytes for a search: its file, or a reader of the store's chunks.

        A reader of its own per search: searches of one cell may run concurrently.
        """
        if self._chunks is not None:
            return ChunkReader(self._chunks)
        return context_file(self.ref).open("rb", buffering=0)

    def _own_folder(self) -> Path:
        folder, self._remove_folder = folder_for_ranges(self)
        return folder

    def close(self) -> None:
        """Let the ranges of a context from the store go, and their folder if it is ours."""
        if isinstance(self._ranges, RangeFolder):
            self._ranges.close()
        self._remove_folder()

    def _alive(self) -> bool:
        """Whether the session still runs and still holds its state after an error.

        Only the marker set when the context was bound is read: a cell that deleted
        ``FINAL`` or ``llm_query`` once made every later error a rebuild that lost the
        erring cell's variables (issue 13).
        """
        try:
            self._session.execute("_rlm_alive")
        except (eryx.EryxError, TimeoutError):
            return False
        return True

    def run(self, code: str, journal: Sequence[Any] = ()) -> CellOutcome:
        """Run one cell (serving sub-calls recorded in ``journal``); collect any answer."""
        if self.broken:
            raise SandboxBroken("the session halted earlier; rebuild it from state")
        self._stdout.take()
        self._stderr.take()
        self._journal = _Journal(journal)
        self._searched = 0
        started = time.perf_counter()
        failure: Exception | None = None
        self.cells_run += 1
        self._begin_cell()
        try:
            self._session.execute(with_shown_value(code))
            if not self._stdout.written and not self._stderr.written:
                self._session.execute(SHOW)
        except (eryx.EryxError, TimeoutError) as exc:  # eryx's timeout is not an EryxError
            failure = exc
        seconds = time.perf_counter() - started
        error, halted = clean_error(failure, self.limits, self._stdout.written)
        stdout, stderr = self._stdout.take(), clean_traceback(self._stderr.take())
        entries = self._journal.entries
        if failure is not None and (halted or not self._alive()):
            self.broken = True
            return CellOutcome(stdout, stderr, error, True, entries, None, seconds, self._searched)
        final, read, problem = self._collect()
        scanned = self._searched + read
        if problem and not self._alive():
            self.broken = True
            error = problem + REBUILT
            return CellOutcome(stdout, stderr, error, True, entries, None, seconds, scanned)
        error = "\n".join(part for part in (error, problem) if part)
        return CellOutcome(stdout, stderr, error, False, entries, final, seconds, scanned)

    def _begin_cell(self) -> None:
        """Seed ``random`` by the cell's position (so draws replay), zero the read count.

        A cell that replaced ``_rlm_begin_cell`` or ``_rlm_random`` gives up replayable
        draws and its count of reads, nothing more: had the failure ended the cell, none
        of its code, nor any later cell's, would ever run again (issue 13). After a halt
        here (a replacement that loops) the session refuses the code too, and the cell
        halts as any other.
        """
        with suppress(eryx.EryxError, TimeoutError):
            self._session.execute(f"_rlm_begin_cell({self.cells_run})")

    def _collect(self) -> tuple[dict[str, Any] | None, int, str]:
        """The cell's answer, if any, and the bytes of a lazy context its code read.

        Or why the answer cannot be taken out of the sandbox: it crosses as JSON, and a
        huge one (measured: 200 MB) fails inside eryx, and one that crosses would still
        land in every checkpoint of the thread.
        """
        try:
            data = self._session.execute("_rlm_collect()").result_json
        except (eryx.EryxError, TimeoutError) as exc:
            return (
                None,
                0,
                (
                    f"FinalError: the answer could not be taken out of the sandbox "
                    f"({_last_line(exc)}): answer with plain data (text, finite numbers, "
                    "lists, dicts), a summary if it is large"
                ),
            )
        if data and len(data) > MAX_ANSWER_BYTES:
            return (
                None,
                0,
                (
                    f"FinalError: the answer is {len(data):,} bytes as JSON, over the "
                    f"{MAX_ANSWER_BYTES:,} an answer may hold: answer with a summary instead"
                ),
            )
        return _collected(data)


def _collected(data: str | None) -> tuple[dict[str, Any] | None, int, str]:
    """The answer and read count in the JSON ``_rlm_collect()`` left, or why it is none.

    The collector is guest code like any other: a cell may redefine it, or what it reads,
    and leave anything in ``_rlm_result``. Taking that on trust made the host raise in
    the execute node, and every resume of the thread raise again (issue 13). Only
    ``{"read": n}`` or ``{"read": n, "value": ...}`` is taken; no JSON at all (what eryx
    gives for a value it cannot convert) is an error the model reads, never a silent miss.
    """
    found = json.loads(data) if data else None
    if not isinstance(found, dict) or not {"read"} <= found.keys() <= {"read", "value"}:
        return None, 0, _not_collected(preview(data, 80) if data else "no JSON")
    read = found["read"]
    if type(read) is not int or read < 0:
        return None, 0, _not_collected(preview(data or "", 80))
    return ({"value": found["value"]} if "value" in found else None), read, ""


def _not_collected(left: str) -> str:
    return (
        f"FinalError: no answer could be collected: _rlm_collect() left {left}, not an "
        "answer. A cell redefined the sandbox's _rlm_collect or what it reads (_rlm_final, "
        "_rlm_scan, _rlm_jsonable, answer): leave them alone, or answer in plain text with "
        "FINAL(...)"
    )


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """A callback for eryx that does not keep its sandbox alive.

    eryx holds callbacks in Rust, where Python's cycle collector cannot see them: a
    bound method there closed the cycle sandbox -> session -> callback -> sandbox, and
    every sandbox ever made stayed in memory (~10 MB each, measured).
    """
    ref = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = ref()
        return _refused("the sandbox was closed") if bound is None else bound(*args, **kwargs)

    return call


def _refused(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


def guarded[T](answer: Callable[[], T]) -> T | dict[str, Any]:
    """Run a callback's host side; a host exception becomes a one-line error dict.

    Left alone, eryx hands the guest the host's full traceback, with file paths of
    the host's installation, as the text of a RuntimeError.
    """
    try:
        return answer()
    except Exception as exc:
        return _handler_failed(exc)


async def answer_awaited(handler: SubCallHandler, name: str, payload: Any) -> Any:
    """:func:`guarded` for a coroutine: the handler's answer to a ``query`` or ``batch``.

    A handler that can answer on the loop does (a sub-RLM may take minutes, and must
    hold no thread meanwhile); any other answers on a thread.
    """
    try:
        if isinstance(handler, AsyncSubCallHandler):
            if name == "query":
                return await handler.aquery(payload)
            return await handler.abatch(payload)
        return await asyncio.to_thread(handler.query if name == "query" else handler.batch, payload)
    except Exception as exc:
        return _handler_failed(exc)


def _handler_failed(exc: Exception) -> dict[str, Any]:
    _log.warning("sub-call handler failed", exc_info=True)
    return _refused(f"the host could not answer this sub-call ({one_line(exc)})")


class SandboxError(RuntimeError):
    """A sandbox could not be set up; the message says what to change."""


def _last_line(exc: BaseException) -> str:
    """The line that says what failed: a guest traceback's exception line, else the last.

    Python 3.14's json adds notes after the exception line ("when serializing list item
    0"), which alone told the model nothing about a circular or NaN answer.
    """
    lines = str(exc).strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if starts:
        after = (line for line in lines[starts[-1] + 1 :] if line and not line[0].isspace())
        return next(after, lines[-1])
    return lines[-1] if lines else type(exc).__name__


class SandboxBroken(RuntimeError):
    """The session halted and must be rebuilt from state before it runs again."""


def env_number(environ: Mapping[str, str], name: str, default: int, least: int) -> int:
    """An operator's whole-number setting from the environment, ``default`` when unset."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < least:
        raise SandboxError(f"{name}={raw!r}: a whole number, at least {least}")
    return int(raw)


@cache
def cell_pool() -> ThreadPoolExecutor:
    """The cell pool of this process, sized by ``RLM_CELL_THREADS`` when first needed."""
    return ThreadPoolExecutor(env_number(os.environ, CELL_THREADS_ENV, CELL_THREADS, 1), "rlm-cell")
