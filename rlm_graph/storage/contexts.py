"""Putting a context where the sandbox can read it, by content hash.

The context is written once to a blob directory (a UTF-8 file given by path is
hard-linked there instead, with a stamp that tells when it changed; a large one is not
even read, and the stamp names it) and mounted
read-only into the sandbox: a volume read of 100 MB takes 0.2 s where passing it as code
takes seconds and gigabytes. State keeps only the
:class:`~rlm_graph.graph.state.ContextRef`. When the run has a LangGraph store, the
context is copied into it once as well (:func:`share`), so a worker on another machine
that resumes the thread can rebuild the local file (:func:`materialize`), or, for a
context too large to load, read the ranges its cells ask for (:func:`stored_text`).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypedDict

from rlm_graph.storage.folders import (
    MANIFEST,
    SOURCE,
    STAMPS,
    FolderStamp,
    files_changed,
    list_files,
    list_folder,
    manifest,
    same_names,
    settled,
)
from rlm_graph.storage.home import home
from rlm_graph.storage.ranges import StoredChunks
from rlm_graph.text import first_of, preview, utf8, valid_text

if TYPE_CHECKING:
    from rlm_graph.storage.blobs import Blobs


class ContextRef(TypedDict):
    """Where the context is stored and what the model may know about it.

    Graph state keeps this, never the context: it is small, and its hash names the
    stored copy. ``length`` counts characters, items or files; for a large file stored
    unread (``type_name`` :data:`LAZY_TEXT`) it counts bytes.
    """

    hash: str
    kind: Literal["text", "json", "directory", "folder"]
    length: int
    type_name: str
    preview: str


PREVIEW_CHARS = 500
_KINDS = ("text", "json", "directory", "folder")
# Folders with more files than this are read in place, file by file (storage.folders).
LAZY_FOLDER_FILES = 10_000
# Text larger than this is read through a handle (the default of lazy_context_mb), and a
# file that large is stored by its stamp, not read whole (:func:`_store_by_stamp`).
LAZY_CONTEXT_BYTES = 256 << 20
# The type name of text stored by its stamp: never read whole, so its length is in
# bytes and its content is not known to be UTF-8 (reads replace bad bytes).
LAZY_TEXT = "LazyText"
# Bytes read from each end of a file stored by its stamp, into its identity and preview.
_SAMPLE = 64 << 10
_CHUNK = 1 << 20
# Bytes per store record: small enough for any store's value limits once base64'd.
_SHARE_CHUNK = 4 << 20
# The sandbox is wasm32: its largest string is about 2.1 GB (measured), so a larger
# context could never be loaded. Refusing it up front saves copying it first.
MAX_CONTEXT_BYTES = 2_000_000_000
# Text is read lazily at any size, but a stream without end (stdin from /dev/zero) must
# not fill the disk: text past this is refused as it is copied.
MAX_TEXT_BYTES = 64 << 30
# Parsing or printing nesting deeper than ~2,000 levels inside the sandbox overflows
# eryx's native stack and aborts the host process (measured, pyeryx 0.11): the host
# refuses such JSON before the sandbox ever parses it.
MAX_JSON_DEPTH = 500


class ContextError(ValueError):
    """The context given cannot be used; the message says why and what to do."""


class ContextWarning(UserWarning):
    """The context is used, but not exactly as given (bytes replaced, or it is empty)."""


_decoding = threading.local()


def _replace_and_count(error: UnicodeError) -> tuple[str, int]:
    """The ``replace`` error handler, counting what it replaced in this thread."""
    assert isinstance(error, UnicodeDecodeError)
    _decoding.replaced = getattr(_decoding, "replaced", 0) + 1
    return "\ufffd", error.end


codecs.register_error("rlm-replace", _replace_and_count)


class _Lenient:
    """Decode UTF-8 with U+FFFD for bad bytes, then warn once with how many were bad."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> _Lenient:
        _decoding.replaced = 0
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and (count := getattr(_decoding, "replaced", 0)):
            warnings.warn(
                f"{self.what} is not valid UTF-8: replaced {count:,} invalid byte "
                "sequence(s) with U+FFFD",
                ContextWarning,
                stacklevel=3,
            )


