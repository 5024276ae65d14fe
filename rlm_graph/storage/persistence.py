"""Where a durable thread lives: a checkpointer and a store on one SQLite file or database.

The checkpointer alone is not enough to resume: cell records, sub-call answers and the
context sit in the store (see ``blobs``), so both always point at the same place and a
thread can be resumed from any machine that can open it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import BaseStore
from langgraph.store.sqlite import SqliteStore

from rlm_graph.redact import redact_url_passwords
from rlm_graph.storage.home import home

_POSTGRES = ("postgres://", "postgresql://")


def is_postgres(target: str) -> bool:
    """Whether a checkpoint location names a PostgreSQL database (else a SQLite file)."""
    return target.startswith(_POSTGRES)


def default_checkpoint() -> Path:
    """The SQLite file durable threads live in when none is named (``rlm mcp``)."""
    home().mkdir(parents=True, exist_ok=True)
    return home() / "threads.sqlite"


class PersistenceError(ValueError):
    """The checkpoint location cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Persistence:
    """A checkpointer and a store that belong together."""

    checkpointer: BaseCheckpointSaver[Any]
    store: BaseStore


def _sqlite(path: str, **options: Any) -> sqlite3.Connection:
    # WAL lets the store (written from the sub-call thread) and the checkpointer write
    # through separate connections without "database is locked".
    conn: sqlite3.Connection = sqlite3.connect(path, check_same_thread=False, timeout=60, **options)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@contextmanager
def open_persistence(target: str) -> Iterator[Persistence]:
    """Open (and create if needed) the checkpointer and store at ``target``.

    ``target`` is a SQLite file path or a ``postgresql://`` URL (the ``postgres``
    extra). Tables are created on first use.
    """
    if is_postgres(target):
        with _postgres(target) as persistence:
            yield persistence
        return
    path = Path(target)
    if path.is_dir() or not path.parent.is_dir():
        raise PersistenceError(f"--checkpoint {target!r} must be a file in an existing folder")
    with ExitStack() as connections:
        try:
            persistence = _sqlite_persistence(target, connections)
        except sqlite3.DatabaseError as exc:
            raise PersistenceError(
                f"--checkpoint {target!r} is not a usable SQLite database ({exc}): "
                "restore it from a copy, or name a new file"
            ) from None
        yield persistence


def _sqlite_persistence(target: str, connections: ExitStack) -> Persistence:
    """The checkpointer and store on a checked SQLite file, closed with ``connections``."""
    saver_conn = connections.enter_context(closing(_sqlite(target)))
    store_conn = connections.enter_context(closing(_sqlite(target, isolation_level=None)))
    _check_intact(saver_conn)
    saver = SqliteSaver(saver_conn)
    saver.setup()
    store = SqliteStore(store_conn)
    store.setup()
    return Persistence(saver, store)


def _check_intact(conn: sqlite3.Connection) -> None:
    """Raise ``DatabaseError`` if the file is not SQLite, truncated or has a broken page.

    A damaged page otherwise surfaces mid-run, after model calls were paid for, or not at
    all (a page no query of this run reads). ``quick_check`` reads every page once: 0.27 s
    for a 200 MB file (measured), a few milliseconds for a usual checkpoint.
    """
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(str(problems[0]).splitlines()[-1])


@contextmanager
def _postgres(url: str) -> Iterator[Persistence]:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.store.postgres import PostgresStore
    except ImportError as exc:
        raise PersistenceError(
            "PostgreSQL needs the postgres extra: pip install 'rlm-graph[postgres]'"
        ) from exc
    try:
        with (
            PostgresSaver.from_conn_string(url) as saver,
            PostgresStore.from_conn_string(url) as store,
        ):
            saver.setup()
            store.setup()
            yield Persistence(saver, store)
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            # from None: the chained psycopg error may quote the connection string
            problem = redact_url_passwords(f"cannot use the database {url!r}: {exc}")
            raise PersistenceError(problem) from None
        raise
