"""Durable records kept beside the checkpoint rather than in it.

Checkpointers write the whole state at every step, so anything that grows with the run
(cell outputs, sub-call journals, sub-call answers, the context) would make a run's
checkpoints grow quadratically. Such data is written once, under a key, to the
LangGraph ``Store`` when the run has one (the server always does, and a store on the
same database as the checkpointer lets another worker or machine resume the thread),
else to a directory under :func:`~rlm_graph.storage.home.home` (one machine only).
A run without a thread cannot be resumed at all, so its records stay in this process
(:class:`MemoryRecords`: in memory up to a budget, then in a private temporary directory)
and go with its sandbox. State then holds keys.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, GetOp, Item

from rlm_graph.storage.home import home

NAMESPACE = "rlm_graph"
Namespace = tuple[str, ...]
# Held in memory before records spill to disk. `rlm eval --task oolong --size 1b` kept
# 26,221 sub-call answers of ~27 KB (~700 MB) and its host process grew to 1.7 GB. With
# the sandbox's ~310 MB, the whole tree's 600 MB leaves the host ~290 MB, ~100 of which
# its imports take: 64 MB here (and as much again in the cell-record cache) put a 200m
# oolong's tree at 615 MB. A run of a few dozen cells with short answers (the overhead
# benchmark's) stays far below it, never touching disk.
MEMORY_BUDGET = 32 << 20


def text_bytes(value: Any) -> int:
    """A cheap lower bound of a JSON value's size: its strings' lengths, nothing encoded.

    Records that matter are made of text (code, output, sub-call answers), so this stays
    within a small factor of the real size at a walk over the containers only.
    """
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(key) + text_bytes(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(text_bytes(item) for item in value)
    return 8


class MemoryRecords:
    """Records of runs without a thread: in memory up to ``budget`` bytes, then on disk.

    Past the budget a record is written to a private temporary directory of the process
    (made on first need, mode 0700, removed at exit) and read back as it was written.
    """

    def __init__(self, budget: int = MEMORY_BUDGET) -> None:
        self.budget = budget
        self.held = 0
        self._values: dict[Namespace, dict[str, dict[str, Any] | None]] = {}
        self._sizes: dict[Namespace, int] = {}
        self._lock = threading.Lock()
        self._disk: Blobs | None = None

    def put(self, namespace: Namespace, key: str, value: dict[str, Any]) -> None:
        """Keep a record in memory while the budget allows, else on disk (None marks it)."""
        size = text_bytes(value)
        with self._lock:
            kept = self.held + size <= self.budget
            if kept:
                self.held += size
                self._sizes[namespace] = self._sizes.get(namespace, 0) + size
                self._values.setdefault(namespace, {})[key] = value
        if not kept:
            self._spill_dir().put(namespace, key, value)
            with self._lock:
                self._values.setdefault(namespace, {})[key] = None

    def get(self, namespace: Namespace, key: str) -> dict[str, Any] | None:
        """A record as it was put, from memory or from the spill directory."""
        with self._lock:
            records = self._values.get(namespace, {})
            if key not in records:
                return None
            value = records[key]
            disk = self._disk
        if value is None and disk is not None:
            return disk.get(namespace, key)
        return value

    def forget(self, part: str) -> None:
        """Drop the records of every namespace that names ``part`` (a sandbox), and files."""
        with self._lock:
            gone = [n for n in self._values if part in n]
            for namespace in gone:
                del self._values[namespace]
                self.held -= self._sizes.pop(namespace, 0)
            disk = self._disk
        if disk is not None:
            for namespace in gone:
                shutil.rmtree(disk.folder(namespace), ignore_errors=True)

    @property
    def spill_root(self) -> Path | None:
        """The private directory records spilled to, once one has."""
        return None if self._disk is None else self._disk.root

    def _spill_dir(self) -> Blobs:
        with self._lock:
            if self._disk is None:
                root = Path(tempfile.mkdtemp(prefix="rlm-records-"))  # mode 0700
                atexit.register(shutil.rmtree, root, ignore_errors=True)
                self._disk = Blobs(root=root)
            return self._disk


_PROCESS_RECORDS = MemoryRecords()


class Blobs:
    """JSON records by (namespace, key) in a LangGraph store, a directory, or memory."""

    def __init__(
        self,
        store: BaseStore | None = None,
        root: Path | None = None,
        *,
        memory: bool | MemoryRecords = False,
    ) -> None:
        self.store = store
        self.root = root if root is not None else home() / "blobs"
        held = memory if isinstance(memory, MemoryRecords) else _PROCESS_RECORDS if memory else None
        self._memory = held if store is None else None

    @classmethod
    def for_run(cls, store: BaseStore | None, resumable: bool) -> Blobs:
        """Where a run keeps its records: the store, else disk if it can resume, else memory."""
        return cls(store, memory=not resumable)

    @staticmethod
    def forget(part: str) -> None:
        """Drop the in-process records of every namespace that names ``part`` (a sandbox)."""
        _PROCESS_RECORDS.forget(part)

    def describe(self) -> str:
        """Where records go, for error messages."""
        if self._memory is not None:
            return "this process's memory (a run without a thread)"
        return "the run's LangGraph store" if self.store is not None else str(self.root)

    def put(self, namespace: Namespace, key: str, value: dict[str, Any]) -> None:
        """Write a record; writing the same key again replaces it."""
        if self._memory is not None:
            self._memory.put(namespace, key, value)
            return
        if self.store is not None:
            self.store.put((NAMESPACE, *namespace), key, value, index=False)
            return
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(value, out, ensure_ascii=False)
        os.replace(tmp, path)

    def get(self, namespace: Namespace, key: str) -> dict[str, Any] | None:
        """Read a record, or None when there is none."""
        if self._memory is not None:
            return self._memory.get(namespace, key)
        if self.store is not None:
            item = self.store.get((NAMESPACE, *namespace), key)
            return None if item is None else item.value
        try:
            value: dict[str, Any] = json.loads(self._path(namespace, key).read_text("utf-8"))
        except FileNotFoundError:
            return None
        return value

    def get_many(self, namespace: Namespace, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The records that exist among ``keys``, in one round trip to a store."""
        if self.store is None or self._memory is not None:
            found = {key: self.get(namespace, key) for key in keys}
            return {key: value for key, value in found.items() if value is not None}
        items = self.store.batch([GetOp((NAMESPACE, *namespace), key) for key in keys])
        return {
            key: item.value
            for key, item in zip(keys, items, strict=True)
            if isinstance(item, Item)  # a GetOp answers an Item, or None when there is none
        }

    def folder(self, namespace: Namespace) -> Path:
        """The directory holding a namespace's records (directory mode)."""
        # Keys and namespace parts come from hashes and ids; hashing them again keeps
        # any other string from naming a path outside the root.
        return self.root / hashlib.sha256("\0".join(namespace).encode()).hexdigest()[:32]

    def _path(self, namespace: Namespace, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.folder(namespace) / f"{name}.json"


def content_key(value: Any) -> str:
    """The key a JSON value is stored under when it is addressed by its content."""
    payload = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8", errors="surrogatepass")).hexdigest()
