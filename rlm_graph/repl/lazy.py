"""The host side of a lazy context: regex search over the stored file(s), in blocks.

A context over the lazy threshold is a ``LazyText`` handle in the guest (see
``prelude``) that reads its slices from the read-only mount itself. Searching is done
here instead, natively, through the ``_rlm_search`` callback: CPython's ``re`` in the
wasm sandbox is ~2.5x slower than on the host (eryx.md), and a scan of gigabytes must
not pass every byte into the sandbox. Memory stays at one block whatever the file size.

A context that only the run's store holds (another worker's, ``storage.ranges``) is
searched the same way, chunk by chunk, and the guest's reads of it arrive through a
:class:`RangeFolder` instead of the file; a large folder's files arrive through a
:class:`FolderFiles`, read where they are and stamped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import FileIO
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, NotRequired, Protocol, TypedDict

from rlm_graph.storage.folders import (
    MANIFEST,
    STAMPS,
    Opener,
    Stamp,
    Stamps,
    read_manifest,
    stamp_of,
)
from rlm_graph.storage.ranges import ChunkReader, Chunks
from rlm_graph.text import one_line

# Bytes read per step: big enough that a literal search runs at memory speed, small
# enough to stay a rounding error beside the sandbox's own memory.
SEARCH_BLOCK = 8 << 20
MAX_HITS = 10_000
# Bytes of a matching line (and of the match) handed back: a hit in a 1 GB line must
# not carry that line into the sandbox.
MAX_LINE_BYTES = 1_000


class Hit(TypedDict):
    """One match: its byte offset in the context (or its file), the match, its line."""

    offset: int
    match: str
    line: str
    path: NotRequired[str]
    """The file of a lazy folder that holds the match."""


class Reader(Protocol):
    """What a search reads: an unbuffered file, or a :class:`ChunkReader` over the store."""

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to byte ``offset``."""
        ...

    def readinto(self, buffer: memoryview, /) -> int | None:
        """Fill ``buffer`` from the position; how many bytes (0 at the end)."""
        ...


class Scan(NamedTuple):
    """What a search found, and how far into the file it read (its cost to the cell)."""

    hits: list[Hit]
    end: int


def search_file(reader: Reader, pattern: str, max_hits: int, start: int, stop: int) -> Scan:
    """Matches of ``pattern`` (a regex over the UTF-8 bytes) in bytes [start, stop) of ``reader``.

    The file is scanned in blocks cut after a line break, so a match never spans two
    lines' worth of blocks: like grep, a match lies within a block of whole lines. The
    scan ends at ``stop`` or at the ``max_hits``-th hit, whichever comes first.
    """
    try:
        regex = re.compile(pattern.encode("utf-8", errors="surrogatepass"))
    except re.error as exc:
        raise ValueError(f"bad pattern {pattern!r}: {exc}") from exc
    max_hits = min(max(max_hits, 0), MAX_HITS)
    hits: list[Hit] = []
    end = start
    reader.seek(start)
    for block in _blocks(reader, start, stop):
        end = block.base + block.size
        for match in regex.finditer(block.data, 0, block.cut):
            hits.append(_hit(block.data, block.cut, match, block.base))
            if len(hits) >= max_hits:
                return Scan(hits, end)
    return Scan(hits, end)


class _Block(NamedTuple):
    """Bytes of the file from ``base``: ``data[:size]``, searched up to ``cut``."""

    base: int
    data: bytearray
    size: int
    cut: int
    remaining: int  # bytes of the span not read yet
    last: bool


def _blocks(reader: Reader, start: int, stop: int) -> Iterator[_Block]:
    """The blocks of bytes [start, stop): each the previous one's uncut tail, then new bytes.

    One buffer serves every block, where a fresh ``tail + data`` per step copied each
    block twice: the figure's 1 GiB search took 0.47-0.51 s of CPU instead of 0.48-0.68
    (GNU grep 0.36), 256 MiB of English text 0.09-0.20 s instead of 0.14-0.22 (grep
    0.17-0.20). Reading ahead on a thread did not help: ``re`` holds the GIL, so the
    reader waited for it. Jumping between the places that hold the pattern's leading
    literal with ``bytes.find`` did not either: 15 % faster for the figure's pattern,
    but twice as slow for ``Outside`` in English text (its last letter is common).
    """
    span = max(stop - start, 0)
    # the tail is shorter than a block's new bytes, so two blocks' worth always suffice
    block = _Block(start, bytearray(min(2 * SEARCH_BLOCK, span)), 0, 0, span, False)
    while not block.last:
        block = _fill(reader, block)
        yield block


