"""A folder above lazy_folder_files: stored as its names, no file read or stamped."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import many_files

from rlm_graph.storage import contexts, folders
from rlm_graph.storage.contexts import (
    ContextRef,
    blob_dir,
    folder_record,
    forget_folder,
    store_path,
)
from rlm_graph.storage.folders import (
    MANIFEST,
    SOURCE,
    STAMPS,
    Stamp,
    Stamps,
    manifest,
    read_manifest,
    stamp_of,
)


def test_a_large_folder_is_stored_as_its_names_no_file_opened_or_stamped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = many_files(tmp_path / "repo", 2_000)
    stats: list[str] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, **kw: stats.append(path) or real_stat(path, **kw))
    ref = store_path(folder, lazy_folder_files=100)
    monkeypatch.undo()
    try:
        assert (ref["kind"], ref["length"], ref["type_name"]) == ("folder", 2_000, "LazyFolder")
        assert ref["preview"].startswith("d00/f0000.txt\nd00/f0020.txt\n")
        paths = read_manifest(blob_dir(ref))
        assert paths[:2] == ["d00/f0000.txt", "d00/f0020.txt"] and len(paths) == 2_000
        assert {".env", "passwd"}.isdisjoint(paths)
        # the names and where they are, nothing of any file: no link, no stamp
        assert sorted(p.name for p in blob_dir(ref).iterdir()) == [MANIFEST, SOURCE, STAMPS]
        assert (blob_dir(ref) / SOURCE).read_bytes() == os.fsencode(folder.resolve())
        assert Stamps(blob_dir(ref) / STAMPS).load() == {}
        assert len(stats) < 100  # a stat per folder (21), never one per file
        again = store_path(folder, lazy_folder_files=100)  # listed again (not settled):
        shutil.rmtree(blob_dir(again))
        assert again["hash"] != ref["hash"]  # another listing, another context
    finally:
        shutil.rmtree(blob_dir(ref))


def test_the_manifest_keeps_each_name_as_the_file_system_spells_it(tmp_path: Path) -> None:
    names = [b"a.txt", b"caf\xe9.txt", "d/\u00e9t\u00e9.txt".encode()]  # Latin-1 and UTF-8
    paths = [os.fsdecode(name) for name in names]
    assert manifest(paths) == b"".join(name + b"\0" for name in names)
    (tmp_path / MANIFEST).write_bytes(manifest(paths))
    assert read_manifest(tmp_path) == paths
    assert manifest([]) == b""


def test_forgetting_a_folder_removes_each_of_its_listings(settled_folder: Path) -> None:
    first = store_path(settled_folder, lazy_folder_files=100)  # remembered: a record
    folder_record(settled_folder).unlink()
    second = store_path(settled_folder, lazy_folder_files=100)  # listed again: another
    other = store_path(many_files(settled_folder.parent / "other", 200), lazy_folder_files=100)
    _checks_done()
    forget_folder(settled_folder)
    assert not blob_dir(first).exists() and not blob_dir(second).exists()
    assert not folder_record(settled_folder).exists()
    assert blob_dir(other).exists()  # another folder's listing stays
    _stored(other)


def test_a_folder_at_the_threshold_is_still_one_dict(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "small", 30)
    ref = store_path(folder, lazy_folder_files=30)
    assert (ref["kind"], ref["length"]) == ("directory", 30)


def _read(ref: ContextRef, folder: Path, path: str) -> None:
    """Stamp a file of a stored folder as its first read does (``repl.lazy.FolderFiles``)."""
    index = read_manifest(blob_dir(ref)).index(path)
    Stamps(blob_dir(ref) / STAMPS).settle({index: stamp_of(os.stat(folder / path))})


def test_the_first_stamp_of_a_file_wins_across_processes(tmp_path: Path) -> None:
    log = tmp_path / STAMPS
    first, other = Stamps(log), Stamps(log)  # as two worker processes hold them
    assert first.settle({3: Stamp(10, 1, 7)}) is None
    assert other.settle({3: Stamp(12, 2, 7), 4: Stamp(5, 1, 8)}) == 3  # read otherwise
    assert first.load() == {3: Stamp(10, 1, 7), 4: Stamp(5, 1, 8)}  # file 4 kept


class Listings:
    """Counts the folder listings ``store_path`` makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = contexts.list_folder

        def counted(folder: Path) -> folders.Listing:
            self.count += 1
            return real(folder)

        monkeypatch.setattr(contexts, "list_folder", counted)


@pytest.fixture
def settled_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A large folder whose folders' stamps count as settled: its listing is remembered.

    Their mtimes are set an hour back, so a name added in the test's same clock tick
    still changes them.
    """
    monkeypatch.setattr(folders, "SETTLED_NS", -(1 << 62))  # any stamp is old enough
    folder = many_files(tmp_path / "repo", 200)
    for where in [folder, *folder.iterdir()]:
        if where.is_dir() and not where.is_symlink():
            old = where.stat().st_mtime - 3600
            os.utime(where, (old, old))
    yield folder


def _stored(*refs: ContextRef) -> None:
    for ref in {r["hash"]: r for r in refs}.values():
        shutil.rmtree(blob_dir(ref))


def _checks_done() -> None:
    """Wait for the background checks of files written in place."""
    for thread in threading.enumerate():
        if thread.name == "rlm-folder-check":
            thread.join()


def test_a_folder_whose_names_did_not_change_is_not_listed_again(
    settled_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listings = Listings(monkeypatch)
    ref = store_path(settled_folder, lazy_folder_files=100)
    assert store_path(settled_folder, lazy_folder_files=100) == ref
    assert listings.count == 1
    _checks_done()
    assert store_path(settled_folder, lazy_folder_files=500)["kind"] == "directory"  # small now
    (settled_folder / "d03" / "new.txt").write_text("added\n")  # a name added: listed again
    added = store_path(settled_folder, lazy_folder_files=100)
    (settled_folder / "d04" / "f0004.txt").rename(settled_folder / "d04" / "moved.txt")
    moved = store_path(settled_folder, lazy_folder_files=100)
    _checks_done()
    _stored(ref, added, moved)
    assert listings.count == 4
    assert (added["length"], moved["length"]) == (201, 201)
    assert len({ref["hash"], added["hash"], moved["hash"]}) == 3


def test_a_file_written_in_place_is_refused_then_listed_again(
    settled_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = store_path(settled_folder, lazy_folder_files=100)
    _read(ref, settled_folder, "d05/f0005.txt")
    with (settled_folder / "d05" / "f0005.txt").open("a") as log:  # no folder's stamp changes
        log.write("grown\n")
    listings = Listings(monkeypatch)
    assert store_path(settled_folder, lazy_folder_files=100) == ref  # known by its folders...
    _checks_done()  # ...and the stamps of its files read checked meanwhile: forgotten
    fresh = store_path(settled_folder, lazy_folder_files=100)
    _checks_done()
    assert Stamps(blob_dir(fresh) / STAMPS).load() == {}  # read afresh
    _stored(ref, fresh)
    assert listings.count == 1 and fresh["hash"] != ref["hash"]


def test_a_folder_changed_just_before_its_listing_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = many_files(tmp_path / "repo", 200)  # its stamps are this second's
    listings = Listings(monkeypatch)
    ref = store_path(folder, lazy_folder_files=100)
    again = store_path(folder, lazy_folder_files=100)
    _stored(ref, again)
    assert listings.count == 2 and again["hash"] != ref["hash"]  # each listing its own
