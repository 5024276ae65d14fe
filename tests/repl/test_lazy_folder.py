"""A folder above lazy_folder_files in the sandbox: a handle that reads files when asked."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandboxes import LIMITS, assert_replays, printed
from support import many_files

from rlm_graph.repl.lazy import FolderFiles
from rlm_graph.repl.session import Limits, Sandbox
from rlm_graph.storage.contexts import ContextRef, blob_dir, store_path
from rlm_graph.storage.folders import SOURCE, STAMPS, Stamps, read_manifest

LAZY = Limits(LIMITS.cell_timeout, LIMITS.cpu_instructions, LIMITS.memory_mb)
NEEDLE = "d11/f1231.txt"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    folder = many_files(tmp_path_factory.mktemp("repo"), 2_000)
    (folder / NEEDLE).write_text("first line\nthe code is 4217\n")
    ref = store_path(folder, lazy_folder_files=100)
    yield Sandbox(ref, LAZY)
    shutil.rmtree(blob_dir(ref))


def test_the_handle_lists_and_reads_files(box: Sandbox) -> None:
    code = (
        "print(len(context), list(context.keys())[:2], 'd05/f0005.txt' in context)\n"
        "print(repr(context['d05/f0005.txt']), context.get('.env'), context.get('passwd'))\n"
        "print(sum(len(text) for _, text in context.items()))"
    )
    assert printed(box, code).splitlines() == [
        "2000 ['d00/f0000.txt', 'd00/f0020.txt'] True",
        "'file 5 filler\\n' None None",
        str(sum(len(f"file {i} filler\n") for i in range(2_000) if i != 1231) + 28),
    ]
    assert "KeyError: '.env'" in box.run("context['.env']").error  # hidden: not in the handle
    # the sandbox holds the names and the files it asked for, never the folder itself
    assert printed(box, "import os; print(os.listdir('/ctx'))") in (
        "['manifest']\n",
        f"['manifest', '{_asked(box)}']\n",
    )
    assert "a folder of 2,000 files, too many to make one str" in box.run("print(context)").error


def test_files_read_in_order_come_a_mib_at_a_time(box: Sandbox) -> None:
    code = (
        "asked = _rlm_asked[0]\n"
        "text = ''.join(context[path] for path in context)\n"
        "print(_rlm_asked[0] - asked, len(text), text.count('filler'))"
    )
    total = sum(len(f"file {i} filler\n") for i in range(2_000) if i != 1231) + 28
    # the first file alone, then the 1,999 others (32 KB) with the second
    assert printed(box, code) == f"2 {total} 1999\n"


def test_search_runs_across_files_on_the_host(box: Sandbox) -> None:
    code = (
        "hits = await context.search(r'code is (\\d+)')\n"
        "h = hits[0]\n"
        "print(len(hits), h['path'], h['offset'], h['line'])\n"
        "print(context[h['path']][h['offset']:].startswith(h['match']))\n"
        "print(len(await context.search('filler', max_hits=5000, start=10, stop=20)))"
    )
    out = box.run(code)
    assert out.stdout == f"1 {NEEDLE} 15 the code is 4217\nTrue\n10\n", out.error
    assert "[scanned" in out.output


def test_a_search_past_the_scan_limit_says_where_it_stopped(box: Sandbox) -> None:
    tight = Sandbox(box.ref, dataclasses.replace(LAZY, scan_bytes=1_000))
    out = tight.run("await context.search('no such text')")
    source = Path(os.fsdecode((blob_dir(box.ref) / SOURCE).read_bytes()))
    sizes = itertools.accumulate(
        (source / p).stat().st_size for p in read_manifest(blob_dir(box.ref))
    )
    first_left_out = sum(1 for total in sizes if total <= 1_000)
    assert f"scan limit at file {first_left_out}" in out.error, out.error
    assert f"start={first_left_out}" in out.error and out.scanned <= 1_000


def test_cells_that_read_files_replay_to_the_same_values(box: Sandbox) -> None:
    code = "seen = (await context.search('code'))[0]['path'], context['d07/f0007.txt']"
    assert_replays(box, code, LAZY)


def test_a_file_changed_since_it_was_stored_is_refused(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "repo", 3)
    ref = store_path(folder, lazy_folder_files=1)
    try:
        box = Sandbox(ref, LAZY)
        assert printed(box, "print(context['d01/f0001.txt'])") == "file 1 filler\n\n"
        with (folder / "d01" / "f0001.txt").open("a") as log:  # grows in place, as logs do
            log.write("one more line\n")
        out = box.run("context['d01/f0001.txt']")
        assert "d01/f0001.txt changed since the folder was stored" in out.error
        out = box.run("await context.search('line')")
        assert "d01/f0001.txt changed since the folder was stored" in out.error
    finally:
        shutil.rmtree(blob_dir(ref))


def _asked(box: Sandbox) -> str:
    """The name of the last answer the host wrote into the sandbox's mount."""
    return printed(box, "print(_rlm_asked[0])").strip()


