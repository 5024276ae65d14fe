"""Storing contexts by content hash."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from langgraph.store.memory import InMemoryStore

from rlm_graph.storage import contexts
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import (
    ContextError,
    ContextRef,
    ContextWarning,
    blob_dir,
    check_ref,
    context_file,
    is_lazy,
    materialize,
    share,
    store_path,
    store_value,
    stored_text,
)
from rlm_graph.storage.home import home


def test_store_value_kinds_and_dedup() -> None:
    text = store_value("hello")
    assert (text["kind"], text["length"], text["preview"]) == ("text", 5, "hello")
    assert store_value("hello")["hash"] == text["hash"]
    data = store_value({"k": [1]})
    assert data["kind"] == "json"
    assert json.loads((blob_dir(data) / "context.json").read_text()) == {"k": [1]}
    with pytest.warns(ContextWarning, match="replaced 1 invalid byte"):
        lenient = store_value(b"ok \xff bad")
    assert "\ufffd" in lenient["preview"]


def test_a_large_string_is_stored_a_piece_at_a_time_like_a_whole() -> None:
    # Pieces of 2**20 characters: a 4-byte and a lone surrogate character straddle a cut.
    text = f"{uuid.uuid4()}" + "x" * ((1 << 20) - 37) + "é😀\udc80" + "y" * (24 << 20)
    whole = text.replace("\udc80", "\ufffd").encode()  # stored as the preview shows it
    tracemalloc.start()
    try:
        ref = store_value(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ref["hash"] == hashlib.sha256(b"text\0" + whole).hexdigest()
    assert context_file(ref).read_bytes() == whole
    # Pieces, not the whole encoded copy (and its prefixed copy): 9 MB here, was 104 MB.
    assert peak < len(whole) // 2


def test_store_path_file_json_dir_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"line\n" * 1000 + b"\xfe")
    with pytest.warns(ContextWarning, match="not valid UTF-8"):
        ref = store_path(tmp_path / "a.txt")
    assert ref["kind"] == "text" and ref["length"] == 5001
    (tmp_path / "d.json").write_text('{"x": 1}')
    assert store_path(tmp_path / "d.json")["kind"] == "json"
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ContextError, match="not valid JSON"):
        store_path(tmp_path / "bad.json")
    with pytest.raises(ContextError, match="does not exist"):
        store_path(tmp_path / "missing")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f.txt").write_text("x")
    (folder / ".hidden").write_text("secret")
    assert store_path(folder)["kind"] == "directory"


def test_a_folder_skips_binary_files_and_says_which(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("readable")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    with pytest.warns(ContextWarning, match=r"skipped 1 binary file\(s\) of the folder: logo.png$"):
        ref = store_path(tmp_path)
    stored = json.loads((blob_dir(ref) / "context.json").read_text())
    assert stored == {"notes.txt": "readable"}


def test_context_refs_from_callers_are_checked() -> None:
    ref = store_value("abc")
    assert check_ref(ref) == ref
    with pytest.raises(ContextError, match="malformed"):
        check_ref({**ref, "hash": "../../etc"})
    with pytest.raises(ContextError, match="not in the blob store"):
        check_ref({**ref, "hash": "0" * 64})


def test_an_unchanged_file_is_not_stored_twice(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("first version")
    first = store_path(log)
    assert store_path(log) == first
    log.write_text("second version, longer")
    os.utime(log, ns=(1, 1))
    second = store_path(log)
    assert second["hash"] != first["hash"] and second["preview"] == "second version, longer"


def test_a_utf8_file_is_stored_in_place_and_hashed_like_a_copy(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text(f"naïve 中文 log {uuid.uuid4()}\n" * 1000)  # not in the shared home yet
    ref = store_path(log)
    assert context_file(ref).stat().st_ino == log.stat().st_ino  # a link, not a copy
    assert ref == store_value(log.read_text())  # same hash, length and preview as a copy
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\n")
    with pytest.warns(ContextWarning, match="not valid UTF-8"):
        copied = store_path(tmp_path / "bad.txt")
    assert context_file(copied).read_bytes() == "ok \ufffd\n".encode()


def test_ascii_chunks_are_not_decoded_yet_every_character_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contexts, "_CHUNK", 8)  # chunk seams inside characters
    log = tmp_path / "log.txt"
    text = f"{uuid.uuid4()} ascii, then naïve 中文 😀, then ascii again\n"
    log.write_text(text)
    assert store_path(log) == store_value(text)  # same hash, length and preview
    cut = tmp_path / "cut.txt"  # a character begun at a seam, ASCII, then its last byte
    cut.write_bytes(f"{uuid.uuid4()}".encode()[:7] + b"\xc3" + b"abcdefgh" + b"\xa9")
    with pytest.warns(ContextWarning, match="not valid UTF-8"):
        copied = store_path(cut)
    assert context_file(copied).read_bytes().endswith("\ufffdabcdefgh\ufffd".encode())


def test_a_file_changed_after_it_was_stored_in_place_is_refused_not_mixed(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text(f"before the crash {uuid.uuid4()}\n")
    ref = store_path(log)
    with log.open("a") as handle:  # the log grows while the run is down
        handle.write("after the crash\n")
    with pytest.raises(ContextError, match="has changed since it was stored"):
        check_ref(ref)
    again = store_path(log)
    assert again["hash"] != ref["hash"] and check_ref(again) == again


def test_a_context_is_rebuilt_from_the_store_out_of_4_mb_chunks() -> None:
    text = f"{uuid.uuid4()} " + "x" * (9 << 20)  # three chunks: 4 MiB, 4 MiB, the rest
    ref = store_value(text)
    blobs = Blobs(InMemoryStore())
    share(ref, blobs)
    meta = blobs.get(("contexts", ref["hash"]), "meta")
    assert (meta["chunks"], meta["chunk_bytes"], len(meta["sha256"])) == (3, 4 << 20, 3)
    sizes = [
        len(base64.b64decode(blobs.get(("contexts", ref["hash"]), str(i))["b64"])) for i in range(3)
    ]
    assert sizes[:2] == [4 << 20, 4 << 20] and sum(sizes) == len(text.encode())
    context_file(ref).unlink()  # another worker: the store has it, its disk does not
    assert materialize(ref, blobs)
    assert context_file(ref).read_text() == text


# -- a large file, stored by its stamp -------------------------------------------------------

MIB = 1 << 20
Forget = Callable[[ContextRef], ContextRef]


def settled_log(path: Path, text: str) -> Path:
    """A log last written a minute ago, so that a write now moves its mtime."""
    path.write_text(text)
    past = path.stat().st_mtime_ns - 60 * 10**9
    os.utime(path, ns=(past, past))
    return path


@pytest.fixture
def forget() -> Iterator[Callable[[ContextRef], ContextRef]]:
    """Hands back the references given it, and removes their stored files at the end:
    links to the test's own files, never to be stored again."""
    refs: list[ContextRef] = []

    def kept(ref: ContextRef) -> ContextRef:
        refs.append(ref)
        return ref

    yield kept
    for ref in refs:
        shutil.rmtree(blob_dir(ref), ignore_errors=True)


