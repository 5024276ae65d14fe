"""A folder above lazy_folder_files: stored as a manifest and links, no file read."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import many_files

from rlm_graph.storage import contexts, folders
from rlm_graph.storage.contexts import ContextRef, blob_dir, store_path
from rlm_graph.storage.folders import FILES, link_tree, list_files, read_manifest


def test_a_large_folder_is_stored_as_links_to_its_files(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "repo", 2_000)
    ref = store_path(folder, lazy_folder_files=100)
    try:
        assert (ref["kind"], ref["length"], ref["type_name"]) == ("folder", 2_000, "LazyFolder")
        assert ref["preview"].startswith("d00/f0000.txt\nd00/f0020.txt\n")
        entries = read_manifest(blob_dir(ref))
        assert [e.path for e in entries[:2]] == ["d00/f0000.txt", "d00/f0020.txt"]
        assert {".env", "passwd"}.isdisjoint(e.path for e in entries)
        stored = blob_dir(ref) / FILES
        source = folder / "d03" / "f0003.txt"
        assert (stored / "d03" / "f0003.txt").stat().st_ino == source.stat().st_ino  # no copy
        assert sorted(p.name for p in stored.iterdir())[:2] == ["d00", "d01"]  # no .env
        assert store_path(folder, lazy_folder_files=100) == ref  # the same files: stored once
        source.write_text("edited\n")  # another stamp: another manifest, another context
        edited = store_path(folder, lazy_folder_files=100)
        shutil.rmtree(blob_dir(edited))
        assert edited["hash"] != ref["hash"]
    finally:
        shutil.rmtree(blob_dir(ref))


def test_a_folder_at_the_threshold_is_still_one_dict(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "small", 30)
    ref = store_path(folder, lazy_folder_files=30)
    assert (ref["kind"], ref["length"]) == ("directory", 30)


def test_a_file_swapped_for_a_link_after_listing_is_not_followed(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "repo", 3)
    entries = list_files(folder)
    swapped = folder / entries[0].path
    swapped.unlink()
    swapped.symlink_to("/etc/passwd")
    link_tree(folder, entries, tmp_path / "stored")
    assert (tmp_path / "stored" / entries[0].path).is_symlink()  # not /etc/passwd's inode


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
    edited = settled_folder / "d05" / "f0005.txt"
    with edited.open("a") as log:  # in place: no folder's stamp changes
        log.write("grown\n")
    listings = Listings(monkeypatch)
    assert store_path(settled_folder, lazy_folder_files=100) == ref  # known by its folders...
    assert folders.changed(blob_dir(ref) / FILES / "d05" / "f0005.txt", _entry(ref, edited))
    _checks_done()  # ...and its files' stamps checked meanwhile: the record is forgotten
    fresh = store_path(settled_folder, lazy_folder_files=100)
    _checks_done()
    _stored(ref, fresh)
    assert listings.count == 1 and fresh["hash"] != ref["hash"]


def _entry(ref: ContextRef, file: Path) -> folders.Entry:
    return next(e for e in read_manifest(blob_dir(ref)) if file.as_posix().endswith(e.path))


def test_a_folder_changed_just_before_its_listing_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = many_files(tmp_path / "repo", 200)  # its stamps are this second's
    listings = Listings(monkeypatch)
    ref = store_path(folder, lazy_folder_files=100)
    assert store_path(folder, lazy_folder_files=100) == ref
    _stored(ref)
    assert listings.count == 2
