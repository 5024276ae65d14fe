"""A folder of too many files to load: a list of its files and links to them, read in place.

A folder below ``lazy_folder_files`` files becomes one ``{path: text}`` dict, every
file read and hashed before the first cell and all of them held in the sandbox. Above
it the store keeps the folder's *manifest* (path, size and mtime of every file, sorted)
and a tree of hard links to the files (no copy; a copy, mtime kept, where a link is not
possible), and the sandbox's ``context`` is a ``LazyFolder`` handle that reads a file
when asked. The manifest is the identity: a reference's hash is the manifest's, and a
file whose size or mtime no longer matches it is refused wherever it is read, so cells
never mix old and new content (docs/huge.md).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from rlm_graph.text import utf8, valid_text

MANIFEST = "manifest"
FILES = "files"


class Entry(NamedTuple):
    """One file of a folder context: its relative path and the stamp it was stored with."""

    path: str
    size: int
    mtime_ns: int


class Listing(NamedTuple):
    """The files of a folder, and the stamps of the folders walked to find them."""

    entries: list[Entry]
    folders: list[FolderStamp]


class FolderStamp(NamedTuple):
    """A folder's path relative to the listed one, and what changes when its names do.

    Adding, removing or renaming a name in a folder changes its mtime and ctime (ctime
    even when the mtime is set back); a folder swapped for another has another inode.
    """

    path: str
    inode: int
    mtime_ns: int
    ctime_ns: int


def list_files(folder: Path) -> list[Entry]:
    """The files a folder context holds (:func:`list_folder`)."""
    return list_folder(folder).entries


def list_folder(folder: Path) -> Listing:
    """The files a folder context holds, folder by folder in name order, without reading one.

    Hidden files and folders are left out, and symbolic links (a link must not pull in
    files from outside the folder), as is anything but a regular file. ``os.scandir``
    and plain strings: ``os.walk`` with ``Path.relative_to`` took 1.9 s for 20,000 files.
    Each folder is stamped before it is read, so a name added while it is read changes
    the stamp kept.
    """
    entries: list[Entry] = []
    folders: list[FolderStamp] = []
    pending = [(str(folder), "")]  # depth first, each folder's files before its folders
    while pending:
        where, prefix = pending.pop()
        folders.append(_folder_stamp(where, prefix))
        with os.scandir(where) as scan:
            items = sorted((i for i in scan if not i.name.startswith(".")), key=_name)
        for item in items:
            if item.is_file(follow_symlinks=False):
                info = item.stat(follow_symlinks=False)
                entries.append(Entry(prefix + item.name, info.st_size, info.st_mtime_ns))
        inner = [i for i in items if i.is_dir(follow_symlinks=False)]
        pending.extend((i.path, f"{prefix}{i.name}/") for i in reversed(inner))
    return Listing(entries, folders)


def _folder_stamp(where: str, prefix: str) -> FolderStamp:
    info = os.stat(where, follow_symlinks=False)
    return FolderStamp(prefix, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def same_names(folder: Path, stamps: Iterable[FolderStamp]) -> bool:
    """Whether every folder stamped in a listing of ``folder`` still has that stamp.

    Then no file was added, removed or renamed there since: ~100 stats instead of a stat
    per file. A file written in place is not seen here (:func:`files_changed` sees it).
    """
    root = f"{folder}/"
    try:
        return all(_folder_stamp(root + s.path, s.path) == s for s in stamps)
    except OSError:  # a folder removed
        return False


def settled(stamps: Iterable[FolderStamp], listed_ns: int) -> bool:
    """Whether the stamps predate the listing (``time.time_ns()`` before it) by seconds.

    A name added in the same clock tick as an earlier change, after the folder was read,
    leaves its stamp as it was: a stamp that recent cannot vouch for the listing (as git
    treats a "racily clean" entry).
    """
    before = listed_ns - SETTLED_NS
    return all(max(s.mtime_ns, s.ctime_ns) < before for s in stamps)


SETTLED_NS = 2_000_000_000


def files_changed(folder: Path, entries: Sequence[Entry]) -> bool:
    """Whether a file of ``folder`` no longer has the stamp a listing gave it (or is gone).

    Made for a thread beside a run, so it pauses every ``_CHECK_BURST`` files: stat
    after stat without pause kept the GIL from the run's own thread (each stat lets it
    go but takes it back first), and the first cell of a 100,000-file folder came after
    1.5 s instead of 0.09 s (measured; 0.3 s with the pauses, under load).
    """
    root = f"{folder}/"
    for start in range(0, len(entries), _CHECK_BURST):
        if threading.main_thread().is_alive():  # at exit, finish at full speed instead
            time.sleep(_CHECK_PAUSE)
        try:
            if any(changed(root + e.path, e) for e in entries[start : start + _CHECK_BURST]):
                return True
        except OSError:  # a file gone
            return True
    return False


# ~10 % of a core for 5.5 s for 100,000 files, where stats without pause took 0.5 s
_CHECK_BURST = 100
_CHECK_PAUSE = 0.005


def _name(item: os.DirEntry[str]) -> str:
    return item.name


def manifest(entries: Iterable[Entry]) -> bytes:
    """The manifest's bytes: path, size, mtime, each ended by NUL (no path holds one).

    A name that is not UTF-8 is written with U+FFFD, the name its link gets: the
    sandbox's file system opens only UTF-8 names ("Illegal byte sequence", measured).
    """
    return utf8("".join(f"{e.path}\0{e.size}\0{e.mtime_ns}\0" for e in entries))


def read_manifest(folder: Path) -> list[Entry]:
    """The entries of a stored folder, in their stored order."""
    fields = (folder / MANIFEST).read_bytes().decode("utf-8", errors="surrogateescape")
    parts = fields.split("\0")
    return [
        Entry(parts[i], int(parts[i + 1]), int(parts[i + 2])) for i in range(0, len(parts) - 1, 3)
    ]


def link_tree(source: Path, entries: Iterable[Entry], target: Path) -> None:
    """Hard links under ``target`` to every file of ``source`` that ``entries`` names.

    Plain strings, not ``Path``: 100,000 links took 4.8 s with a ``Path`` join and a
    ``parent`` per file, most of it in ``pathlib``. A file on another file system is
    copied with its mtime, so its stamp still holds.
    """
    made: set[str] = set()
    origin, root = f"{source}/", f"{target}/"
    for entry in entries:
        link = root + valid_text(entry.path)  # the name the manifest gives it
        parent = os.path.dirname(link)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        # A file swapped for a symbolic link since it was listed is linked as that link,
        # never followed out of the folder (and then refused: its stamp no longer holds).
        try:
            os.link(origin + entry.path, link, follow_symlinks=False)
        except OSError:
            shutil.copy2(origin + entry.path, link, follow_symlinks=False)


def changed(file: str | Path, entry: Entry) -> bool:
    """Whether a stored file no longer holds what its manifest entry says."""
    info = os.stat(file)
    return (info.st_size, info.st_mtime_ns) != (entry.size, entry.mtime_ns)
