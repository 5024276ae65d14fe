"""A text context over the lazy threshold: a handle read on demand, in bounded memory."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from sandboxes import LIMITS, Echo, assert_replays, printed

from rlm_graph.repl import lazy
from rlm_graph.repl.process import IsolatedSandbox
from rlm_graph.repl.session import Limits, Sandbox
from rlm_graph.storage.contexts import (
    ContextWarning,
    blob_dir,
    context_file,
    store_path,
    store_value,
)

LAZY = Limits(LIMITS.cell_timeout, LIMITS.cpu_instructions, LIMITS.memory_mb, 1 << 20)
# Two-, three- and four-byte characters on every line, so cuts land inside characters.
TEXT = "".join(f"line {i} é中😀 word{i % 7}\n" for i in range(60_000))


@pytest.fixture(scope="module")
def box() -> Sandbox:
    sandbox = Sandbox(store_value(TEXT), LAZY)
    sandbox.handler = Echo()
    return sandbox


def test_small_contexts_stay_a_str() -> None:
    assert printed(Sandbox(store_value("small"), LAZY), "print(type(context).__name__)") == "str\n"


def test_the_handle_says_its_size_and_refuses_to_become_one_str(box: Sandbox) -> None:
    size = len(TEXT.encode())
    assert printed(box, "print(context.size, len(context))") == f"{size} {size}\n"
    out = box.run("print(context)")
    assert "too many to make one str: slice it" in out.error
    assert "has no 'split'" in box.run("context.split()").error


def test_slices_never_split_a_character_and_tile_exactly(box: Sandbox) -> None:
    # every cut inside the first characters, and cuts across 1 MiB read boundaries
    code = (
        "cuts = list(range(0, 40)) + [(1 << 20) + d for d in range(-5, 5)] + [context.size]\n"
        "pieces = [context[a:b] for a, b in zip(cuts, cuts[1:])]\n"
        "print(''.join(pieces) == context[0:context.size], context[7], context[-6:])"
    )
    assert printed(box, code) == f"True é {TEXT[-6:]}\n"
    # "line 0 é中": é is bytes 7-8, 中 9-11; a cut inside a character moves to its start
    assert printed(box, "print(context[8:10], repr(context[10:11]))") == "é ''\n"


def test_chunks_lines_and_iteration(box: Sandbox) -> None:
    code = (
        "parts = list(context.chunks(100_000))\n"
        "print(''.join(parts) == context[0:context.size], all(p.endswith('\\n') for p in parts))\n"
        "print(sum(1 for _ in context), context.lines(100, 2))"
    )
    first, second = printed(box, code).splitlines()
    assert first == "True True"
    held = TEXT.encode()[:100].count(b"\n")  # the line that holds byte 100
    assert second == f"60000 {TEXT.splitlines()[held : held + 2]}"


def test_search_runs_on_the_host_and_its_offsets_slice_back(box: Sandbox) -> None:
    code = (
        "hits = await context.search(r'line 5\\d{3} .*word4', max_hits=5)\n"
        "print(len(hits), hits[0]['line'])\n"
        "print(all(context[h['offset']:h['offset'] + len(h['match'].encode())] == h['match']"
        " for h in hits))"
    )
    assert printed(box, code) == "5 line 5002 é中😀 word4\nTrue\n"
    assert "bad pattern '('" in box.run("await context.search('(')").error


def test_search_finds_every_hit_across_block_seams(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lazy, "SEARCH_BLOCK", 4096)  # hundreds of seams
    data = TEXT.encode()
    expected = [m.start() for m in re.finditer(rb"word[36]", data)]
    with context_file(box.ref).open("rb", buffering=0) as reader:
        hits = lazy.search_file(reader, "word[36]", 100_000, 0, len(data)).hits
        assert [h["offset"] for h in hits] == expected[: lazy.MAX_HITS]
        window = lazy.search_file(reader, "word", 3, 1000, 2000).hits
    assert [h["offset"] for h in window] == [
        m.start() + 1000 for m in re.finditer(rb"word", data[1000:2000])
    ][:3]


def _scan_as_before(data: bytes, pattern: bytes, start: int, stop: int) -> list[int]:
    """Offsets of the search before its buffer was reused: ``tail + data`` blocks."""
    regex, offsets = re.compile(pattern), []
    base, tail, position = start, b"", start
    while True:
        new = data[position : min(position + lazy.SEARCH_BLOCK, stop)]
        position += len(new)
        block, last = tail + new, not new or position >= stop
        cut = len(block) if last else block.rfind(b"\n") + 1 or len(block)
        offsets += [base + m.start() for m in regex.finditer(block, 0, cut)]
        if last:
            return offsets
        base, tail = base + cut, block[cut:]


# Adjacent matches, multi-line matches, anchors, lookbehind, an alternation and a line
# longer than a block: the reused buffer must not change a single hit.
SEAM_PATTERNS = [
    "é中😀 word3",
    "line \\d+0 ",
    "line 1\\d*7",
    "😀 word2\\nline",
    "^line",
    "(?<=\\n)line 4",
    "x{3}y|word5",
    "zz+y",
    "xx",
    "(?i)LINE 99",
    "0\\.5",
]


@pytest.mark.parametrize("pattern", SEAM_PATTERNS)
def test_search_hits_are_those_of_a_plain_scan_of_the_same_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    monkeypatch.setattr(lazy, "SEARCH_BLOCK", 4096)
    data = (TEXT[:200_000] + "x" * 9000 + "xxxy zzzzy 0.5\n" + TEXT[:50_000]).encode()
    path = tmp_path / "seams.log"
    path.write_bytes(data)
    assert re.search(pattern.encode(), data)
    for start, stop in [(0, len(data)), (1001, 150_000), (5, len(data) + 4096)]:
        with path.open("rb", buffering=0) as reader:
            hits = lazy.search_file(reader, pattern, 100_000, start, stop).hits
        expected = _scan_as_before(data, pattern.encode(), start, stop)
        assert [h["offset"] for h in hits] == expected[: lazy.MAX_HITS], (start, stop)


def test_cells_that_read_the_handle_replay_to_the_same_values(box: Sandbox) -> None:
    code = "seen = (await context.search('word5'))[7]['offset'], context.lines(5000, 1)"
    assert_replays(box, code, LAZY)


def test_a_cell_reports_what_it_scanned(box: Sandbox) -> None:
    out = box.run("await context.search('no such text')")
    assert out.scanned == len(TEXT.encode())
    assert out.output == "[]\n[scanned 1.5 MiB of the context in this cell]"  # no hits
    out = box.run("head = context[0:1000]")  # 1,000 bytes and 4 to find a character's start
    assert out.scanned == 1004
    assert box.run("x = 1").output == ""  # a cell that reads nothing says nothing


def test_reads_and_searches_stop_at_the_cells_scan_limit() -> None:
    limits = dataclasses.replace(LAZY, scan_bytes=1 << 20)
    box = IsolatedSandbox(store_value(TEXT), limits)  # the count crosses the worker's socket
    try:
        out = box.run("await context.search('no such text')")
        assert "reached the cell's scan limit at byte 1,048,576" in out.error
        assert out.scanned == 1 << 20
        out = box.run("a = context[0:600_000]\nb = context[600_000:1_200_000]")
        assert "ScanLimitError" in out.error and "(cell_scan_mb)" in out.error
        assert 600_000 < out.scanned < 1 << 20  # the refused read was not made
        # each cell has the whole limit; a search that ends at max_hits is answered
        out = box.run("print(len(await context.search('word3', max_hits=2)))")
        assert out.stdout == "2\n" and not out.error
        out = box.run("a = context[0:1_000_000]\nawait context.search('word3', max_hits=10**4)")
        assert "reached the cell's scan limit" in out.error  # reads and searches share it
        assert out.scanned == 1 << 20
    finally:
        box.close()


def test_a_file_stored_unread_reads_its_bad_bytes_as_replacement_characters(
    tmp_path: Path,
) -> None:
    # stored by its stamp (over 1 KiB here), so never checked for UTF-8 as a whole
    bad = b"bad \xff\xfe and \x80\x80\x80\x80\x80 and \xe4\xb8 cut\n"
    path = tmp_path / "bad.log"
    path.write_bytes(bad + TEXT[:20_000].encode() + bad + b"the code is 4217\n")
    with pytest.warns(ContextWarning, match="first 64 KiB of context file .* not valid UTF-8"):
        ref = store_path(path, lazy_text_bytes=1 << 10)
    try:
        box = Sandbox(ref, dataclasses.replace(LAZY, lazy_context_bytes=1 << 40))
        code = (
            "cuts = list(range(0, 40)) + [context.size]\n"
            "pieces = [context[a:b] for a, b in zip(cuts, cuts[1:])]\n"
            "print(''.join(pieces) == context[0:context.size], context.lines(0, 1)[0])\n"
            "hits = await context.search(r'and .{5} and .{2} cut')\n"
            "print(len(hits), hits[0]['match'], context.lines(hits[1]['offset'], 2)[1])"
        )
        line = bad.decode("utf-8", "replace").strip()  # what Python makes of them
        assert (
            printed(box, code) == f"True {line}\n2 {line[line.index('and') :]} the code is 4217\n"
        )
    finally:
        shutil.rmtree(blob_dir(ref))


def _memory(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) << 10  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_300mb_file_is_read_in_bounded_memory(tmp_path: Path) -> None:
    size = 300 << 20
    path = tmp_path / "big.log"
    with path.open("wb") as handle:  # sparse: a few text lines among zeros
        handle.truncate(size)
        for offset in (0, size // 3, size - 100):
            handle.seek(offset)
            handle.write(f"needle at {offset}\n".encode())
    ref = store_path(path)
    try:
        # The search reads 300 MB cold since such a file is stored unread: 5 s was
        # exceeded once under a loaded landing. This test asserts memory, not time.
        box = IsolatedSandbox(ref, dataclasses.replace(LAZY, cell_timeout=60.0))
        Path(f"/proc/{box.pid}/clear_refs").write_text("5")  # peak RSS counts from now
        before = _memory(box.pid, "VmRSS")  # ~190 MB: the runtime and an empty sandbox
        code = (
            "hits = await context.search(r'needle at \\d+', max_hits=10)\n"
            # 64 MB read in the guest (all 300 MB would cost more fuel than a test cell has)
            "read = sum(len(c) for c in context.chunks(4 << 20, start=context.size - (64 << 20)))\n"
            "print([h['offset'] for h in hits], read == 64 << 20)"
        )
        out = box.run(code)
        assert out.stdout == f"[0, {size // 3}, {size - 100}] True\n", out.output
        grown = _memory(box.pid, "VmHWM") - before
        box.close()
    finally:
        shutil.rmtree(blob_dir(ref))
    # measured: +40 MB (the host's search blocks and the guest's chunks); loading the
    # context whole would add at least its 300 MB
    assert grown < size // 4, f"the sandbox process grew by {grown:,} bytes"