def check_ref(
    ref: ContextRef, blobs: Blobs | None = None, lazy_bytes: int | None = None
) -> ContextRef:
    """Accept a reference only if it names a stored context; fetch it from the store.

    The hash becomes a path, so anything but 64 hex digits is refused outright. Text
    over ``lazy_bytes`` that only the store holds stays there: it is read in ranges.
    """
    digest = str(ref.get("hash", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or ref.get("kind") not in _KINDS:
        raise ContextError(
            "context_ref is malformed: pass a reference made by store_value/store_path"
        )
    stored = context_file(ref)
    if (
        not stored.exists()
        and not _in_store(ref, blobs, lazy_bytes)
        and not materialize(ref, blobs)
    ):
        # a folder's files are read in place: only the machine that stored it has them
        where = "" if ref["kind"] != "folder" else " (a large folder is read where it was given)"
        raise ContextError(
            f"context_ref {digest[:12]}… is not in the blob store at {home()}{where}"
        )
    if not _unchanged(stored):
        raise _changed(ref)
    return ref


def _changed(ref: ContextRef) -> ContextError:
    return ContextError(
        f"the file of context {ref['hash'][:12]}… was read in place and has changed since it "
        "was stored: its earlier cells no longer describe it; ask again with the file"
    )


def _in_store(ref: ContextRef, blobs: Blobs | None, lazy_bytes: int | None) -> bool:
    """Whether a context this machine lacks is read in ranges from the store."""
    return lazy_bytes is not None and stored_text(ref, blobs, lazy_bytes) is not None


def _shared_namespace(ref: ContextRef) -> tuple[str, ...]:
    return ("contexts", ref["hash"])


def share(ref: ContextRef, blobs: Blobs, chunk_bytes: int = _SHARE_CHUNK) -> None:
    """Copy a stored context into the run's LangGraph store, once per content hash.

    The meta record lists each chunk's sha256, so a worker without the file can read
    and verify ranges of it (:func:`stored_text`). A large folder is not copied: its
    files stay where they were given.
    """
    if ref["kind"] == "folder" or blobs.store is None:
        return
    if blobs.get(_shared_namespace(ref), "meta") is not None:
        return
    hashes: list[str] = []
    size = 0
    with (stored := context_file(ref)).open("rb") as reader:
        while data := reader.read(chunk_bytes):
            blobs.put(
                _shared_namespace(ref), str(len(hashes)), {"b64": base64.b64encode(data).decode()}
            )
            hashes.append(hashlib.sha256(data).hexdigest())
            size += len(data)
    if not _unchanged(stored):  # a file stored in place, written to while it was copied
        raise _changed(ref)
    # Written last: a reader that finds "meta" finds every chunk.
    meta = {"chunks": len(hashes), "chunk_bytes": chunk_bytes, "size": size, "sha256": hashes}
    blobs.put(_shared_namespace(ref), "meta", meta)


def stored_text(ref: ContextRef, blobs: Blobs | None, threshold: int) -> StoredChunks | None:
    """The store's chunks of a lazy text context this machine does not hold, else None.

    Such a context is read in ranges from the store, never rebuilt whole here. Anything
    else (a file held here, a context under the threshold, one shared before chunks had
    hashes) is read from the local file, rebuilt by :func:`materialize` if need be.
    """
    if ref["kind"] != "text" or blobs is None or blobs.store is None:
        return None
    if context_file(ref).exists():
        return None
    meta = blobs.get(_shared_namespace(ref), "meta")
    if meta is None or "sha256" not in meta:
        return None
    if not (_by_stamp(ref) or _over(meta["size"], threshold)):
        return None
    namespace = _shared_namespace(ref)
    return StoredChunks(blobs, namespace, meta["size"], meta["chunk_bytes"], tuple(meta["sha256"]))


def materialize(ref: ContextRef, blobs: Blobs | None) -> bool:
    """Rebuild the local file of a context from the store; False if the store lacks it.

    Text named by its stamp is never rebuilt (its hash does not name the content to
    check it by): it is read in ranges from the store, each checked (:func:`stored_text`).
    """
    if blobs is None or blobs.store is None or _by_stamp(ref):
        return False
    meta = blobs.get(_shared_namespace(ref), "meta")
    if meta is None:
        return False
    hasher = hashlib.sha256(("text" if ref["kind"] == "text" else "json").encode() + b"\0")
    tmp = _temp_file()
    with tmp.open("wb") as writer:
        for index in range(int(meta["chunks"])):
            chunk = blobs.get(_shared_namespace(ref), str(index))
            if chunk is None:
                tmp.unlink(missing_ok=True)
                return False
            data = base64.b64decode(chunk["b64"])
            hasher.update(data)
            writer.write(data)
    if hasher.hexdigest() != ref["hash"]:
        tmp.unlink(missing_ok=True)
        raise ContextError(f"the stored context {ref['hash'][:12]}… is corrupt (hash mismatch)")
    _publish(tmp, ref["hash"], blob_name(ref))
    return True


def blob_dir(ref: ContextRef) -> Path:
    """The folder mounted as ``/ctx`` for this context (it holds one file)."""
    return home() / "contexts" / ref["hash"]


def blob_name(ref: ContextRef) -> str:
    """The file name of the context inside its folder.

    A large folder's is the file that says where the folder is: one stored by an
    earlier version (a manifest of stamps and a tree of links) has none, and is not used.
    """
    if ref["kind"] == "folder":
        return SOURCE
    return "context.txt" if ref["kind"] == "text" else "context.json"


def context_file(ref: ContextRef) -> Path:
    """The stored file of a context."""
    return blob_dir(ref) / blob_name(ref)


def is_lazy(ref: ContextRef, threshold: int, blobs: Blobs | None = None) -> bool:
    """Whether the sandbox reads this context on demand instead of loading it.

    Text over the threshold is lazy, and always over 2 GB (the wasm32 sandbox cannot
    hold it as one string); a large folder always is; JSON and small folders never.
    Text this machine does not hold is measured in the store (``blobs``).
    """
    if ref["kind"] != "text":
        return ref["kind"] == "folder"
    if _by_stamp(ref):
        return True  # never read whole: its length is in bytes, its text unchecked
    if stored_text(ref, blobs, threshold) is not None:
        return True
    return _over(context_file(ref).stat().st_size, threshold)


def _over(size: int, threshold: int) -> bool:
    return size > min(threshold, MAX_CONTEXT_BYTES)


def _by_stamp(ref: ContextRef) -> bool:
    """Whether ``ref`` names a file by its stamp (:func:`_stamped_ref`), not by its content."""
    return ref["kind"] == "text" and ref["type_name"] == LAZY_TEXT


def _publish(tmp: Path, digest: str, name: str) -> Path:
    """Move a finished temp file into place; content addressing makes races harmless."""
    folder = home() / "contexts" / digest
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists():
        tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, target)
    return target


def _staging() -> Path:
    """Where contexts are written before they are renamed into place (same file system)."""
    staging = home() / "contexts"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _temp_file() -> Path:
    fd, name = tempfile.mkstemp(dir=_staging(), prefix=".incoming-")
    os.close(fd)
    return Path(name)


def _warn_if_empty(ref: ContextRef) -> ContextRef:
    """An empty context is allowed (a sub-call's prompt may be empty), but worth a word."""
    if ref["length"] == 0:
        warnings.warn(
            "the context is empty: the model can only answer from the question",
            ContextWarning,
            stacklevel=3,
        )
    return ref


def nesting_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply lists and dicts nest in ``value``, counted without recursion.

    Stops counting once past ``limit``: the answer is then only "too deep".
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _too_deep(what: str) -> ContextError:
    return ContextError(
        f"{what} nests lists/objects more than {MAX_JSON_DEPTH} levels deep, more than "
        "the sandbox can parse safely: flatten it, or pass it as text"
    )


def store_value(value: Any) -> ContextRef:
    """Store an in-memory context: text, bytes (decoded leniently), or JSON data.

    The text is encoded a piece at a time, once to hash it and once more only if it is
    not stored yet: encoding it whole (and prefixing the kind) held two more copies, so
    a process given a 100 MB string peaked at 387 MB RSS, 222 MB now (measured with
    ``python -m bench cold``).
    """
    if isinstance(value, bytes | bytearray):
        with _Lenient("the context's bytes"):
            value = bytes(value).decode("utf-8", errors="rlm-replace")
    kind, text, length = _as_text(value)
    hasher = hashlib.sha256(kind.encode() + b"\0")
    size = 0
    for piece in _utf8_pieces(text):
        hasher.update(piece)
        size += len(piece)
    ref = ContextRef(
        hash=hasher.hexdigest(),
        kind=kind,
        length=length,
        type_name=type(value).__name__,
        preview=valid_text(preview(text, PREVIEW_CHARS)),
    )
    if size > MAX_CONTEXT_BYTES:
        raise _too_large("the context", size)
    if not context_file(ref).exists():
        tmp = _temp_file()
        with tmp.open("wb") as writer:
            writer.writelines(_utf8_pieces(text))
        _publish(tmp, ref["hash"], blob_name(ref))
    return _warn_if_empty(ref)


def _as_text(value: Any) -> tuple[Literal["text", "json"], str, int]:
    """A context value as stored: its kind, its text, and its length as the model is told."""
    if isinstance(value, str):
        return "text", value, len(value)
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep("the context")
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ContextError(
            f"context of type {type(value).__name__} is not text or JSON data: {exc}"
        ) from exc
    return "json", text, len(value) if isinstance(value, dict | list) else 1


def _utf8_pieces(text: str) -> Iterator[bytes]:
    r"""``text`` in UTF-8, ``_CHUNK`` characters at a time (code points never split).

    A lone surrogate (a file name that is not UTF-8, ``"\udcff"`` in JSON) is stored as
    U+FFFD, as the preview shows it.
    """
    for start in range(0, len(text), _CHUNK):
        yield utf8(text[start : start + _CHUNK])


def _too_large(what: str, size: int) -> ContextError:
    return ContextError(
        f"{what} holds {size:,} bytes or more, over the sandbox's limit of "
        f"{MAX_CONTEXT_BYTES:,} for JSON and folders (wasm32 strings): split it and ask "
        "about the parts, or pass it as text"
    )


def store_path(
    path: str | os.PathLike[str],
    lazy_folder_files: int = LAZY_FOLDER_FILES,
    lazy_text_bytes: int = LAZY_CONTEXT_BYTES,
) -> ContextRef:
    """Store a file (streamed, so gigabytes do not pass through memory) or a directory.

    A ``.json`` file is parsed; a directory becomes ``{relative path: text}``, or with
    more than ``lazy_folder_files`` files a folder read in place. A text file over
    ``lazy_text_bytes`` (read through a handle) is stored in place by its stamp, unread.
    Bytes that are not UTF-8 are replaced with U+FFFD rather than refused: a log with one
    bad byte is still worth reading.
    """
    source = Path(path)
    if not source.exists():
        raise ContextError(f"context path {str(source)!r} does not exist")
    if source.is_dir():
        return _store_directory(source, lazy_folder_files)
    if not source.is_file():
        raise ContextError(f"context path {str(source)!r} is not a regular file or a folder")
    seen = _seen_path(source)
    if seen.exists():
        known: ContextRef = json.loads(seen.read_text())
        if (stored := context_file(known)).exists() and _unchanged(stored):
            return known
    if source.suffix.lower() == ".json":
        if (size := source.stat().st_size) > MAX_CONTEXT_BYTES:
            raise _too_large(f"context file {str(source)!r}", size)
        ref = store_value(_parse_json_file(source))
    else:
        ref = _store_text_file(source, lazy_text_bytes)
    _write_json(seen, ref)
    return ref


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` whole or not at all (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _seen_path(source: Path) -> Path:
    """Where the reference of an unchanged file is remembered.

    Asking several questions about one big log should not hash it every time: a file
    with the same path, size, mtime and inode is taken to hold the same content.
    """
    info = source.stat()
    key = f"{source.resolve()}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}"
    return home() / "paths" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _parse_json_file(source: Path) -> Any:
    what = f"context file {str(source)!r}"
    try:
        with _Lenient(what):
            text = source.read_bytes().decode("utf-8", errors="rlm-replace")
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContextError(
            f"{what} is not valid JSON ({exc}); rename it (e.g. .txt) to read it as text"
        ) from exc
    except ValueError as exc:  # what json.loads raises besides: an integer too long
        raise ContextError(
            f"{what} holds an integer of over {sys.get_int_max_str_digits():,} digits, "
            "more than Python (or the sandbox) converts: write it as a string, or rename the "
            "file (e.g. .txt) to read it as text"
        ) from exc
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except OSError as exc:
        raise ContextError(f"cannot read {what}: {exc}") from exc


def _decoded(reader: IO[bytes], what: str) -> Iterator[str]:
    """The text of a byte stream, chunk by chunk; any size (a large one is read lazily)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="rlm-replace")
    size = 0
    with _Lenient(what):
        while chunk := reader.read(_CHUNK):
            size += len(chunk)
            if size > MAX_TEXT_BYTES:
                raise ContextError(
                    f"{what} holds {size:,} bytes or more, over the {MAX_TEXT_BYTES:,} a "
                    "text context may hold: is it a stream without end?"
                )
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)


class _TextDigest:
    """The reference of text as it streams by: its hash, length and preview."""

    def __init__(self) -> None:
        self._hasher = hashlib.sha256(b"text\0")
        self._length = 0
        self._head = ""

    def add(self, data: bytes, text: str | None = None) -> None:
        """Take ``data``, the UTF-8 encoding of ``text`` (None: ``data`` is ASCII)."""
        self._hasher.update(data)
        self._length += len(data if text is None else text)
        if len(self._head) <= PREVIEW_CHARS:
            head = data[: PREVIEW_CHARS + 1].decode("ascii") if text is None else text
            self._head += head[: PREVIEW_CHARS + 1]

    def ref(self) -> ContextRef:
        return ContextRef(
            hash=self._hasher.hexdigest(),
            kind="text",
            length=self._length,
            type_name="str",
            preview=preview(self._head, PREVIEW_CHARS),
        )


def store_stream(reader: IO[bytes], what: str = "the context") -> ContextRef:
    """Store text read from a byte stream (a file, stdin) without holding it in memory."""
    digest = _TextDigest()
    tmp = _temp_file()
    try:
        with tmp.open("wb") as writer:
            for text in _decoded(reader, what):
                encoded = text.encode("utf-8", errors="surrogatepass")
                digest.add(encoded, text)
                writer.write(encoded)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    ref = digest.ref()
    _publish(tmp, ref["hash"], blob_name(ref))
    return _warn_if_empty(ref)


def _store_text_file(source: Path, lazy_bytes: int) -> ContextRef:
    """Store a text file: in place (a hard link, no copy) when it is valid UTF-8.

    Copying a 10 GB log would double its disk use and its time to first cell; a link
    costs nothing, and the stamp kept beside it tells a file changed since (an append,
    an edit in place) from the content its hash names. A file over ``lazy_bytes`` is not
    even read (:func:`_store_by_stamp`). A file with bad bytes, on another file system,
    or that may not be linked is copied with its bad bytes replaced.
    """
    what = f"context file {str(source)!r}"
    try:
        if _over(source.stat().st_size, lazy_bytes) and (ref := _store_by_stamp(source, what)):
            return ref
        stamp = _stamp(source)
        with source.open("rb") as reader:
            ref = _exact_ref(reader)
        if ref is not None and _link(source, ref, stamp):
            return _warn_if_empty(ref)
        with source.open("rb") as reader:
            return store_stream(reader, what)
    except OSError as exc:
        raise ContextError(f"cannot read {what}: {exc}") from exc


def _store_by_stamp(source: Path, what: str) -> ContextRef | None:
    """Store a large text file in place, named by its stamp; None if it cannot be linked.

    Hashing it first cost 0.8 s of CPU a GiB: 28 s before the first cell of a 10 GiB
    log under load. Nothing needs the whole file at ingest: the handle reads it by byte
    offsets and decodes each read with U+FFFD for bad bytes, so neither a character count
    nor a UTF-8 check is due. The reference names the file as it is now (see
    :func:`_stamped_ref`), and what guards the content is what guards any file stored in
    place: the stamp beside the link, checked before every cell and on resume.
    """
    if (link := _new_link(source)) is None:
        return None
    try:
        with link.open("rb") as reader:
            ref, stamp = _stamped_ref(reader, what)
        if _stamp(link) != stamp:
            raise _changed_while_read(source)
        if not context_file(ref).exists():  # else stored before: this inode, this stamp
            _place(link, ref, stamp)
    finally:
        link.unlink(missing_ok=True)
    return ref


def _stamped_ref(reader: IO[bytes], what: str) -> tuple[ContextRef, dict[str, int]]:
    """The reference of a file by its stamp and its two ends, and the stamp to keep.

    The hash names "this inode of this device, at this size and mtime, with these first
    and last bytes": the store's link holds the inode, so no other file takes its number
    while it is stored, and any write moves its mtime (docs/huge.md, "Replay"). The ends
    (64 KiB each, one read apiece) tell apart files that would share a reused inode
    after the store was emptied. Not ctime: making or removing another link to the file
    (a second rlm home) or a chmod changes it, not the content.
    """
    info = os.fstat(reader.fileno())
    head = reader.read(_SAMPLE)
    reader.seek(max(info.st_size - _SAMPLE, len(head)))
    tail = reader.read(_SAMPLE)
    stamp = {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    identity = {"device": info.st_dev, "inode": info.st_ino, **stamp}
    hasher = hashlib.sha256(b"stamp\0" + json.dumps(identity, sort_keys=True).encode())
    for end in (head, tail):
        hasher.update(len(end).to_bytes(8, "big") + end)
    with _Lenient(f"the first {_SAMPLE >> 10} KiB of {what}"):  # a cut character waits
        text = codecs.getincrementaldecoder("utf-8")(errors="rlm-replace").decode(head)
    ref = ContextRef(
        hash=hasher.hexdigest(),
        kind="text",
        length=info.st_size,
        type_name=LAZY_TEXT,
        preview=preview(text, PREVIEW_CHARS),
    )
    return ref, stamp


def _exact_ref(reader: IO[bytes]) -> ContextRef | None:
    """The reference of the stream's bytes as they are, or None if they are not UTF-8.

    A chunk of ASCII (most of a log) is its own text, told by ``isascii`` without
    decoding it: 0.04 s of CPU a GiB where decoding took 0.3 s, a quarter of storing.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    digest = _TextDigest()
    try:
        while chunk := reader.read(_CHUNK):
            ascii_ = chunk.isascii() and not decoder.getstate()[0]  # no character half read
            digest.add(chunk, None if ascii_ else decoder.decode(chunk))
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    return digest.ref()


def _link(source: Path, ref: ContextRef, stamp: dict[str, int]) -> bool:
    """Make ``source`` itself the stored file of ``ref``; False if it cannot be linked."""
    if (stored := context_file(ref)).exists() and _unchanged(stored):
        return True  # stored before (copied, or linked and untouched since)
    if (link := _new_link(source)) is None:
        return False
    try:
        if _stamp(link) != stamp:  # written to while it was hashed: the hash may be wrong
            raise _changed_while_read(source)
        _place(link, ref, stamp)
    finally:
        link.unlink(missing_ok=True)
    return True


def _changed_while_read(source: Path) -> ContextError:
    return ContextError(f"context file {str(source)!r} changed while it was read: retry")


def _new_link(source: Path) -> Path | None:
    """A new hard link to ``source`` in the store; None if it cannot be linked.

    It cannot from another file system, or where links to others' files are not allowed.
    """
    link = _staging() / f".link-{uuid.uuid4().hex}"
    try:
        os.link(source, link)
    except OSError:
        return None
    return link


def _place(link: Path, ref: ContextRef, stamp: dict[str, int]) -> None:
    """Make ``link`` the stored file of ``ref``, with the stamp that tells if it changes."""
    blob_dir(ref).mkdir(parents=True, exist_ok=True)
    _write_json(blob_dir(ref) / _STAMP, stamp)
    os.replace(link, context_file(ref))


_STAMP = "stamp.json"


def _stamp(path: Path) -> dict[str, int]:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _unchanged(stored: Path) -> bool:
    """Whether a context's file, if stored in place, still holds what it held.

    A copy always does. Given the file, not the reference: its path costs ~5 us to
    build, and a run checks its context twice an iteration.
    """
    stamp = stored.with_name(_STAMP)
    return not stamp.exists() or json.loads(stamp.read_text()) == _stamp(stored)


def _store_directory(source: Path, lazy_folder_files: int) -> ContextRef:
    """A folder as one ``{path: text}`` dict, or above ``lazy_folder_files`` read in place."""
    record = folder_record(source)
    known = _known_folder(source, record, lazy_folder_files)
    if known is not None:
        return known
    listed_ns = time.time_ns()
    listing = list_folder(source)
    if len(listing.paths) <= lazy_folder_files:
        ref = store_value(read_directory(source, listing.paths))
        ref["kind"] = "directory"
        return ref
    ref = _store_folder(source, listing.paths, listed_ns)
    if settled(listing.folders, listed_ns):
        _write_json(record, {"ref": ref, "folders": listing.folders})
    return ref


def folder_record(source: Path) -> Path:
    """Where the reference of a large folder is remembered with the stamps of its folders."""
    key = f"folder\0{source.resolve()}"
    return home() / "paths" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def forget_folder(source: Path) -> None:
    """Remove every stored listing of a large folder, and its record.

    Each listing is a context of its own (its files have no stamp until read), so a
    folder made for one use (an evaluation's haystack) leaves one per listing: ~25 bytes
    a file each.
    """
    where = os.fsencode(source.resolve())
    for stored in (home() / "contexts").glob(f"*/{SOURCE}"):
        with suppress(OSError):  # removed meanwhile
            if stored.read_bytes() == where:
                shutil.rmtree(stored.parent, ignore_errors=True)
    folder_record(source).unlink(missing_ok=True)


def _known_folder(source: Path, record: Path, lazy_folder_files: int) -> ContextRef | None:
    """The stored reference of a large folder none of whose names changed since, if any.

    Its ~100 folders' stamps tell that no file was added, removed or renamed (1 ms for
    100,000 files, where listing them costs 0.1 s). A file written in place since is
    caught where it is read (its stamp no longer matches the one it was first read
    with, and it is refused); a check of the stamps of the files read so far then runs
    on a thread, and forgets the record if one changed, so the next call lists the
    folder again: a new context, whose reads see the new content.
    """
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    ref: ContextRef = known["ref"]
    stamps = [FolderStamp(*stamp) for stamp in known["folders"]]
    if (
        ref["length"] <= lazy_folder_files
        or not context_file(ref).exists()
        or not same_names(source, stamps)
    ):
        return None
    with _checking_lock:
        if record not in _checking:  # one check at a time per folder, however many runs
            _checking.add(record)
            threading.Thread(
                target=_forget_if_changed, args=(source, ref, record), name="rlm-folder-check"
            ).start()
    return ref


# The records of the folders whose files are being checked in this process.
_checking: set[Path] = set()
_checking_lock = threading.Lock()


def _forget_if_changed(source: Path, ref: ContextRef, record: Path) -> None:
    """Drop a folder's record if a file read from it was written in place since."""
    try:
        if files_changed(blob_dir(ref), source):
            record.unlink(missing_ok=True)
    except OSError:  # the store or the folder went away meanwhile: nothing to vouch for
        record.unlink(missing_ok=True)
    finally:
        with _checking_lock:
            _checking.discard(record)


def _store_folder(source: Path, paths: list[str], listed_ns: int) -> ContextRef:
    """Store a large folder by its manifest and where it is: no file is read or stat'ed.

    The reference names this listing: the folder's place, its files' paths and when it
    was listed. Files carry no stamp yet (one is taken at each file's first read), so a
    listing of the same names after a file changed must be another context, or the old
    stamps would refuse the new content for good.
    """
    data = manifest(paths)
    where = os.fsencode(source.resolve())
    ref = ContextRef(
        hash=hashlib.sha256(b"folder\0%s\0%d\0%s" % (where, listed_ns, data)).hexdigest(),
        kind="folder",
        length=len(paths),
        type_name="LazyFolder",
        preview=valid_text(preview("\n".join(paths[:PREVIEW_CHARS]), PREVIEW_CHARS)),
    )
    staging = Path(tempfile.mkdtemp(dir=_staging(), prefix=".incoming-"))
    try:
        (staging / SOURCE).write_bytes(where)
        (staging / STAMPS).touch()
        (staging / MANIFEST).write_bytes(data)
        os.rename(staging, blob_dir(ref))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ContextError(f"cannot store context folder {str(source)!r}: {exc}") from exc
    return ref


def read_directory(folder: Path, paths: list[str] | None = None) -> dict[str, str]:
    """All text files below ``folder`` (those of :func:`list_files`) as ``{path: text}``.

    Binary files are skipped too: a PNG read as text is noise to the model. Which binary
    files were left out is said in one warning.
    """
    files: dict[str, str] = {}
    binary: list[str] = []
    total = 0
    for path in list_files(folder) if paths is None else paths:
        file = folder / path
        total += file.stat().st_size  # before reading: one file may be 10 GB
        if total > MAX_CONTEXT_BYTES:
            raise _too_large(f"context folder {str(folder)!r}", total)
        data = file.read_bytes()
        if is_binary(data):
            binary.append(path)
            continue
        with _Lenient(f"context file {path!r} of the folder"):
            files[path] = data.decode("utf-8", errors="rlm-replace")
    if binary:
        warnings.warn(
            f"skipped {len(binary):,} binary file(s) of the folder: {first_of(binary, 10)}",
            ContextWarning,
            stacklevel=3,
        )
    return files


def is_binary(data: bytes) -> bool:
    """Binary by content, as git decides: a NUL byte in the first 8 KiB (text never has one)."""
    return b"\0" in data[:8192]
