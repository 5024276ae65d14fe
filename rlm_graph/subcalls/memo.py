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
        with self._lock:
            unknown = [p for p in prompts if p not in self._known and p not in self._missing]
        if self._blobs is None or not unknown:
            return
        keys = [self._key(p) for p in unknown]
        found = self._blobs.get_many(self._namespace, keys)
        with self._lock:
            for prompt, key in zip(unknown, keys, strict=True):
                if key in found:
                    self._known[prompt] = str(found[key]["answer"])
                else:
                    self._missing.add(prompt)

    def get(self, prompt: str) -> str | None:
        """The stored answer to ``prompt``, if it was asked before."""
        self.prefetch({prompt})
        with self._lock:
            return self._known.get(prompt)

    def put(self, prompt: str, answer: str) -> None:
        """Remember an answer, durably when the memo has a store."""
        with self._lock:
            self._known[prompt] = answer
            self._missing.discard(prompt)
        if self._blobs is not None:
            self._blobs.put(self._namespace, self._key(prompt), {"answer": answer})