def bytes_read() -> int:
    """The bytes this process has read so far (``rchar``: every read call, cached or not)."""
    io = Path("/proc/self/io").read_text()
    return int(io.split("rchar:")[1].split()[0])


def test_a_file_too_large_to_load_is_stored_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget: Forget
) -> None:
    size = contexts.MAX_CONTEXT_BYTES + (1 << 30)  # lazy at any threshold; sparse: no disk
    huge = tmp_path / "huge.log"
    with huge.open("wb") as handle:
        handle.write(f"{uuid.uuid4()} first line\n".encode())
        handle.truncate(size)

    def whole(*_: object) -> None:
        raise AssertionError("the whole file was read")

    monkeypatch.setattr(contexts, "_exact_ref", whole)
    monkeypatch.setattr(contexts, "store_stream", whole)
    before = bytes_read()
    ref = forget(store_path(huge))
    assert bytes_read() - before < MIB  # its two ends, 64 KiB each, and small records
    assert (ref["kind"], ref["type_name"], ref["length"]) == ("text", "LazyText", size)
    assert "first line" in ref["preview"]
    assert context_file(ref).stat().st_ino == huge.stat().st_ino  # a link, not a copy
    assert is_lazy(ref, 1 << 40) and store_path(huge) == ref


def test_a_file_stored_by_its_stamp_is_refused_once_written_to(
    tmp_path: Path, forget: Forget
) -> None:
    text = "".join(f"{i:07d} line of the log\n" for i in range(100_000))  # 2.4 MB
    log = settled_log(tmp_path / "app.log", text)
    ref = forget(store_path(log, lazy_text_bytes=MIB))
    assert (ref["type_name"], ref["length"]) == ("LazyText", len(text))
    assert check_ref(ref) == ref
    with log.open("r+b") as handle:  # edited in place: the same size
        handle.seek(MIB)
        handle.write(b"X")
    with pytest.raises(ContextError, match="has changed since it was stored"):
        check_ref(ref)
    with pytest.raises(ContextError, match="has changed since it was stored"):
        share(ref, Blobs(InMemoryStore()))  # nor copied into a store
    edited = forget(store_path(log, lazy_text_bytes=MIB))
    assert edited["hash"] != ref["hash"] and check_ref(edited) == edited
    with log.open("a") as handle:  # grown
        handle.write("written after the crash\n")
    with pytest.raises(ContextError, match="has changed since it was stored"):
        check_ref(edited)


