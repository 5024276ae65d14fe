"""The sub-call memo beside the checkpoint."""

from __future__ import annotations

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
