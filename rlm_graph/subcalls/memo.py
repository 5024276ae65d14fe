"""Answers to sub-call prompts, kept beside the checkpoint as each one arrives."""

from __future__ import annotations

import hashlib
import json
import threading

from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.subcalls.scope import Scope


def memo_scope(scope: Scope, settings: Settings) -> str:
    """What answers this run's sub-calls: the same prompt to another model is another question.

    A follow-up question on a thread may change the sub model (or the depth); answers
    remembered for the old one must not be served for the new one.
    """
    payload = json.dumps(scope.memo_key(settings)).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


class SubCallMemo:
    """Answers to the sub-call prompts of one sandbox, written as each one arrives.

    Identical prompts are answered once per sandbox. Because every answer is stored
    the moment it arrives, a run killed in the middle of a 200-prompt batch pays on
    resume only for the prompts that had not been answered yet. Without ``blobs`` the
    memo lives in memory only (tests, one-off sandboxes).
    """

    def __init__(self, blobs: Blobs | None = None, sandbox_id: str = "", scope: str = "") -> None:
        self._blobs = blobs
        self._namespace = ("memo", sandbox_id, scope) if scope else ("memo", sandbox_id)
        # Keyed by the prompt's digest, not its text: a cell labelling 256 MB of a lazy
        # context in 80 KB prompts held all 256 MB here until it ended.
        self._known: dict[str, str] = {}
        # Prompts looked up and not found. A sandbox runs one cell at a time and this memo
        # serves one cell, so only its own ``put`` can answer them later.
        self._missing: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8", errors="surrogatepass")).hexdigest()

    def prefetch(self, prompts: set[str]) -> None:
        """Look up many prompts in one round trip (a batch of 200 on a database store)."""
        self._fetch({self._key(p) for p in prompts})

    def _fetch(self, keys: set[str]) -> None:
        with self._lock:
            unknown = [k for k in keys if k not in self._known and k not in self._missing]
        if self._blobs is None or not unknown:
            return
        found = self._blobs.get_many(self._namespace, unknown)
        with self._lock:
            for key in unknown:
                if key in found:
                    self._known[key] = str(found[key]["answer"])
                else:
                    self._missing.add(key)

    def get(self, prompt: str) -> str | None:
        """The stored answer to ``prompt``, if it was asked before."""
        key = self._key(prompt)
        self._fetch({key})
        with self._lock:
            return self._known.get(key)

    def put(self, prompt: str, answer: str) -> None:
        """Remember an answer, durably when the memo has a store."""
        key = self._key(prompt)
        with self._lock:
            self._known[key] = answer
            self._missing.discard(key)
        if self._blobs is not None:
            self._blobs.put(self._namespace, key, {"answer": answer})
