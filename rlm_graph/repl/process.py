"""Sandboxes in child processes, so hostile code cannot take the host down.

eryx runs guest code on a fiber with a fixed native stack. C code that nests about
2,000 levels deep (``json.loads`` of deep brackets, ``repr`` of a deeply nested list)
overflows it, and wasmtime then aborts the whole process: in-process, one cell would
kill a ``langgraph dev`` server and every run in it. In a child process it kills only
that child's sandboxes, which the registry rebuilds by replay as after any other halt.
A child never sees the host's keys.

How it works: one *zygote* per host process (``python -m rlm_graph.repl.process``)
imports the modules once and forks *workers*, which load the runtime snapshot. A worker
hosts up to ``SESSIONS_PER_WORKER`` sandboxes, each on a thread of its own (eryx
releases the GIL while a cell runs): a sandbox in a worker of its own cost ~135 MB PSS,
an eryx session ~15 MB (issue 20). The zygote must never load the eryx runtime itself:
a process forked after that hangs. Host and worker talk over a socket pair, one thread
each way on the host; a cell's messages (its result, its sub-calls, made by guest code
and answered by the host, so model clients and keys stay there) wait in its
:class:`_Mailbox`, for a thread or a coroutine. Spare room is kept ready, so opening a
sandbox costs what it costs in-process. A worker that holds more memory than its
sandboxes were allowed ends itself (:class:`_MemoryBound`), as a crash would.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from queue import Queue, SimpleQueue
from typing import IO, TYPE_CHECKING, Any

from rlm_graph.allocator import return_freed_blocks
from rlm_graph.redact import is_secret_name
from rlm_graph.repl.lazy import folder_for_ranges
from rlm_graph.repl.session import (
    REBUILT,
    CellOutcome,
    Limits,
    Sandbox,
    SandboxBase,
    SandboxBroken,
    SandboxError,
    answer_awaited,
    env_number,
    factory_ready,
    guarded,
    sandbox_factory,
)
from rlm_graph.storage.ranges import ChunkError, Chunks
from rlm_graph.text import one_line

if TYPE_CHECKING:
    from rlm_graph.storage.contexts import ContextRef

# How long past its own limits a worker may stay silent before the host kills it.
_GRACE_SECONDS = 120.0
_START_SECONDS = 120.0  # a first start may build the runtime snapshot (~15 s)
_STACK_OVERFLOW = "overflowed its stack"
# Sandboxes per worker process. More share a process's ~120 MB of runtime among more
# sessions; fewer are lost to one crash (all of them are rebuilt by replay).
SESSIONS_PER_WORKER = 16
# A worker left without sandboxes that holds more than this ends rather than waiting as
# the spare: eryx keeps freed sandbox memory resident for reuse.
REUSE_BYTES = 384 << 20
# Resident memory (MB) a worker may hold past what it held when it started, for each
# sandbox on top of its sandbox_memory_mb, and once for the worker: what a sandbox holds
# outside its wasm memory, chiefly sub-call prompts and answers in flight (each crosses
# as ~3 copies: JSON, str, pickle). Measured: 16 sandboxes each sending a batch of 100
# prompts of 100 KB and printing 8 MB took ~77 MB each, wasm memory included; 40
# gathered prompts of 10 MB from a 256 MB sandbox took 470 MB outside it.
HEADROOM_ENV = "RLM_SANDBOX_HEADROOM_MB"
HEADROOM_MB = 256
# Sub-call answers grew a worker by ~0.3 GB/s here; it was ended 1-60 MB past its bound.
_WATCH_SECONDS = 0.05
_OVER_MEMORY = "over its memory bound"


# -- the child ----------------------------------------------------------------------------


class _Link:
    """The child's end of the socket: sends from any sandbox's thread, sub-calls waiting."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(message)

    def deliver(self, call_id: int, result: Any) -> None:
        event, slot = self._waiting.pop(call_id, (None, []))
        if event is not None:
            slot.append(result)
            event.set()

    def ask(self, sandbox: int, name: str, payload: Any, wait: float) -> Any:
        """Send a sub-call of ``sandbox`` to the host and wait for its answer."""
        call_id = next(self._ids)
        event, slot = threading.Event(), list[Any]()
        self._waiting[call_id] = (event, slot)
        self.send(("call", sandbox, call_id, name, payload))
        if not event.wait(wait):
            self._waiting.pop(call_id, None)
            return {"ok": False, "error": "the host did not answer this sub-call in time"}
        return slot[0]


