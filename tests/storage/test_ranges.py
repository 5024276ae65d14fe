"""Reading ranges of a context that only the store holds, one verified chunk at a time."""

from __future__ import annotations

import base64

import pytest
from support import CountingStore

from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import (
    ContextRef,
    check_ref,
    context_file,
    is_lazy,
    share,
    store_value,
    stored_text,
)
from rlm_graph.storage.ranges import ChunkError, ChunkReader, StoredChunks

CHUNK = 1 << 10


def only_in_store(text: str) -> tuple[ContextRef, Blobs, CountingStore]:
    """``text`` shared in 1 KiB chunks, its local file gone: another worker's view."""
    ref = store_value(text)
    store = CountingStore()
    blobs = Blobs(store)
    share(ref, blobs, chunk_bytes=CHUNK)
    context_file(ref).unlink()
    store.got.clear()
    return ref, blobs, store


def stored(ref: ContextRef, blobs: Blobs) -> StoredChunks:
    chunks = stored_text(ref, blobs, threshold=0)
    assert chunks is not None
    return chunks


def test_a_range_costs_only_the_chunks_that_cover_it() -> None:
    text = "".join(f"line {i} é€𝄞\n" for i in range(2_000))
    data = text.encode()
    ref, blobs, store = only_in_store(text)
    chunks = stored(ref, blobs)
    assert (chunks.size, chunks.chunk_bytes) == (len(data), CHUNK)
    store.got.clear()
    reader = ChunkReader(chunks)
    reader.seek(3 * CHUNK - 10)
    assert reader.read(20) == data[3 * CHUNK - 10 : 3 * CHUNK + 10]
    assert store.got == ["2", "3"]  # the two chunks across the boundary, nothing else
    reader.seek(3 * CHUNK - 5)
    assert reader.read(4) == data[3 * CHUNK - 5 : 3 * CHUNK - 1]
    assert store.got == ["2", "3"]  # kept
    reader.seek(len(data) - 7)
    assert reader.read(100) == data[-7:] and reader.read(5) == b""
    reader.seek(0)
    assert reader.read() == data
    assert not context_file(ref).exists()


def test_a_lazy_context_in_the_store_is_not_rebuilt_here() -> None:
    ref, blobs, _ = only_in_store("x" * (5 * CHUNK))
    assert check_ref(ref, blobs, lazy_bytes=CHUNK) == ref
    assert not context_file(ref).exists()
    assert is_lazy(ref, CHUNK, blobs)
    # under the threshold it is loaded whole, as before: rebuilt here from the store
    assert stored_text(ref, blobs, threshold=10 * CHUNK) is None
    assert check_ref(ref, blobs, lazy_bytes=10 * CHUNK) == ref
    assert context_file(ref).exists()
    assert stored_text(ref, blobs, threshold=0) is None  # held here now: read from disk


def test_a_damaged_chunk_is_an_error_never_other_bytes() -> None:
    ref, blobs, _ = only_in_store("y" * (3 * CHUNK))
    namespace = ("contexts", ref["hash"])
    blobs.put(namespace, "1", {"b64": base64.b64encode(b"z" * CHUNK).decode()})
    reader = ChunkReader(stored(ref, blobs))
    assert reader.read(CHUNK) == b"y" * CHUNK
    with pytest.raises(ChunkError, match=r"chunk 1 \(bytes 1,024 to 2,048\).* is corrupt"):
        reader.read(10)
    assert blobs.store is not None
    blobs.store.delete(("rlm_graph", *namespace), "2")
    reader.seek(2 * CHUNK)
    with pytest.raises(ChunkError, match=r"chunk 2 .* is missing from the store"):
        reader.read(1)


def test_a_context_shared_before_chunk_hashes_is_rebuilt_as_before() -> None:
    ref, blobs, _ = only_in_store("w" * (2 * CHUNK))
    namespace = ("contexts", ref["hash"])
    blobs.put(namespace, "meta", {"chunks": 2})  # what older versions wrote
    assert stored_text(ref, blobs, threshold=0) is None
    assert check_ref(ref, blobs, lazy_bytes=0) == ref
    assert context_file(ref).read_text() == "w" * (2 * CHUNK)