def test_the_first_read_stamps_only_the_files_it_reads(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "repo", 300)
    ref = store_path(folder, lazy_folder_files=100)  # never seen: nothing stamped yet
    try:
        box = Sandbox(ref, LAZY)
        assert printed(box, "print(context['d02/f0002.txt'])") == "file 2 filler\n\n"
        stamps = Stamps(blob_dir(ref) / STAMPS).load()
        index = read_manifest(blob_dir(ref)).index("d02/f0002.txt")
        assert list(stamps) == [index]  # read after the listing, one file, when asked
        assert stamps[index].inode == (folder / "d02" / "f0002.txt").stat().st_ino
        printed(box, "print(sum(1 for _ in context.values()))")
        assert len(Stamps(blob_dir(ref) / STAMPS).load()) == 300
    finally:
        shutil.rmtree(blob_dir(ref))


def test_a_file_replaced_by_rename_is_refused_and_so_is_its_replay(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "repo", 3)
    ref = store_path(folder, lazy_folder_files=1)
    try:
        box = Sandbox(ref, LAZY)
        code = "seen = context['d02/f0002.txt']"
        box.run(code)
        new = folder / "d02" / "new"
        new.write_text("file 2 filler\n")  # the same size and text: only its inode differs
        os.utime(new, ns=(0, (folder / "d02" / "f0002.txt").stat().st_mtime_ns))
        new.rename(folder / "d02" / "f0002.txt")  # as an editor saves
        again = Sandbox(ref, LAZY)
        out = again.run(code)  # the cell's replay in a rebuilt sandbox: refused, not mixed
        assert "d02/f0002.txt changed since the folder was stored" in out.error, out.error
    finally:
        shutil.rmtree(blob_dir(ref))


def _served(ref: ContextRef, tmp_path: Path, path: str) -> list[int | str]:
    """What the host serves for one file of a stored folder: its size, or why not."""
    reply = tmp_path / "reply"
    shutil.rmtree(reply, ignore_errors=True)
    reply.mkdir()
    index = read_manifest(blob_dir(ref)).index(path)
    files = FolderFiles(blob_dir(ref), reply)
    files.serve(1, index, index + 1)
    sizes: list[int | str] = json.loads((reply / "1").read_bytes().split(b"\n")[0])
    return sizes


def test_a_file_or_folder_swapped_for_a_link_after_listing_is_not_followed(
    tmp_path: Path,
) -> None:
    folder = many_files(tmp_path / "repo", 200)
    ref = store_path(folder, lazy_folder_files=100)
    try:
        assert _served(ref, tmp_path, "d00/f0000.txt") == [len("file 0 filler\n")]
        (folder / "d00" / "f0020.txt").unlink()
        (folder / "d00" / "f0020.txt").symlink_to("/etc/passwd")
        assert _served(ref, tmp_path, "d00/f0020.txt") == [_changed("d00/f0020.txt")]
        outside = tmp_path / "outside"  # a folder of the same names, outside the folder
        shutil.copytree(folder / "d01", outside)
        shutil.rmtree(folder / "d01")
        (folder / "d01").symlink_to(outside)
        assert _served(ref, tmp_path, "d01/f0001.txt") == [_changed("d01/f0001.txt")]
    finally:
        shutil.rmtree(blob_dir(ref))


def _changed(path: str) -> str:
    return f"{path} changed since the folder was stored: ask again with the folder"