def _fill(reader: Reader, previous: _Block) -> _Block:
    """The block after ``previous``, in its buffer: its uncut tail, then new bytes."""
    buffer, tail = previous.data, previous.size - previous.cut
    buffer[:tail] = buffer[previous.cut : previous.size]
    got, want = 0, min(SEARCH_BLOCK, previous.remaining)
    with memoryview(buffer)[tail : tail + want] as view:
        while got < want and (count := reader.readinto(view[got:])):
            got += count
    size, remaining = tail + got, previous.remaining - got
    last = got == 0 or remaining <= 0
    cut = size if last else buffer.rfind(b"\n", 0, size) + 1 or size
    return _Block(previous.base + previous.cut, buffer, size, cut, remaining, last)


def _hit(block: bytes | bytearray, cut: int, match: re.Match[bytes], base: int) -> Hit:
    begin = block.rfind(b"\n", 0, match.start()) + 1
    end = block.find(b"\n", match.end(), cut)
    end = cut if end < 0 else end
    return Hit(
        offset=base + match.start(),
        match=_text(match.group()),
        line=_text(block[begin : min(end, begin + MAX_LINE_BYTES)]),
    )


def _text(data: bytes | bytearray) -> str:
    return data[:MAX_LINE_BYTES].decode("utf-8", errors="replace")


class SearchRequest(NamedTuple):
    """A ``_rlm_search`` call: the search, and the bytes the cell has read so far."""

    pattern: str
    max_hits: int
    start: int
    stop: int
    read: int


def search_request(kwargs: dict[str, Any]) -> SearchRequest | str:
    """The arguments of a ``_rlm_search`` call, or why they are refused."""
    names = SearchRequest._fields
    if set(kwargs) != set(names):
        return "_rlm_search takes keyword arguments " + ", ".join(names)
    pattern, numbers = kwargs["pattern"], [kwargs[k] for k in names[1:]]
    if not isinstance(pattern, str) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in numbers
    ):
        return "_rlm_search takes pattern=str and integer " + ", ".join(names[1:])
    return SearchRequest(pattern, *numbers)


class Found(NamedTuple):
    """A search's answer: its hits, the bytes it read, and why it stopped short, if it did."""

    hits: list[Hit]
    scanned: int
    stopped: str


def search_text(reader: Reader, request: SearchRequest, budget: int) -> Found:
    """:func:`search_file` over a lazy text, reading at most ``budget`` bytes.

    A search cut short by the budget is refused rather than answered with some of its
    hits: a partial list would read as "no more matches".
    """
    pattern, max_hits, start, stop, _ = request
    end = min(stop, start + max(budget, 0))
    scan = search_file(reader, pattern, max_hits, start, end)
    if end >= stop or len(scan.hits) >= min(max_hits, MAX_HITS):
        return Found(scan.hits, scan.end - start, "")
    return Found(
        scan.hits,
        scan.end - start,
        f"the search reached the cell's scan limit at byte {scan.end:,}: search "
        f"[{start:,}, {scan.end:,}) and the rest in separate cells, or narrow it with "
        "start/stop",
    )


def _search_files(
    files: Opener, paths: list[str], request: SearchRequest, budget: int, read: dict[int, Stamp]
) -> Found:
    """The search of :meth:`FolderFiles.search`, the stamp of each file it read put in ``read``."""
    pattern, max_hits, start, stop, _ = request
    hits: list[Hit] = []
    scanned = 0
    for index in range(start, min(stop, len(paths))):
        with _opened(files, paths[index]) as (reader, before):
            if scanned + before.size > budget:
                return Found(
                    hits,
                    scanned,
                    f"the search reached the cell's scan limit at file {index:,} "
                    f"({paths[index]}): search on from start={index} in another cell",
                )
            scan = search_file(reader, pattern, max_hits - len(hits), 0, before.size)
            read[index] = _unchanged(reader, paths[index], before)
        scanned += scan.end
        for hit in scan.hits:
            hit["path"] = paths[index]
            hits.append(hit)
        if len(hits) >= min(max_hits, MAX_HITS):
            break
    return Found(hits, scanned, "")


