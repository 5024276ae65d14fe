"""Durable records kept beside the checkpoint rather than in it.

Checkpointers write the whole state at every step, so anything that grows with the run
(cell outputs, sub-call journals, sub-call answers, the context) would make a run's
checkpoints grow quadratically. Such data is written once, under a key, to the
LangGraph ``Store`` when the run has one (the server always does, and a store on the
same database as the checkpointer lets another worker or machine resume the thread),
else to a directory under :func:`~rlm_graph.storage.home.home` (one machine only).
A run without a thread cannot be resumed at all, so its records stay in this process's
memory and go with its sandbox. State then holds keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, GetOp, Item

from rlm_graph.storage.home import home

NAMESPACE = "rlm_graph"
Namespace = tuple[str, ...]
_MEMORY: dict[Namespace, dict[str, dict[str, Any]]] = {}
_MEMORY_LOCK = threading.Lock()


class Blobs:
    """JSON records by (namespace, key) in a LangGraph store, a directory, or memory."""

    def __init__(
        self, store: BaseStore | None = None, root: Path | None = None, *, memory: bool = False
    ) -> None:
        self.store = store
        self.root = root if root is not None else home() / "blobs"
        self._memory = memory and store is None

    @classmethod
    def for_run(cls, store: BaseStore | None, resumable: bool) -> Blobs:
        """Where a run keeps its records: the store, else disk if it can resume, else memory."""
        return cls(store, memory=not resumable)

    @staticmethod
    def forget(part: str) -> None:
        """Drop the in-memory records of every namespace that names ``part`` (a sandbox)."""
        with _MEMORY_LOCK:
            for namespace in [n for n in _MEMORY if part in n]:
                del _MEMORY[namespace]

    def describe(self) -> str:
        """Where records go, for error messages."""
        if self._memory:
            return "this process's memory (a run without a thread)"
        return "the run's LangGraph store" if self.store is not None else str(self.root)

    def put(self, namespace: Namespace, key: str, value: dict[str, Any]) -> None:
        """Write a record; writing the same key again replaces it."""
        if self._memory:
            with _MEMORY_LOCK:
                _MEMORY.setdefault(namespace, {})[key] = value
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
        if self._memory:
            with _MEMORY_LOCK:
                return _MEMORY.get(namespace, {}).get(key)
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
        if self.store is None or self._memory:
            found = {key: self.get(namespace, key) for key in keys}
            return {key: value for key, value in found.items() if value is not None}
        items = self.store.batch([GetOp((NAMESPACE, *namespace), key) for key in keys])
        return {
            key: item.value
            for key, item in zip(keys, items, strict=True)
            if isinstance(item, Item)  # a GetOp answers an Item, or None when there is none
        }

    def _path(self, namespace: Namespace, key: str) -> Path:
        # Keys and namespace parts come from hashes and ids; hashing them again keeps
        # any other string from naming a path outside the root.
        folder = hashlib.sha256("\0".join(namespace).encode()).hexdigest()[:32]
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.root / folder / f"{name}.json"


def content_key(value: Any) -> str:
    """The key a JSON value is stored under when it is addressed by its content."""
    payload = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8", errors="surrogatepass")).hexdigest()