@dataclass(frozen=True)
class _RemoteHandler:
    """One sandbox's sub-calls, in the child: each becomes a request the host answers."""

    link: _Link
    sandbox: int
    wait: float

    def query(self, prompt: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.link.ask(self.sandbox, "query", prompt, self.wait)
        return answer

    def batch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        answers: list[dict[str, Any]] | dict[str, Any] = self.link.ask(
            self.sandbox, "batch", prompts, self.wait
        )
        return answers


@dataclass(frozen=True)
class _RemoteChunks:
    """A stored context's chunks, in the child: the host, which holds the store, sends them."""

    link: _Link
    sandbox: int
    size: int
    chunk_bytes: int
    wait: float

    def chunk(self, index: int) -> bytes:
        answer = self.link.ask(self.sandbox, "chunk", index, self.wait)
        if isinstance(answer, bytes):
            return answer
        raise ChunkError(answer["error"])


def _chunk_answer(chunks: Chunks | None, index: Any) -> bytes | dict[str, Any]:
    """The host's answer to a child's ``chunk`` call: the bytes, or why they cannot be had."""
    if chunks is None or not isinstance(index, int):
        return {"ok": False, "error": "this sandbox's context is not read from the store"}
    try:
        return chunks.chunk(index)
    except Exception as exc:  # a damaged chunk, or the store out of reach: the cell says so
        return {"ok": False, "error": one_line(exc)}


class _MemoryBound:
    """The resident memory a worker may hold: its own at start, plus each sandbox's share.

    Not ``RLIMIT_AS`` or ``RLIMIT_DATA`` (measured, pyeryx 0.11): wasmtime's pooling
    allocator reserves address space for every instance slot up front, so a worker with
    one sandbox has a VmSize of 4.25 TB and a VmData of 24 GB; and VmData never shrinks:
    a sandbox that grew 600 MB and closed left it 607 MB higher (its RSS fell back), and
    the next sandbox took another slot (+615 MB). A data limit would count every slot
    ever used, and a busy worker would reach it holding nothing. Resident memory is what
    the machine pays, so :func:`_watch` reads it.
    """

    def __init__(self, started: int, headroom_mb: int) -> None:
        self._lock = threading.Lock()
        self.headroom_mb = headroom_mb
        self._base = started + (headroom_mb << 20)
        self._shares: dict[int, int] = {}

    def grant(self, sandbox: int, limits: Limits) -> None:
        with self._lock:
            self._shares[sandbox] = (limits.memory_mb + self.headroom_mb) << 20

    def drop(self, sandbox: int) -> None:
        with self._lock:
            self._shares.pop(sandbox, None)

    def allowed(self) -> int:
        with self._lock:
            return self._base + sum(self._shares.values())


def _watch(bound: _MemoryBound) -> None:
    """End the worker once it holds more than its bound, saying so for the host to read.

    Its sandboxes end with it, as after any crash: the cell in flight is a
    ``SandboxCrash`` and the registry rebuilds each sandbox by replay.
    """
    while True:
        time.sleep(_WATCH_SECONDS)
        held, allowed = _resident_bytes(os.getpid()), bound.allowed()
        if held > allowed:
            os.write(
                2,
                f"\n{_OVER_MEMORY}: held {held >> 20:,} MB, allowed {allowed >> 20:,} MB "
                f"(sandbox_memory_mb plus {bound.headroom_mb} MB for each sandbox it holds, "
                f"{HEADROOM_ENV})\n".encode(),
            )
            os._exit(1)


def serve(conn: Connection) -> None:
    """A worker's life: warm up, then host the sandboxes the host opens, until it leaves.

    Every message names its sandbox; each sandbox runs its cells on a thread of its own.
    """
    conn.send(("hello", os.getpid()))
    first: SimpleQueue[Callable[[], None]] | None = SimpleQueue()
    warmed = threading.Event()
    threading.Thread(target=_warm_then_host, args=(first, warmed), daemon=True).start()
    warmed.wait()
    headroom = env_number(os.environ, HEADROOM_ENV, HEADROOM_MB, 0)
    bound = _MemoryBound(_resident_bytes(os.getpid()), headroom)
    threading.Thread(target=_watch, args=(bound,), daemon=True).start()
    link = _Link(conn)
    sandboxes: dict[int, Queue[tuple[Any, ...]]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the host is gone: nothing this worker holds matters now
        kind, sandbox = message[0], message[1]
        if kind == "reply":
            link.deliver(message[2], message[3])
        elif kind == "init":
            sandboxes[sandbox] = Queue()
            bound.grant(sandbox, message[3])
            host = partial(_host_sandbox, link, sandbox, message[2:5], sandboxes[sandbox], bound)
            if first is not None:
                first.put(host)
                first = None
            else:
                threading.Thread(target=host, daemon=True).start()
        elif sandbox in sandboxes:
            sandboxes[sandbox].put(message)
            if kind == "close":
                del sandboxes[sandbox]


def _warm_then_host(first: SimpleQueue[Callable[[], None]], warmed: threading.Event) -> None:
    """Warm the runtime up, then host the worker's first sandbox on this same thread.

    The first session of a process pays ~70 ms of runtime set-up (measured; 8 ms after):
    a throwaway one pays it while this worker still waits as the spare. A session made
    on another thread took another instance slot, and the throwaway one's copy of the
    memory image stayed resident: 13 MB more per worker (2 images against 1, measured
    in /proc/PID/smaps); made on this thread, the first sandbox reuses its slot.
    """
    with suppress(Exception):  # a broken snapshot is reported by the init below
        sandbox_factory().create_session().execute("pass")
    warmed.set()
    first.get()()


def _host_sandbox(
    link: _Link,
    sandbox: int,
    init: tuple[ContextRef, Limits, tuple[int, int, str] | str | None],
    commands: Queue[tuple[Any, ...]],
    bound: _MemoryBound,
) -> None:
    """One sandbox's life in a worker; its memory share goes once its session is gone."""
    try:
        _run_sandbox(link, sandbox, init, commands)
    finally:
        bound.drop(sandbox)


def _run_sandbox(
    link: _Link,
    sandbox: int,
    init: tuple[ContextRef, Limits, tuple[int, int, str] | str | None],
    commands: Queue[tuple[Any, ...]],
) -> None:
    """Open the sandbox, run its cells one at a time, drop it.

    ``stored`` (size, chunk size, folder): the context is read from the host's store,
    its ranges written into the folder the host made; a folder alone: the files of a
    large folder context are written there.
    """
    ref, limits, stored = init
    wait = limits.cell_timeout + 60
    chunks, folder = None, None
    if isinstance(stored, str):
        folder = Path(stored)
    elif stored is not None:
        chunks, folder = _RemoteChunks(link, sandbox, *stored[:2], wait), Path(stored[2])
    try:
        box = Sandbox(ref, limits, chunks, folder)
    except SandboxError as exc:
        link.send(("error", sandbox, str(exc)))
        return
    box.handler = _RemoteHandler(link, sandbox, wait)
    link.send(("ready", sandbox))
    while (command := commands.get())[0] == "run":
        link.send(("done", sandbox, box.run(command[2], command[3])))
    box.close()


def _resident_bytes(pid: int) -> int:
    """Resident memory of a process (Linux; elsewhere 0: workers are reused)."""
    with suppress(OSError, ValueError, IndexError):
        statm = Path(f"/proc/{pid}/statm").read_text()
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def _child(conn_fd: int, err_fd: int, control: socket.socket) -> None:
    """Runs in a freshly forked child of the zygote; never returns."""
    control.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(err_fd, 2)  # what wasmtime prints before an abort, for the host to read
    try:
        serve(Connection(conn_fd))
    finally:
        os._exit(0)


def zygote(control_fd: int) -> None:
    """Fork a child for every socket the host sends; exit when the host goes away."""
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 1, 2)
        except OSError:
            return
        if len(fds) != 2:
            return  # the host closed the control socket
        if os.fork() == 0:
            _child(fds[0], fds[1], control)
        for fd in fds:
            os.close(fd)


# -- the host -----------------------------------------------------------------------------


class _Mailbox:
    """What a worker sent one sandbox, waited on by a thread or awaited by a coroutine."""

    def __init__(self) -> None:
        self._arrived = threading.Condition()
        self._messages: deque[tuple[Any, ...]] = deque()
        self._closed = False
        self._wakers: list[Callable[[], None]] = []

    def put(self, message: tuple[Any, ...] | None) -> None:
        """Deliver a message; ``None``: the worker is gone, nothing more will come."""
        with self._arrived:
            if message is None:
                self._closed = True
            else:
                self._messages.append(message)
            wakers, self._wakers = self._wakers, []
            self._arrived.notify_all()
        for wake in wakers:
            wake()

    def get(self, seconds: float) -> tuple[Any, ...] | None:
        """The next message; None if the worker died or stayed silent for ``seconds``."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._messages or self._closed, max(seconds, 0.0))
            return self._messages.popleft() if self._messages else None

    async def aget(self, seconds: float) -> tuple[Any, ...] | None:
        """:meth:`get` for a coroutine: the event loop waits, no thread does."""
        loop = asyncio.get_running_loop()
        with self._arrived:
            if self._messages or self._closed:
                return self._messages.popleft() if self._messages else None
            arrived = loop.create_future()
            self._wakers.append(lambda: _settle_soon(loop, arrived))
        with suppress(TimeoutError):
            await asyncio.wait_for(arrived, max(seconds, 0.0))
        return self.get(0)


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def settle() -> None:
        if not future.done():
            future.set_result(None)

    with suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


class _Worker:
    """A forked worker process and the host's two threads on its socket."""

    def __init__(self, sock: socket.socket, errors: IO[bytes]) -> None:
        self.errors = errors
        self._sock = sock
        self._conn = Connection(os.dup(sock.fileno()))
        if not self._conn.poll(_START_SECONDS):
            self._conn.close()
            sock.close()
            raise SandboxError("the sandbox process did not start; see the host's log")
        _, self.pid = self._conn.recv()
        self.alive = True
        self._outbox: SimpleQueue[tuple[Any, ...] | memoryview | None] = SimpleQueue()
        self._sending = threading.Lock()  # orders direct sends after the writer's
        self._queued = 0  # messages the writer has yet to send in full
        self._mailboxes: dict[int, _Mailbox] = {}
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._writer = threading.Thread(
            target=self._write, name=f"rlm-worker-{self.pid}-out", daemon=True
        )
        self._writer.start()
        threading.Thread(target=self._read, name=f"rlm-worker-{self.pid}", daemon=True).start()

    @property
    def load(self) -> int:
        """How many sandboxes it hosts."""
        with self._lock:
            return len(self._mailboxes)

    def open(self) -> tuple[int, _Mailbox]:
        """A number and a mailbox for one more sandbox."""
        with self._lock:
            number = next(self._numbers)
            mailbox = self._mailboxes[number] = _Mailbox()
        if not self.alive:
            mailbox.put(None)
        return number, mailbox

    def forget(self, number: int) -> int:
        """Drop a sandbox's mailbox; how many remain."""
        with self._lock:
            self._mailboxes.pop(number, None)
            return len(self._mailboxes)

    def send(self, message: tuple[Any, ...], *, now: bool = False) -> None:
        """Send a message to the worker without ever blocking; ``now``: from this thread.

        The writer thread sends what is queued. With ``now``, what the socket takes at
        once goes from the caller's thread, the rest to the writer: the hand-over to the
        writer cost ~0.3 ms of host CPU a cell (docs/benchmarks.md), and a worker that
        stops reading still holds no caller, so the cell's deadline still fires. Only
        when nothing is queued, so messages keep their order. Not from a server's event
        loop: its blocking detector does not know ``MSG_DONTWAIT``.
        """
        item: tuple[Any, ...] | memoryview = message
        if now:
            item = _frame(message)
        with self._sending:
            if isinstance(item, memoryview) and not self._queued:
                item = item[self._send_some(item) :]
                if not item:
                    return
            self._queued += 1
            self._outbox.put(item)

    def _send_some(self, frame: memoryview) -> int:
        """How much of ``frame`` the socket took without waiting (callers hold the lock)."""
        try:
            return self._sock.send(frame, socket.MSG_DONTWAIT)
        except OSError:  # full (the writer sends the rest), or the worker is gone
            return 0

    def end(self) -> None:
        """Let the worker go: it exits when its socket closes."""
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, which closes up
        self._outbox.put(None)

    def kill(self) -> None:
        """Stop a worker that stays silent past every limit (its sandboxes end too)."""
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                mailbox = self._mailboxes.get(message[1])
            if mailbox is not None:
                mailbox.put(message)
        self.alive = False
        with self._lock:
            mailboxes = list(self._mailboxes.values())
        for mailbox in mailboxes:
            mailbox.put(None)
        self._outbox.put(None)
        # Closed only once the writer is done: closed under a send, the connection raised
        # TypeError in the writer thread when a worker died as replies were going out.
        self._writer.join()
        self._conn.close()
        with self._sending:  # not under a direct send: its descriptor could be reused
            self._sock.close()

    def _write(self) -> None:
        while (item := self._outbox.get()) is not None:
            try:
                if isinstance(item, memoryview):  # the rest of a frame sent in part
                    self._sock.sendall(item)
                else:
                    self._conn.send(item)
            except OSError:
                return  # the worker died: the reader tells every sandbox
            with self._sending:
                self._queued -= 1


def _frame(message: tuple[Any, ...]) -> memoryview:
    """``message`` as ``Connection.send`` writes it: its length, then its pickle."""
    payload = ForkingPickler.dumps(message)
    size = len(payload)
    header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
    return memoryview(header + payload)


def _clean_environment() -> dict[str, str]:
    """The host's environment without anything key-like: the sandbox never needs it."""
    return {name: value for name, value in os.environ.items() if not is_secret_name(name)}


class _Zygote:
    """The host's handle on its zygote process."""

    def __init__(self) -> None:
        host_end, zygote_end = socket.socketpair()
        self._control = host_end
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "rlm_graph.repl.process", str(zygote_end.fileno())],
            pass_fds=[zygote_end.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=_clean_environment(),
        )
        zygote_end.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """Close the control socket (the zygote then exits) and reap it."""
        self._control.close()
        try:
            self._process.wait(2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def fork(self) -> _Worker:
        """A new child, with the runtime loaded, waiting for its sandbox."""
        host_end, child_end = socket.socketpair()
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the worker, closed with it
        with self._lock:
            socket.send_fds(self._control, [b"f"], [child_end.fileno(), errors.fileno()])
        child_end.close()
        return _Worker(host_end, errors)


class _Pool:
    """Worker processes forked through one zygote, each hosting several sandboxes.

    A new sandbox goes to the fullest worker with room (so memory is shared by as many
    sessions as allowed), else to a new worker. A worker left empty stays as the warm
    spare unless there is one already or it grew large; ``prepare`` forks one while
    the root model is still thinking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forking = threading.Lock()  # one fork at a time: a burst fills one worker
        self._zygote: _Zygote | None = None
        self._workers: list[_Worker] = []

    def shutdown(self) -> None:
        """At exit: end every worker and the zygote."""
        with self._lock:
            workers, self._workers = self._workers, []
            zygote, self._zygote = self._zygote, None
        for worker in workers:
            worker.end()
        if zygote is not None:
            zygote.stop()

    def zygote_pid(self) -> int | None:
        """The zygote's pid while it runs."""
        with self._lock:
            return self._zygote.pid if self._zygote is not None else None

    def warm(self) -> None:
        """Have room for a sandbox ready now (forking a worker if there is none)."""
        with self._forking:
            with self._lock:
                if self._roomy() is not None:
                    return
            worker = self._fork()
            with self._lock:
                self._workers.append(worker)

    def place(self) -> tuple[_Worker, int, _Mailbox]:
        """Room for one more sandbox: a worker, the sandbox's number there, its mailbox."""
        while True:
            with self._lock:
                if (worker := self._roomy()) is not None:
                    return worker, *worker.open()
            self.warm()

    def give_back(self, worker: _Worker, number: int) -> None:
        """A sandbox closed: drop it in its worker, and end the worker if it is not needed."""
        worker.send(("close", number))
        with self._lock:
            if worker.forget(number) or not worker.alive:
                return
            spares = [w for w in self._workers if w.alive and not w.load and w is not worker]
            if not spares and _resident_bytes(worker.pid) <= REUSE_BYTES:
                return
            self._workers.remove(worker)
        worker.end()

    def _roomy(self) -> _Worker | None:
        """The fullest live worker with room for a sandbox (callers hold the lock)."""
        self._workers = [w for w in self._workers if w.alive]
        roomy = [w for w in self._workers if w.load < SESSIONS_PER_WORKER]
        return max(roomy, key=lambda w: w.load, default=None)

    def _fork(self) -> _Worker:
        with self._lock:
            if self._zygote is None or not self._zygote.alive():
                factory_ready()  # says so when the first start will build the runtime
                self._zygote = _Zygote()
            zygote = self._zygote
        return zygote.fork()


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def sandbox_processes() -> list[int]:
    """The pids of this host's worker processes (the zygote's children), spare included.

    For tests and diagnostics: a sandbox that was closed must not leave its process.
    Linux only (reads /proc); elsewhere the list is empty.
    """
    zygote = _POOL.zygote_pid()
    pids = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            # "pid (name) state ppid ...": the name may hold spaces, so split after ")"
            fields = entry.read_text().rsplit(")", 1)[1].split()
            if zygote is not None and int(fields[1]) == zygote and fields[0] != "Z":
                pids.append(int(entry.parent.name))
    return pids


def warm_up() -> None:
    """Start the zygote and a spare worker now, so the first sandbox opens at once.

    A server can call this at start; otherwise the first sandbox of a process pays it
    (about 0.2 s, overlapped with the root model's first reply).
    """
    _POOL.warm()


class IsolatedSandbox(SandboxBase):
    """A :class:`~rlm_graph.repl.session.Sandbox` that lives in a worker process.

    It has the same surface as the in-process one, and :meth:`arun` holds no thread
    while its cell runs. A worker that dies (an abort inside eryx) or stops answering
    ends the cells of its sandboxes as halted, like a timeout: the registry then
    rebuilds each by replay in another worker.
    """

    def __init__(self, ref: ContextRef, limits: Limits, chunks: Chunks | None = None) -> None:
        self._halted = False
        super().__init__(ref, limits)
        self._chunks = chunks  # the child asks for them: the store is reached from here
        self._remove_folder: Callable[[], object] = lambda: None  # a file has nothing to go
        stored: tuple[int, int, str] | str | None = None
        if chunks is not None or ref["kind"] == "folder":
            folder, self._remove_folder = folder_for_ranges(self)
            stored = (
                str(folder) if chunks is None else (chunks.size, chunks.chunk_bytes, str(folder))
            )
        self._worker, self._number, self._mailbox = _POOL.place()
        self._finalizer = weakref.finalize(self, _POOL.give_back, self._worker, self._number)
        self._worker.send(("init", self._number, ref, limits, stored))
        reply = self._mailbox.get(limits.cell_timeout + _GRACE_SECONDS)
        if reply is None or reply[0] != "ready":
            reason = reply[2] if reply is not None else self._death_notice()
            self.broken = True
            self.close()
            raise SandboxError(reason)

    @property
    def broken(self) -> bool:
        """Whether the session is gone: it halted, or its worker died (a sibling crashed)."""
        return self._halted or not self._worker.alive

    @broken.setter
    def broken(self, halted: bool) -> None:
        self._halted = halted

    @property
    def pid(self) -> int:
        """The worker's process id (diagnostics and tests: its memory, its end)."""
        return int(self._worker.pid)

    def run(self, code: str, journal: Sequence[Any] = ()) -> CellOutcome:
        """Run one cell in the worker, answering its sub-calls here on threads."""
        deadline = self._start(code, journal, now=True)
        while (message := self._mailbox.get(deadline - time.monotonic())) is not None:
            if message[0] != "call":
                return self._finish(message[2])
            threading.Thread(target=self._answer, args=message[2:], daemon=True).start()
        return self._crashed()

    async def arun(self, code: str, journal: Sequence[Any] = ()) -> CellOutcome:
        """:meth:`run` for a coroutine: the loop waits for the cell and answers its calls."""
        deadline = self._start(code, journal, now=False)
        calls: set[asyncio.Task[None]] = set()
        try:
            while (message := await self._mailbox.aget(deadline - time.monotonic())) is not None:
                if message[0] != "call":
                    return self._finish(message[2])
                call = asyncio.create_task(self._aanswer(*message[2:]))
                calls.add(call)
                call.add_done_callback(calls.discard)
            return self._crashed()
        except asyncio.CancelledError:  # the run was cancelled: its cell runs on, unheard
            self.broken = True
            self.close()
            raise
        finally:
            for call in calls:  # answers nobody will read
                call.cancel()

    def close(self) -> None:
        """Drop the sandbox in its worker (a worker left empty may end), and its ranges."""
        self._finalizer()
        self._remove_folder()

    def _start(self, code: str, journal: Sequence[Any], *, now: bool) -> float:
        """Send a cell to the worker; the deadline past which its silence is a crash.

        ``now``: from this thread, which waits for the cell anyway (``_Worker.send``).
        """
        if self.broken:
            raise SandboxBroken("the session halted earlier; rebuild it from state")
        self.cells_run += 1
        self._started = time.perf_counter()
        self._worker.send(("run", self._number, code, list(journal)), now=now)
        return time.monotonic() + self.limits.cell_timeout + _GRACE_SECONDS

    def _finish(self, outcome: CellOutcome) -> CellOutcome:
        if outcome.halted:
            self.broken = True
            self.close()
        return outcome

    def _crashed(self) -> CellOutcome:
        """The worker died, or stayed silent past every limit (then it is stopped for good)."""
        if self._worker.alive:
            self._worker.kill()
        error = f"SandboxCrash: {self._death_notice()}{REBUILT}"
        self.broken = True
        self.close()
        return CellOutcome("", "", error, True, [], None, time.perf_counter() - self._started)

    def _answer(self, call_id: int, name: str, payload: Any) -> None:
        handler, chunks = self.handler, self._chunks
        answers: dict[str, Callable[[], Any]] = {
            "query": lambda: handler.query(payload),
            "batch": lambda: handler.batch(payload),
            "chunk": lambda: _chunk_answer(chunks, payload),
        }
        reply = ("reply", self._number, call_id, guarded(answers[name]))
        self._worker.send(reply, now=True)

    async def _aanswer(self, call_id: int, name: str, payload: Any) -> None:
        if name == "chunk":  # a store read blocks: on a thread
            result = await asyncio.to_thread(_chunk_answer, self._chunks, payload)
        else:
            result = await answer_awaited(self.handler, name, payload)
        self._worker.send(("reply", self._number, call_id, result))

    def _death_notice(self) -> str:
        """Why the worker died, from what it printed before the end."""
        errors = self._worker.errors
        with suppress(OSError, ValueError):
            errors.seek(0)
            printed = errors.read()[-2000:].decode("utf-8", errors="replace").strip()
            if _OVER_MEMORY in printed:
                return (
                    f"the sandbox process was ended, {printed.splitlines()[-1]}: hold less at "
                    "once outside the sandbox, such as fewer or smaller sub-calls in flight"
                )
            if _STACK_OVERFLOW in printed:
                return (
                    "the sandbox process crashed: the code nested too deeply for its native "
                    "stack (C-level recursion such as json.loads, repr or eval of data nested "
                    "~2,000 levels); flatten the data or process it iteratively"
                )
            if printed:
                return f"the sandbox process crashed ({printed.splitlines()[-1][:300]})"
        return "the sandbox process stopped answering and was ended"


if __name__ == "__main__":
    return_freed_blocks()  # inherited by every worker it forks
    zygote(int(sys.argv[1]))
