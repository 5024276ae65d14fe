"""Byte ranges of a context that only the run's LangGraph store holds, chunk by chunk.

A worker that resumes a thread whose large context it does not hold reads the ranges
its cells ask for from the store's chunks (``contexts.share``) instead of rebuilding
the whole file first: a slice costs the chunks that cover it, a search one chunk at a
time. Each chunk is checked against the sha256 the writer recorded, so a damaged store
gives an error, never other bytes (docs/huge.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rlm_graph.storage.blobs import Blobs, Namespace

# Chunks a reader keeps: a read that crosses one chunk boundary, aligned at both ends
# (three small reads and the read itself), fetches each of its two chunks once.
KEPT_CHUNKS = 2


class ChunkError(ValueError):
    """A chunk of a stored context is missing or does not hold what was stored."""


class Chunks(Protocol):
    """A context as fixed-size chunks: its size, the chunk size, and chunk ``index``."""

    @property
    def size(self) -> int:
        """The context's size in bytes."""
        ...

    @property
    def chunk_bytes(self) -> int:
        """The size of every chunk but the last."""
        ...

    def chunk(self, index: int) -> bytes:
        """The bytes of chunk ``index``, exactly as stored; ChunkError if they are not."""
        ...


@dataclass(frozen=True)
class StoredChunks:
    """The chunks of one context in a store, each verified against its recorded sha256."""

    blobs: Blobs
    namespace: Namespace
    size: int
    chunk_bytes: int
    hashes: tuple[str, ...]

    def chunk(self, index: int) -> bytes:
        """Fetch and verify chunk ``index`` (one store read)."""
        if not 0 <= index < len(self.hashes):
            raise ChunkError(f"the stored context has no chunk {index}")
        where = (
            f"chunk {index} (bytes {index * self.chunk_bytes:,} to "
            f"{min((index + 1) * self.chunk_bytes, self.size):,}) of the stored context "
            f"{self.namespace[-1][:12]}…"
        )
        record = self.blobs.get(self.namespace, str(index))
        if record is None:
            raise ChunkError(f"{where} is missing from the store")
        data = base64.b64decode(record["b64"])
        if hashlib.sha256(data).hexdigest() != self.hashes[index]:
            raise ChunkError(f"{where} is corrupt: its sha256 differs from the one stored")
        return data


class ChunkReader:
    """A file-like reader (``seek``, ``read``) over :class:`Chunks`, holding two chunks."""

    def __init__(self, chunks: Chunks) -> None:
        self._chunks = chunks
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._position = 0

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to byte ``offset`` (from the start only: the one use there is)."""
        if whence != 0:
            raise ValueError("a ChunkReader seeks from the start only")
        self._position = max(offset, 0)
        return self._position

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes from the position (all the rest if negative), fewer at the end."""
        return b"".join(self._pieces(self._chunks.size if size < 0 else size))

    def readinto(self, buffer: memoryview, /) -> int:
        """Fill ``buffer`` from the position (as a file opened unbuffered); bytes written."""
        got = 0
        for piece in self._pieces(len(buffer)):
            buffer[got : got + len(piece)] = piece
            got += len(piece)
        return got

    def _pieces(self, size: int) -> Iterator[memoryview]:
        """The next ``size`` bytes (fewer at the end), as views of the chunks that hold them."""
        stop = min(self._position + size, self._chunks.size)
        while self._position < stop:
            index, skip = divmod(self._position, self._chunks.chunk_bytes)
            piece = memoryview(self._chunk(index))[skip : skip + stop - self._position]
            if not piece:
                raise ChunkError(f"chunk {index} of the stored context is shorter than recorded")
            self._position += len(piece)
            yield piece

    def _chunk(self, index: int) -> bytes:
        if index in self._kept:
            self._kept.move_to_end(index)
            return self._kept[index]
        data = self._kept[index] = self._chunks.chunk(index)
        if len(self._kept) > KEPT_CHUNKS:
            self._kept.popitem(last=False)
        return data

    def close(self) -> None:
        """Let the kept chunks go."""
        self._kept.clear()

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
