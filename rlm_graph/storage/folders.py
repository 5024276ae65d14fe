"""A folder of too many files to load: a list of its names, its files read where they are.

A folder below ``lazy_folder_files`` files becomes one ``{path: text}`` dict, every
file read and hashed before the first cell and all of them held in the sandbox. Above
it the store keeps the folder's *manifest* (the relative path of every file, in listing
order) and where the folder is, and the sandbox's ``context`` is a ``LazyFolder`` handle
whose reads the host serves from the folder itself (``repl.lazy.FolderFiles``). Listing
costs no stat per file; a file's *stamp* (size, mtime, inode) is taken when it is first
read and kept (:class:`Stamps`): a file whose stamp no longer matches is refused wherever
it is read, so cells never mix old and new content (docs/huge.md).
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from io import FileIO
from pathlib import Path
from typing import BinaryIO, NamedTuple

MANIFEST = "manifest"
SOURCE = "source"
STAMPS = "stamps"


class Stamp(NamedTuple):
    """What changes when a file is written (size, mtime) or replaced (inode)."""

    size: int
    mtime_ns: int
    inode: int


def stamp_of(info: os.stat_result) -> Stamp:
    """The stamp of a file's ``stat``."""
    return Stamp(info.st_size, info.st_mtime_ns, info.st_ino)


class Listing(NamedTuple):
    """The files of a folder, and the stamps of the folders walked to find them."""

    paths: list[str]
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


def list_files(folder: Path) -> list[str]:
    """The files a folder context holds, as paths relative to it (:func:`list_folder`)."""
    return list_folder(folder).paths


def list_folder(folder: Path) -> Listing:
    """The files a folder context holds, folder by folder in name order, without reading one.

    Hidden files and folders are left out, and symbolic links (a link must not pull in
    files from outside the folder), as is anything but a regular file. No file is
    stat'ed: ``os.scandir`` tells a file from a folder or a link by the entry's type, and
    100,000 files took 0.04-0.12 s to list where a stat each made it 0.20-0.45 s on a quiet
    machine and 0.9-1.8 s at load 6. Each folder is stamped before it is read, so a name
    added while it is read changes the stamp kept.
    """
    paths: list[str] = []
    folders: list[FolderStamp] = []
    pending = [(str(folder), "")]  # depth first, each folder's files before its folders
    while pending:
        where, prefix = pending.pop()
        folders.append(_folder_stamp(where, prefix))
        with os.scandir(where) as scan:
            items = sorted((i for i in scan if not i.name.startswith(".")), key=_name)
        paths.extend(prefix + i.name for i in items if i.is_file(follow_symlinks=False))
        inner = [i for i in items if i.is_dir(follow_symlinks=False)]
        pending.extend((i.path, f"{prefix}{i.name}/") for i in reversed(inner))
    return Listing(paths, folders)


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


def files_changed(stored: Path, folder: Path) -> bool:
    """Whether a file read from a stored folder no longer has the stamp it was read with.

    Only files some cell read have a stamp; the others can change freely, as no cell saw
    them. Made for a thread beside a run, so it pauses every ``_CHECK_BURST`` files: stat
    after stat without pause kept the GIL from the run's own thread (each stat lets it
    go but takes it back first), and the first cell of a 100,000-file folder came after
    1.5 s instead of 0.09 s (measured; 0.3 s with the pauses, under load). The stamps and
    names are parsed a burst at a time too: parsed whole first (0.2 s of Python for
    100,000), they held the known folder's first cell back by 0.1-0.3 s at load 6.
    """
    names = (stored / MANIFEST).read_bytes().split(b"\0")  # bytes: os.stat takes them
    lines = (stored / STAMPS).read_bytes().splitlines()
    root = os.fsencode(folder) + b"/"
    for start in range(0, len(lines), _CHECK_BURST):
        if threading.main_thread().is_alive():  # at exit, finish at full speed instead
            time.sleep(_CHECK_PAUSE)
        try:
            for index, kept in map(_stamp_line, lines[start : start + _CHECK_BURST]):
                if stamp_of(os.stat(root + names[index], follow_symlinks=False)) != kept:
                    return True
        except OSError:  # a file gone
            return True
    return False


