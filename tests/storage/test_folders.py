"""A folder above lazy_folder_files: stored as a manifest and links, no file read."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import many_files

from rlm_graph.storage.contexts import blob_dir, store_path
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
