"""One writer per thread: a lock a run holds on its thread for as long as it runs.

Two processes running one thread of one checkpoint both ran every step and both paid
for it (each model call twice): neither checkpointer sees the other writer. The lock
lives where the thread lives, a byte-range lock in a file beside a SQLite checkpoint or
a PostgreSQL advisory lock, and both end with the process that holds them (a kill -9
included), so a lock is never left behind to clear by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rlm_graph.storage.persistence import PersistenceError, is_postgres


class ThreadBusy(PersistenceError):
    """Another process is running the thread."""


def lock_key(thread: str) -> int:
    """The thread's lock: 62 bits of its hash, a PostgreSQL ``bigint`` and a file offset."""
    digest = hashlib.sha256(b"rlm-graph thread\0" + thread.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


@contextmanager
def thread_lock(
    target: str, thread: str, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold ``thread``'s lock in the checkpoint at ``target`` while the block runs.

    A thread held elsewhere raises :class:`ThreadBusy` at once, or with ``on_wait``,
    calls it (to say so) and waits for the lock.
    """
    hold = _advisory_lock if is_postgres(target) else _file_lock

    def busy() -> None:
        if on_wait is None:
            raise ThreadBusy(f"thread {thread} is running in another process")
        on_wait()

    with hold(target, lock_key(thread), busy):
        yield


@contextmanager
def _file_lock(target: str, key: int, busy: Callable[[], None]) -> Iterator[None]:
    # One lock file for every thread: each holds one byte of it (at its key), and POSIX
    # releases a process's byte locks when it ends. Not the database file itself: closing
    # any descriptor of a file drops all of a process's locks on it, SQLite's own too.
    with open(f"{target}.lock", "ab") as handle:  # "a": made if missing, never truncated
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
        except BlockingIOError:
            busy()
            fcntl.lockf(handle, fcntl.LOCK_EX, 1, key)
        yield


@contextmanager
def _advisory_lock(url: str, key: int, busy: Callable[[], None]) -> Iterator[None]:
    import psycopg

    # A connection of its own, held for the run: the lock is the session's, and the
    # checkpointer's pooled connections come and go.
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            busy()
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield
