"""A lazy context that only the store holds (another worker's): read in ranges, never rebuilt."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import tempfile
import tracemalloc
import uuid
from pathlib import Path

import pytest
from sandboxes import LIMITS, Echo, cell, printed
from support import CountingStore, wait_for

from rlm_graph.repl import lazy
from rlm_graph.repl.process import IsolatedSandbox
from rlm_graph.repl.session import Limits, Sandbox
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import (
    ContextRef,
    blob_dir,
    context_file,
    share,
    store_value,
    stored_text,
)
from rlm_graph.storage.ranges import ChunkReader, StoredChunks

LAZY = Limits(LIMITS.cell_timeout, LIMITS.cpu_instructions, LIMITS.memory_mb, 1 << 20)
CHUNK = 64 << 10
# Two-, three- and four-byte characters on every line, so cuts land inside characters
# and inside chunks; a line of its own so the context is no other test's.
TEXT = f"{uuid.uuid4()}\n" + "".join(f"line {i} é中😀 word{i % 7}\n" for i in range(60_000))
# What each cell prints, on the mounted file and on the store alike.
CELLS = {
    "slices": (
        "cuts = list(range(0, 40)) + [k * 65536 + d for k in (1, 7) for d in range(-5, 5)]\n"
        "cuts += [context.size]\n"
        "pieces = [context[a:b] for a, b in zip(cuts, cuts[1:])]\n"
        "print(''.join(pieces) == context[0:context.size], len(context), context[8:12])\n"
        "print(repr(context[65534:65540]), context[-6:], repr(context[2 * 65536 + 1]))"
    ),
    "lines": "print(context.lines(65536 * 3 - 4, 3), context.lines(0, 1))",
    "chunks": (
        "parts = list(context.chunks(100_000))\n"
        "print(len(parts), ''.join(parts) == context[0:context.size], sum(1 for _ in context))"
    ),
    "search": (
        "hits = await context.search(r'line 5\\d{3} .*word4', max_hits=5, start=70_000)\n"
        "print([(h['offset'], h['line']) for h in hits])\n"
        "print(all(context[h['offset']:h['offset'] + len(h['match'].encode())] == h['match']"
        " for h in hits))"
    ),
}


def shared() -> tuple[ContextRef, Blobs, CountingStore]:
    ref = store_value(TEXT)
    store = CountingStore()
    blobs = Blobs(store)
    share(ref, blobs, chunk_bytes=CHUNK)
    return ref, blobs, store


def elsewhere() -> tuple[ContextRef, Blobs, CountingStore]:
    """:func:`shared`, as a worker sees it that has only the store."""
    ref, blobs, store = shared()
    shutil.rmtree(blob_dir(ref))
    return ref, blobs, store


def from_store(ref: ContextRef, blobs: Blobs) -> StoredChunks:
    chunks = stored_text(ref, blobs, LAZY.lazy_context_bytes)
    assert chunks is not None
    return chunks


Worlds = tuple[dict[str, tuple[str, int]], Sandbox, CountingStore]


def seen(box: Sandbox, code: str) -> tuple[str, int]:
    """What a cell printed, and the bytes of the context it read and searched."""
    out = box.run(code)
    assert not out.error, out.error
    return out.stdout, out.scanned


@pytest.fixture(scope="module")
def worlds() -> Worlds:
    """What every cell printed and scanned on the mounted file, and a sandbox of a worker
    that has only the store."""
    ref, blobs, store = shared()
    local = Sandbox(ref, LAZY)
    expected = {name: seen(local, code) for name, code in CELLS.items()}
    shutil.rmtree(blob_dir(ref))  # the other worker: the store has it, its disk does not
    box = Sandbox(ref, LAZY, from_store(ref, blobs))
    box.handler = Echo()
    return expected, box, store


@pytest.mark.parametrize("name", list(CELLS))
def test_the_store_answers_and_counts_as_the_file_does(worlds: Worlds, name: str) -> None:
    expected, box, _ = worlds
    assert seen(box, CELLS[name]) == expected[name]
    assert not context_file(box.ref).exists() and not blob_dir(box.ref).exists()


def test_a_slice_fetches_only_the_chunks_that_cover_it(worlds: Worlds) -> None:
    _, box, store = worlds
    store.got.clear()
    assert printed(box, "x = context[11 * 65536 - 100 : 11 * 65536 + 100]") == ""
    assert sorted(store.got) == ["10", "11"]  # 64 KiB each, of a 1.6 MB context


def test_a_damaged_chunk_is_an_error_in_the_cell() -> None:
    ref, blobs, _ = elsewhere()
    namespace = ("contexts", ref["hash"])
    blobs.put(namespace, "3", {"b64": base64.b64encode(b"z" * CHUNK).decode()})
    box = Sandbox(ref, LAZY, from_store(ref, blobs))
    assert printed(box, "print(context[10:20] == context[10:20])") == "True\n"
    out = box.run("context[3 * 65536 + 5 : 3 * 65536 + 9]")
    assert "RuntimeError: ChunkError: chunk 3 (bytes 196,608 to 262,144)" in out.error
    assert "is corrupt" in out.error and not out.halted
    out = box.run("await context.search('word', start=3 * 65536)")
    assert "ValueError: chunk 3" in out.error and "is corrupt" in out.error


def test_a_worker_process_reads_the_store_through_the_host_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the ranges go
    ref, blobs, _ = elsewhere()
    code = "seen = [context[65530:65542], context.lines(200_000, 2)]\nprint(seen)"
    first = IsolatedSandbox(ref, LAZY, from_store(ref, blobs))
    try:
        seen = first.run(code).stdout
        assert seen.startswith("['") and "line " in seen
        assert [f.name[:11] for f in tmp_path.iterdir()] == ["rlm-ranges-"]  # the host's
        os.kill(first.pid, signal.SIGKILL)  # a crash: the registry rebuilds it by replay
        wait_for(lambda: first.broken, "the host to see its worker gone")
        again = IsolatedSandbox(ref, LAZY, from_store(ref, blobs))
        try:
            again.replay([cell(code, [])])
            assert again.run("print(seen)").stdout == seen
        finally:
            again.close()
    finally:
        first.close()
    assert not context_file(ref).exists()
    assert not list(tmp_path.iterdir())  # removed by the host, crash or not


def test_a_search_of_the_store_holds_a_block_and_two_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref, blobs, store = elsewhere()
    chunks = from_store(ref, blobs)
    monkeypatch.setattr(lazy, "SEARCH_BLOCK", 2 * CHUNK)
    request = lazy.SearchRequest("word9", 10, 0, chunks.size, 0)  # no hit: read to the end
    store.got.clear()
    tracemalloc.start()
    try:
        found = lazy.search_text(ChunkReader(chunks), request, chunks.size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (found.hits, found.scanned) == ([], chunks.size)
    assert store.got == [str(i) for i in range(len(chunks.hashes))]  # each record once
    # the block with its copies (read, tail + data), two records: not the 25 records
    assert peak < 10 * CHUNK < chunks.size // 2, peak


def test_each_read_releases_the_call_it_started() -> None:
    ref, blobs, _ = elsewhere()
    box = Sandbox(ref, LAZY, from_store(ref, blobs))
    code = (
        "import _eryx\n"
        "handles, started = [], _eryx._eryx_invoke_async\n"
        "def spy(*args):\n"
        "    status, value = started(*args)\n"
        "    handles.append(value[0] if status == 2 else None)\n"
        "    return status, value\n"
        "_eryx._eryx_invoke_async = spy\n"
        "parts = [context[i * 1000 : i * 1000 + 10] for i in range(100)]\n"
        "print(len(handles) > 250, len(set(handles)) <= 3)"
    )
    # up to three reads a slice (its two ends, then the bytes); a call never released
    # keeps its handle, and its memory, for the rest of the session
    assert printed(box, code) == "True True\n"
