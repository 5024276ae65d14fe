"""Putting a context where the sandbox can read it, by content hash.

The context is written once to a blob directory and mounted read-only into the
sandbox: a volume read of 100 MB takes 0.2 s where passing it as code takes seconds and
gigabytes. State keeps only the :class:`~rlm_graph.state.ContextRef`. When the run has
a LangGraph store, the context is copied into it once as well (:func:`share`), so a
worker on another machine that resumes the thread can rebuild the local file
(:func:`materialize`).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rlm_graph.state import ContextRef
from rlm_graph.truncation import preview

if TYPE_CHECKING:
    from rlm_graph.blobs import Blobs

PREVIEW_CHARS = 500
_KINDS = ("text", "json", "directory")
_CHUNK = 1 << 20
# Bytes per store record: small enough for any store's value limits once base64'd.
_SHARE_CHUNK = 4 << 20


class ContextError(ValueError):
    """The context given cannot be used; the message says why and what to do."""


def home() -> Path:
    """The directory for caches and blobs (``RLM_GRAPH_HOME``, else ~/.cache/rlm-graph)."""
    configured = os.environ.get("RLM_GRAPH_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "rlm-graph"


def check_ref(ref: ContextRef, blobs: Blobs | None = None) -> ContextRef:
    """Accept a reference only if it names a stored context; fetch it from the store.

    The hash becomes a path, so anything but 64 hex digits is refused outright.
    """
    digest = str(ref.get("hash", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or ref.get("kind") not in _KINDS:
        raise ContextError(
            "context_ref is malformed: pass a reference made by store_value/store_path"
        )
    if not (blob_dir(ref) / blob_name(ref)).exists() and not materialize(ref, blobs):
        raise ContextError(f"context_ref {digest[:12]}… is not in the blob store at {home()}")
    return ref


def _shared_namespace(ref: ContextRef) -> tuple[str, ...]:
    return ("contexts", ref["hash"])


def share(ref: ContextRef, blobs: Blobs) -> None:
    """Copy a stored context into the run's LangGraph store, once per content hash."""
    if blobs.store is None or blobs.get(_shared_namespace(ref), "meta") is not None:
        return
    chunks = 0
    with (blob_dir(ref) / blob_name(ref)).open("rb") as reader:
        while data := reader.read(_SHARE_CHUNK):
            blobs.put(_shared_namespace(ref), str(chunks), {"b64": base64.b64encode(data).decode()})
            chunks += 1
    # Written last: a reader that finds "meta" finds every chunk.
    blobs.put(_shared_namespace(ref), "meta", {"chunks": chunks})


def materialize(ref: ContextRef, blobs: Blobs | None) -> bool:
    """Rebuild the local file of a context from the store; False if the store lacks it."""
    if blobs is None or blobs.store is None:
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
    """The file name of the context inside its folder."""
    return "context.txt" if ref["kind"] == "text" else "context.json"


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


def _temp_file() -> Path:
    staging = home() / "contexts"
    staging.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=staging, prefix=".incoming-")
    os.close(fd)
    return Path(name)


def store_value(value: Any) -> ContextRef:
    """Store an in-memory context: text, bytes (decoded leniently), or JSON data."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    kind: Literal["text", "json"]
    if isinstance(value, str):
        kind = "text"
        data = value.encode("utf-8", errors="surrogatepass")
        length = len(value)
        shown = preview(value, PREVIEW_CHARS)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ContextError(
                f"context of type {type(value).__name__} is not text or JSON data: {exc}"
            ) from exc
        kind = "json"
        data = text.encode("utf-8", errors="surrogatepass")
        length = len(value) if isinstance(value, dict | list) else 1
        shown = preview(text, PREVIEW_CHARS)
    digest = hashlib.sha256(kind.encode() + b"\0" + data).hexdigest()
    ref = ContextRef(
        hash=digest, kind=kind, length=length, type_name=type(value).__name__, preview=shown
    )
    target = blob_dir(ref) / blob_name(ref)
    if not target.exists():
        tmp = _temp_file()
        tmp.write_bytes(data)
        _publish(tmp, digest, blob_name(ref))
    return ref


def store_path(path: str | os.PathLike[str]) -> ContextRef:
    """Store a file (streamed, so gigabytes do not pass through memory) or a directory.

    A ``.json`` file is parsed; a directory becomes ``{relative path: text}``. Bytes that
    are not UTF-8 are replaced with U+FFFD rather than refused: a log with one bad byte
    is still worth reading.
    """
    source = Path(path)
    if not source.exists():
        raise ContextError(f"context path {str(source)!r} does not exist")
    if source.is_dir():
        ref = store_value(read_directory(source))
        ref["kind"] = "directory"
        return ref
    seen = _seen_path(source)
    if seen.exists():
        known: ContextRef = json.loads(seen.read_text())
        if (blob_dir(known) / blob_name(known)).exists():
            return known
    if source.suffix.lower() == ".json":
        try:
            ref = store_value(json.loads(source.read_text(encoding="utf-8", errors="replace")))
        except json.JSONDecodeError as exc:
            raise ContextError(
                f"context file {str(source)!r} is not valid JSON ({exc}); rename it "
                "(e.g. .txt) to read it as text"
            ) from exc
    else:
        ref = _store_text_file(source)
    seen.parent.mkdir(parents=True, exist_ok=True)
    tmp = seen.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ref))
    os.replace(tmp, seen)
    return ref


def _seen_path(source: Path) -> Path:
    """Where the reference of an unchanged file is remembered.

    Asking several questions about one big log should not hash it every time: a file
    with the same path, size, mtime and inode is taken to hold the same content.
    """
    info = source.stat()
    key = f"{source.resolve()}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}"
    return home() / "paths" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _store_text_file(source: Path) -> ContextRef:
    hasher = hashlib.sha256(b"text\0")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    length = 0
    head = ""
    tmp = _temp_file()
    try:
        with source.open("rb") as reader, tmp.open("wb") as writer:
            while chunk := reader.read(_CHUNK):
                text = decoder.decode(chunk)
                encoded = text.encode("utf-8", errors="surrogatepass")
                hasher.update(encoded)
                writer.write(encoded)
                length += len(text)
                if len(head) <= PREVIEW_CHARS:
                    head += text[: PREVIEW_CHARS + 1]
            tail = decoder.decode(b"", final=True)
            hasher.update(tail.encode("utf-8"))
            writer.write(tail.encode("utf-8"))
            length += len(tail)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ContextError(f"cannot read context file {str(source)!r}: {exc}") from exc
    ref = ContextRef(
        hash=hasher.hexdigest(),
        kind="text",
        length=length,
        type_name="str",
        preview=preview(head, PREVIEW_CHARS),
    )
    _publish(tmp, ref["hash"], blob_name(ref))
    return ref


def read_directory(folder: Path) -> dict[str, str]:
    """All files below ``folder`` as ``{relative posix path: text}``, hidden ones skipped."""
    files: dict[str, str] = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            file = Path(root) / name
            if file.is_symlink() or not file.is_file():
                continue
            rel = file.relative_to(folder).as_posix()
            files[rel] = file.read_bytes().decode("utf-8", errors="replace")
    return files