def test_a_file_replaced_by_rename_leaves_the_stored_one_as_it_was(
    tmp_path: Path, forget: Forget
) -> None:
    old = "".join(f"{i:07d} old line\n" for i in range(200_000))
    log = settled_log(tmp_path / "app.log", old)
    ref = forget(store_path(log, lazy_text_bytes=MIB))
    new = settled_log(tmp_path / "app.log.new", old.replace("old", "new"))
    os.utime(new, ns=(log.stat().st_atime_ns, log.stat().st_mtime_ns))  # even the same stamp
    os.replace(new, log)  # an editor's save, a rotated log
    assert check_ref(ref) == ref and context_file(ref).read_text() == old
    again = forget(store_path(log, lazy_text_bytes=MIB))
    assert again["hash"] != ref["hash"] and context_file(again).read_text() != old


def test_a_file_stored_by_its_stamp_is_read_from_the_store_at_any_threshold(
    tmp_path: Path,
) -> None:
    text = f"{uuid.uuid4()}\n" + "x" * (3 * MIB)
    ref = store_path(settled_log(tmp_path / "log.txt", text), lazy_text_bytes=MIB)
    blobs = Blobs(InMemoryStore())
    share(ref, blobs)
    shutil.rmtree(blob_dir(ref))  # another worker, whose threshold is higher
    chunks = stored_text(ref, blobs, 1 << 40)
    assert chunks is not None and chunks.size == len(text)
    assert check_ref(ref, blobs, 1 << 40) == ref
    assert not materialize(ref, blobs)  # never rebuilt whole: its hash cannot check it
    assert not context_file(ref).exists()


def test_a_file_written_while_it_is_stamped_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = settled_log(tmp_path / "app.log", f"{uuid.uuid4()}\n" * 100_000)  # 3.7 MB
    stamped = contexts._stamped_ref

    def then_written(reader: IO[bytes], what: str) -> tuple[ContextRef, dict[str, int]]:
        found = stamped(reader, what)
        with log.open("a") as handle:  # a writer between the stamp and the link's place
            handle.write("one more line\n")
        return found

    monkeypatch.setattr(contexts, "_stamped_ref", then_written)
    before = set(os.listdir(home() / "contexts"))
    with pytest.raises(ContextError, match="changed while it was read: retry"):
        store_path(log, lazy_text_bytes=MIB)
    assert set(os.listdir(home() / "contexts")) == before  # no link left behind