# ~10 % of a core for 5.5 s for 100,000 files, where stats without pause took 0.5 s
_CHECK_BURST = 100
_CHECK_PAUSE = 0.005


def _name(item: os.DirEntry[str]) -> str:
    return item.name


def manifest(paths: Iterable[str]) -> bytes:
    """The manifest's bytes: each path as the file system spells it, ended by NUL.

    A name that is not UTF-8 keeps its bytes, so the host opens the very file; the
    sandbox decodes the manifest with U+FFFD for them, and asks for files by index.
    Encoded joined, in one call: an ``fsencode`` per path took 0.030 s of CPU for
    100,000 paths, a fifth of storing a never-seen folder (0.13 s) before its first cell.
    """
    return os.fsencode("\0".join([*paths, ""]))


def read_manifest(folder: Path) -> list[str]:
    """The paths of a stored folder, in their stored order (as ``os.fsdecode`` gives them)."""
    return [os.fsdecode(name) for name in (folder / MANIFEST).read_bytes().split(b"\0")[:-1]]


def _stamp_line(line: bytes) -> tuple[int, Stamp]:
    """A line of a ``stamps`` file: a file's index in the manifest, and its stamp."""
    index, *numbers = map(int, line.split())
    return index, Stamp(*numbers)


class Stamps:
    """The stamp of each file of a stored folder when it was first read, shared on disk.

    A folder is listed without a stat per file, so a file is stamped when a cell (or a
    search) first reads it, and every later read, in any process, must find it so: the
    file ``stamps`` of the stored folder holds one line ``index size mtime inode`` per
    file, appended under a lock, and the first line for a file wins. Cells that read a
    file therefore replay to what they read, or are refused, never mixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[int, Stamp] = {}
        self._offset = 0
        self._lock = threading.Lock()  # the guest's reads and searches run on host threads

    def load(self) -> dict[int, Stamp]:
        """The stamps recorded so far, by any process."""
        with self._lock, open(self.path, "ab+") as log:
            self._read(log)
        return self.known

    def settle(self, read: Mapping[int, Stamp]) -> int | None:
        """Record the stamps of files just read; the first one recorded otherwise, if any.

        The others are recorded: what was read of them is what they now hold for good.
        """
        with self._lock, open(self.path, "ab+") as log:
            fcntl.flock(log, fcntl.LOCK_EX)  # released when closed
            self._read(log)
            new = {i: s for i, s in read.items() if i not in self.known}
            if new:
                lines = (f"{i} {s.size} {s.mtime_ns} {s.inode}\n" for i, s in new.items())
                log.write("".join(lines).encode())
                log.flush()
                self._read(log)
        return min((i for i, s in read.items() if self.known[i] != s), default=None)

    def _read(self, log: BinaryIO) -> None:
        log.seek(self._offset)
        data = log.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self._offset += len(whole)
        for index, stamp in map(_stamp_line, whole.splitlines()):
            self.known.setdefault(index, stamp)


class Opener:
    """Opens files of a stored folder where they are, by path, never through a symbolic link.

    The manifest names no link, but a folder or file may be swapped for one after the
    listing: each folder on the way is opened with ``O_NOFOLLOW`` from its parent, and
    the file too, so a path can only reach what is inside the folder. The folders opened
    are kept until it is closed (a search opens many files of one folder).
    """

    def __init__(self, stored: Path) -> None:
        root = (stored / SOURCE).read_bytes()
        self._folders = {b"": os.open(root, os.O_RDONLY | os.O_DIRECTORY)}

    def __enter__(self) -> Opener:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._folders.values():
            os.close(fd)
        self._folders.clear()

    def open(self, path: str) -> FileIO:
        """The regular file at ``path``, unbuffered; ``OSError`` if it is anything else."""
        where, _, name = os.fsencode(path).rpartition(b"/")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not block
        handle = os.fdopen(os.open(name, flags, dir_fd=self._folder(where)), "rb", buffering=0)
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            handle.close()
            raise OSError(f"{path} is no longer a regular file")
        return handle

    def _folder(self, where: bytes) -> int:
        if where not in self._folders:
            parent, _, name = where.rpartition(b"/")
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            self._folders[where] = os.open(name, flags, dir_fd=self._folder(parent))
        return self._folders[where]