class FileChanged(Exception):
    """A file of a lazy folder is not as a cell first read it; the message names it."""


def _changed(path: str) -> str:
    return f"{path} changed since the folder was stored: ask again with the folder"


@contextmanager
def _opened(files: Opener, path: str) -> Iterator[tuple[FileIO, Stamp]]:
    """A file of the folder, open, and its stamp; one gone or swapped is a change."""
    try:
        reader = files.open(path)
    except OSError as exc:
        raise FileChanged(_changed(path)) from exc
    with reader:
        yield reader, stamp_of(os.fstat(reader.fileno()))


def _unchanged(reader: FileIO, path: str, before: Stamp) -> Stamp:
    """The stamp of a file just read, if it is still the one it had before the read.

    A write while it was read would mix old and new bytes in what the cell got.
    """
    if stamp_of(os.fstat(reader.fileno())) != before:
        raise FileChanged(_changed(path))
    return before


def scanned_note(count: int) -> str:
    """The line the model reads below a cell that read or searched a lazy context."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"[scanned {count / (1 << shift):.1f} {unit} of the context in this cell]"
    return f"[scanned {count:,} bytes of the context in this cell]"


# The most one guest read asks for: LazyText.MAX_READ (64 MiB) and its alignment.
MAX_RANGE_BYTES = (64 << 20) + 8


def _publish(folder: Path, name: str, write: Callable[[BinaryIO], object]) -> Path:
    """Write file ``name`` of ``folder``, renamed into place whole: the guest waits for it."""
    part = folder / f"{name}.part"
    try:
        with part.open("wb") as out:
            write(out)
        os.replace(part, folder / name)
    finally:
        part.unlink(missing_ok=True)
    return folder / name


def folder_for_ranges(owner: object) -> tuple[Path, Callable[[], object]]:
    """A new private folder for a :class:`RangeFolder`, and the call that removes it.

    It goes when ``owner`` is collected or this process exits, if not before. The host
    owns a worker process's folder: a worker ends with ``os._exit`` when its host goes
    or shuts its socket, running no clean-up, which left a folder (and a range of up to
    64 MiB) behind for 6 of the sandboxes the tests opened.
    """
    path = Path(tempfile.mkdtemp(prefix="rlm-ranges-"))
    return path, weakref.finalize(owner, shutil.rmtree, path, True)


class RangeFolder:
    """The guest's mount for a context that only the store holds: ranges, written on request.

    The guest asks for bytes [start, stop) as read ``number`` (``_rlm_fetch``); they are
    written into ``path`` (see :func:`folder_for_ranges`) as file ``<number>``, or
    ``<number>.error`` with why not (a damaged chunk), each renamed into place whole. The
    guest reads one range at a time, so a request removes the ranges before it: the
    folder holds one range, the reader two chunks.
    """

    def __init__(self, chunks: Chunks, path: Path) -> None:
        self.path = path
        self._chunks = chunks
        self._reader = ChunkReader(chunks)
        self._lock = threading.Lock()

    def serve(self, number: int, start: int, stop: int) -> None:
        """Write bytes [start, stop) as read ``number``, or the error that stopped it."""
        with self._lock:
            for old in os.scandir(self.path):
                os.unlink(old.path)
            try:
                if not 0 <= start <= stop or stop - start > MAX_RANGE_BYTES:
                    raise ValueError(f"a read of bytes [{start:,}, {stop:,}) is refused")
                self._write(str(number), start, stop)
            except Exception as exc:  # a damaged chunk, the store out of reach: the guest
                # waits for one of the two files, so every failure must write one
                why = one_line(exc).encode()
                _publish(self.path, f"{number}.error", lambda out: out.write(why))

    def _write(self, name: str, start: int, stop: int) -> None:
        def copy(out: BinaryIO) -> None:
            self._reader.seek(start)
            left = stop - start
            while left > 0 and (data := self._reader.read(min(left, self._chunks.chunk_bytes))):
                out.write(data)
                left -= len(data)

        _publish(self.path, name, copy)

    def close(self) -> None:
        """Let the kept chunks go."""
        self._reader.close()


# One file a guest read may return, as LazyText.MAX_READ; a batch stops after a MiB
# (the file that passes it included): items() of 100,000 small files in ~1,000 requests.
MAX_FILE_BYTES = 64 << 20
BATCH_BYTES = 1 << 20


class FolderFiles:
    """The guest's mount for a lazy folder: its manifest, and the files it asks for.

    The sandbox never sees the folder itself, so nothing but the files of the manifest
    can reach it: hidden files, links and anything added since are out of its reach
    whatever the folder holds. The guest asks for files ``start`` to ``stop`` (indices
    into the manifest) as read ``number`` (``_rlm_fetch``, as :class:`RangeFolder`);
    they are read where they are, stamped (:class:`~rlm_graph.storage.folders.Stamps`),
    and written into ``path`` as file ``<number>``: a JSON line of each file's size
    (or, in its place, why it is refused, which ends the batch), then their bytes.
    Searches read the files the same way (:meth:`search`), sharing the manifest and
    the stamps known so far.
    """

    def __init__(self, stored: Path, path: Path) -> None:
        self.path = path
        self._stored = stored
        self._paths: list[str] | None = None
        self._stamps = Stamps(stored / STAMPS)
        self._lock = threading.Lock()
        self._previous = path / "0"
        try:
            os.link(stored / MANIFEST, path / MANIFEST)
        except OSError:  # another file system
            shutil.copyfile(stored / MANIFEST, path / MANIFEST)

    def serve(self, number: int, start: int, stop: int) -> None:
        """Write files [start, stop) (a MiB's worth) as read ``number``, or why not."""
        with self._lock:
            self._previous.unlink(missing_ok=True)  # the guest has read it: it asks anew
            try:
                sizes, data = self._read(start, stop)
            except Exception as exc:  # the guest waits for one of the two files
                why = one_line(exc).encode()
                self._previous = _publish(self.path, f"{number}.error", lambda out: out.write(why))
                return
            header = json.dumps(sizes).encode() + b"\n"
            self._previous = _publish(
                self.path, str(number), lambda out: out.writelines([header, *data])
            )

    def search(self, request: SearchRequest, budget: int) -> Found:
        """:func:`search_file` over the files ``start`` to ``stop``, in order.

        Hits name their file (``path``); offsets are within it. The files are read and
        stamped as the guest's reads are: a file changed since a cell first read it is
        refused.
        """
        paths = self._manifest()
        read: dict[int, Stamp] = {}
        try:
            with Opener(self._stored) as files:
                found = _search_files(files, paths, request, budget, read)
        except FileChanged as exc:
            return Found([], 0, str(exc))
        clash = None if found.stopped else self._stamps.settle(read)
        return found if clash is None else Found([], found.scanned, _changed(paths[clash]))

    def _manifest(self) -> list[str]:
        if self._paths is None:  # ~100 bytes a file: read when first needed
            self._paths = read_manifest(self._stored)
        return self._paths

    def _read(self, start: int, stop: int) -> tuple[list[int | str], list[bytes]]:
        paths = self._manifest()
        sizes: list[int | str] = []
        data: list[bytes] = []
        read: dict[int, Stamp] = {}
        total = 0
        with Opener(self._stored) as files:
            for index in range(max(start, 0), min(stop, len(paths))):
                try:
                    data.append(_read_whole(files, paths[index], read, index))
                except (FileChanged, ValueError) as exc:
                    sizes.append(str(exc))
                    break
                sizes.append(len(data[-1]))
                total += len(data[-1])
                if total >= BATCH_BYTES:
                    break
        clash = self._stamps.settle(read)
        if clash is not None:  # a cell read it otherwise before: refused from here on
            cut = clash - max(start, 0)
            sizes[cut:], data[cut:] = [_changed(paths[clash])], []
        return sizes, data


def _read_whole(files: Opener, path: str, read: dict[int, Stamp], index: int) -> bytes:
    """One file of a folder, its stamp put in ``read``."""
    with _opened(files, path) as (reader, before):
        if before.size > MAX_FILE_BYTES:
            raise ValueError(
                f"{path} holds {before.size:,} bytes, over the {MAX_FILE_BYTES:,} one read "
                "may: await context.search(pattern, ...) finds what it holds"
            )
        data = reader.read(before.size)
        read[index] = _unchanged(reader, path, before)
    return data
