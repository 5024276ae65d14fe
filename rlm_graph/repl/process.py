"""Each sandbox in a process of its own, so hostile code cannot take the host down.

eryx runs guest code on a fiber with a fixed native stack. C code that nests about
2,000 levels deep (``json.loads`` of deep brackets, ``repr`` of a deeply nested list)
overflows it, and wasmtime then aborts the whole process: in-process, one cell would
kill a ``langgraph dev`` server and every run in it. In a child process it kills only
that sandbox, which the registry rebuilds by replay as after any other halt. A child
also returns its memory to the system when it ends, and it never sees the host's keys.

How it works: one *zygote* per host process (``python -m rlm_graph.repl.process``)
imports the modules once and, for each sandbox, forks a child that loads the runtime
snapshot and serves one :class:`~rlm_graph.repl.session.Sandbox`. The zygote must never
load the eryx runtime itself: a process forked after that hangs. Host and child talk
over a socket pair; sub-calls made by guest code travel back to the host's handler, so
model clients and keys stay in the host. A warm spare child is kept ready, so opening
a sandbox costs what it costs in-process.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from queue import Queue
from typing import IO, TYPE_CHECKING, Any

from rlm_graph.redact import is_secret_name
from rlm_graph.repl.session import (
    REBUILT,
    CellOutcome,
    Limits,
    Sandbox,
    SandboxBase,
    SandboxBroken,
    SandboxError,
    factory_ready,
    guarded,
    sandbox_factory,
)

if TYPE_CHECKING:
    from rlm_graph.storage.contexts import ContextRef

# How long past its own limits a child may stay silent before the host kills it.
_GRACE_SECONDS = 120.0
_START_SECONDS = 120.0  # a first start may build the runtime snapshot (~15 s)
_FREE_SECONDS = 10.0  # dropping a session takes milliseconds
_STACK_OVERFLOW = "overflowed its stack"
# A child that holds more than this after closing a sandbox ends rather than waiting as
# the spare: eryx keeps freed sandbox memory resident for reuse.
REUSE_BYTES = 384 << 20


# -- the child ----------------------------------------------------------------------------


class _RemoteHandler:
    """The child's side of sub-calls: each becomes a request the host answers."""

    def __init__(self, conn: Connection, wait: float) -> None:
        self._conn = conn
        self.wait = wait
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

    def _ask(self, name: str, payload: Any) -> Any:
        call_id = next(self._ids)
        event, slot = threading.Event(), list[Any]()
        self._waiting[call_id] = (event, slot)
        self.send(("call", call_id, name, payload))
        if not event.wait(self.wait):
            self._waiting.pop(call_id, None)
            return {"ok": False, "error": "the host did not answer this sub-call in time"}
        return slot[0]

    def query(self, prompt: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._ask("query", prompt)
        return answer

    def batch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        answers: list[dict[str, Any]] | dict[str, Any] = self._ask("batch", prompts)
        return answers


def serve(conn: Connection) -> None:
    """A child's life: warm up, then open sandboxes one after another for the host.

    After the host closes a sandbox, the child offers itself for the next one (a warm
    child opens a sandbox in ~10 ms, a fresh fork in ~200 ms of CPU) unless the sandbox
    broke or the child holds more memory than a spare should.
    """
    conn.send(("hello", os.getpid()))
    with suppress(Exception):  # a broken snapshot is reported by the init below
        # The first session of a process pays ~70 ms of runtime set-up (measured; 8 ms
        # after): a throwaway one pays it while this child still waits as the spare.
        sandbox_factory().create_session().execute("pass")
    remote = _RemoteHandler(conn, 60.0)
    commands: Queue[tuple[Any, ...]] = Queue()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the host is gone: nothing this child holds matters now
            if message[0] == "reply":
                remote.deliver(message[1], message[2])
            else:
                commands.put(message)

    threading.Thread(target=read, daemon=True).start()
    while (command := commands.get())[0] == "init":
        _, ref, limits = command
        try:
            box = Sandbox(ref, limits)
        except SandboxError as exc:
            remote.send(("error", str(exc)))
            return
        remote.wait = limits.cell_timeout + 60
        box.handler = remote
        remote.send(("ready",))
        while (command := commands.get())[0] == "run":
            remote.send(("done", box.run(command[1], command[2])))
        broken = box.broken
        del box
        if command[0] != "close" or broken or _resident_bytes() > REUSE_BYTES:
            return
        remote.send(("free",))


def _resident_bytes() -> int:
    """Resident memory of the calling process (Linux; elsewhere 0: children are reused)."""
    with suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
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


@dataclass
class _Worker:
    """A forked child, warm and waiting for its sandbox."""

    conn: Connection
    pid: int
    errors: IO[bytes]


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
        conn = Connection(host_end.detach())
        if not conn.poll(_START_SECONDS):
            conn.close()
            raise SandboxError("the sandbox process did not start; see the host's log")
        _, pid = conn.recv()
        return _Worker(conn, pid, errors)


class _Pool:
    """Forks children through one zygote and keeps one warm child as the spare.

    A sandbox that closes cleanly hands its child back as the spare, so runs one after
    another reuse one warm child; children for runs at the same time are forked when
    asked for (``prepare`` asks while the root model is still thinking).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._spare: _Worker | None = None

    def shutdown(self) -> None:
        """At exit: end the spare and the zygote (children end with their sockets)."""
        with self._lock:
            spare, self._spare = self._spare, None
            zygote, self._zygote = self._zygote, None
        if spare is not None:
            _let_go(spare)
        if zygote is not None:
            zygote.stop()

    def zygote_pid(self) -> int | None:
        """The zygote's pid while it runs."""
        with self._lock:
            return self._zygote.pid if self._zygote is not None else None

    def warm(self) -> None:
        """Have a spare ready now (forking one if there is none)."""
        with self._lock:
            if self._spare is not None:
                return
        self.put(self._fork())

    def put(self, worker: _Worker) -> None:
        """Keep an idle child as the spare; with a spare already, end it."""
        with self._lock:
            keep = self._spare is None
            if keep:
                self._spare = worker
        if not keep:
            _let_go(worker)

    def take(self) -> _Worker:
        """The spare if there is one, else a newly forked child."""
        with self._lock:
            spare, self._spare = self._spare, None
        return spare if spare is not None and not spare.conn.closed else self._fork()

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
    """The pids of this host's sandbox processes (the zygote's children), spare included.

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
    """Start the zygote and a spare child now, so the first sandbox opens at once.

    A server can call this at start; otherwise the first sandbox of a process pays it
    (about 0.2 s, overlapped with the root model's first reply).
    """
    _POOL.warm()


def _let_go(worker: _Worker) -> None:
    """End a child: closing its socket makes it exit at once."""
    with suppress(OSError):
        worker.conn.close()
    worker.errors.close()


class IsolatedSandbox(SandboxBase):
    """A :class:`~rlm_graph.repl.session.Sandbox` that lives in a child process.

    It has the same surface as the in-process one. A child that dies (an abort inside
    eryx) or stops answering ends its cell as halted, like a timeout: the registry then
    rebuilds the sandbox by replay in a new child.
    """

    def __init__(self, ref: ContextRef, limits: Limits) -> None:
        super().__init__(ref, limits)
        self._worker = _POOL.take()
        self._send_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _let_go, self._worker)
        self._send(("init", ref, limits))
        reply = self._receive(limits.cell_timeout + _GRACE_SECONDS)
        if reply is None or reply[0] != "ready":
            reason = reply[1] if reply is not None else self._death_notice()
            self.broken = True
            self.close()
            raise SandboxError(reason)

    def run(self, code: str, journal: Sequence[Any] = ()) -> CellOutcome:
        """Run one cell in the child, answering its sub-calls here."""
        if self.broken:
            raise SandboxBroken("the session halted earlier; rebuild it from state")
        self.cells_run += 1
        started = time.perf_counter()
        self._send(("run", code, list(journal)))
        deadline = time.monotonic() + self.limits.cell_timeout + _GRACE_SECONDS
        while (message := self._receive(deadline - time.monotonic())) is not None:
            if message[0] == "call":
                threading.Thread(target=self._answer, args=message[1:], daemon=True).start()
                continue
            outcome: CellOutcome = message[1]
            if outcome.halted:
                self.broken = True
                self.close()
            return outcome
        error = f"SandboxCrash: {self._death_notice()}{REBUILT}"
        self.broken = True
        self.close()
        return CellOutcome("", "", error, True, [], None, time.perf_counter() - started)

    def close(self) -> None:
        """Hand a healthy child back to the pool for the next sandbox; end any other."""
        if not self._finalizer.detach():
            return  # closed already
        if not self.broken and self._handed_back():
            _POOL.put(self._worker)
        else:
            _let_go(self._worker)

    def _handed_back(self) -> bool:
        """Ask the child to drop its sandbox; it says "free" if it can take another."""
        try:
            self._send(("close",))
        except OSError:
            return False
        reply = self._receive(_FREE_SECONDS)
        return reply is not None and reply[0] == "free"

    def _answer(self, call_id: int, name: str, payload: Any) -> None:
        handler = self.handler
        answer: Callable[[], Any] = (
            (lambda: handler.query(payload))
            if name == "query"
            else (lambda: handler.batch(payload))
        )
        result = guarded(answer)
        with suppress(OSError):
            self._send(("reply", call_id, result))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._worker.conn.send(message)

    def _receive(self, seconds: float) -> tuple[Any, ...] | None:
        """The child's next message, or None if it died or stayed silent too long."""
        try:
            if self._worker.conn.poll(max(seconds, 0.0)):
                message: tuple[Any, ...] = self._worker.conn.recv()
                return message
        except (EOFError, OSError):
            return None
        with suppress(ProcessLookupError):  # silent past every limit: stop it for good
            os.kill(self._worker.pid, signal.SIGKILL)
        return None

    def _death_notice(self) -> str:
        """Why the child died, from what it printed before the end."""
        errors = self._worker.errors
        with suppress(OSError, ValueError):
            errors.seek(0)
            printed = errors.read()[-2000:].decode("utf-8", errors="replace").strip()
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
    zygote(int(sys.argv[1]))
