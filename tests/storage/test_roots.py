"""Paths a caller names are read only under the folders the operator allowed."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.roots import check_roots, confine


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a file and a folder; a secret beside root, outside it."""
    root = tmp_path / "root"
    (root / "reports").mkdir(parents=True)
    (root / "log.txt").write_text("inside")
    (root / "reports" / "q1.txt").write_text("q1")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def refused(path: str | Path, roots: list[Path], match: str) -> None:
    with pytest.raises(ContextError, match=match) as caught:
        confine(path, roots)
    assert "\n" not in str(caught.value)


def test_files_and_folders_under_a_root_resolve_to_their_real_path(tree: Path) -> None:
    assert confine(tree / "log.txt", [tree]) == tree / "log.txt"
    assert confine(tree / "reports", [tree]) == tree / "reports"
    assert confine("reports/q1.txt", [tree]) == tree / "reports" / "q1.txt"  # first root
    other = tree.parent / "other"
    other.mkdir()
    assert confine(tree / "log.txt", [other, tree]) == tree / "log.txt"


def test_dot_dot_that_leaves_the_root_is_refused(tree: Path) -> None:
    refused(tree / ".." / "secret.txt", [tree], "outside the allowed folders")
    refused("../secret.txt", [tree], "outside the allowed folders")
    # A `..` that stays inside is only a longer name for a file under the root.
    assert confine(tree / "reports" / ".." / "log.txt", [tree]) == tree / "log.txt"


def test_symlinks_out_of_a_root_are_refused(tree: Path) -> None:
    (tree / "link.txt").symlink_to(tree.parent / "secret.txt")
    (tree / "linked-dir").symlink_to(tree.parent)
    refused(tree / "link.txt", [tree], "outside the allowed folders")
    refused(tree / "linked-dir" / "secret.txt", [tree], "outside the allowed folders")
    (tree / "inner.txt").symlink_to(tree / "log.txt")
    assert confine(tree / "inner.txt", [tree]) == tree / "log.txt"


def test_kernel_and_device_folders_are_refused_even_under_root_slash(tree: Path) -> None:
    for path in ("/proc/self/environ", "/sys/kernel", "/dev/null", "/dev/stdin"):
        refused(path, [Path("/")], "outside the allowed folders")
    with pytest.raises(ContextError, match="kernel or device"):
        check_roots(["/proc"])


def test_fifos_and_sockets_are_refused(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    refused(tree / "pipe", [tree], "not a regular file or a folder")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tree / "sock"))
        refused(tree / "sock", [tree], "not a regular file or a folder")


def test_missing_paths_and_bad_names_say_so_in_one_line(tree: Path) -> None:
    refused(tree / "nope.txt", [tree], "cannot be read")
    refused("log\0.txt", [tree], "cannot be resolved")
    # Whether a file outside the roots exists is not revealed.
    refused(tree.parent / "nope.txt", [tree], "outside the allowed folders")


def test_no_roots_means_no_files(tree: Path) -> None:
    refused(tree / "log.txt", [], "no folder is allowed")
    with pytest.raises(ContextError, match="not an existing folder"):
        check_roots([tree / "log.txt"])
