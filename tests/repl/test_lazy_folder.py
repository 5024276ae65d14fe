"""A folder above lazy_folder_files in the sandbox: a handle that reads files when asked."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandboxes import LIMITS, assert_replays, printed
from support import many_files

from rlm_graph.repl.session import Limits, Sandbox
from rlm_graph.storage.contexts import blob_dir, store_path
from rlm_graph.storage.folders import read_manifest

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
    assert "a folder of 2,000 files, too many to make one str" in box.run("print(context)").error


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
    sizes = itertools.accumulate(e.size for e in read_manifest(blob_dir(box.ref)))
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
