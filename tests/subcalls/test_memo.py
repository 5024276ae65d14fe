"""The sub-call memo beside the checkpoint."""

from __future__ import annotations

import tracemalloc

from support import CountingStore

from rlm_graph.storage.blobs import Blobs
from rlm_graph.subcalls.memo import SubCallMemo


def test_memo_prefetch_looks_up_a_batch_in_one_store_round_trip() -> None:
    store = CountingStore()
    SubCallMemo(Blobs(store), "sandbox", "scope").put("known", "yes")
    store.batches.clear()
    memo = SubCallMemo(Blobs(store), "sandbox", "scope")
    memo.prefetch({"known", "new 1", "new 2"})
    assert [memo.get(p) for p in ("known", "new 1", "new 2")] == ["yes", None, None]
    assert store.batches == [3]  # one lookup for all three; misses are not asked again
    memo.put("new 1", "later")
    assert memo.get("new 1") == "later"


def test_memo_keeps_answers_not_the_prompts_they_answer() -> None:
    """A cell labelling 256 MB of a lazy context in 80 KB prompts held all of it here."""
    memo = SubCallMemo()

    def prompt(i: int) -> str:  # a new 1 MB str each time, as each call brings its own
        return f"{i}:" + "x" * 1_000_000

    tracemalloc.start()
    for i in range(8):
        memo.get(prompt(i))
        memo.put(prompt(i), "[]")
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert kept < 100_000  # not the 8 MB of prompts
    assert [memo.get(prompt(i)) for i in range(8)] == ["[]"] * 8
