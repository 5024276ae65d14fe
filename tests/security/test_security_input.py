"""Bad input through the CLI and the Python API: a clear line or a documented behaviour.

Documented behaviours (docs/security.md): an empty context is used with a warning; bytes
that are not UTF-8 are replaced with U+FFFD and a warning says how many; a folder's
hidden files and symbolic links are skipped. Everything else that cannot be used is one
line naming what to change, and `rlm run` exits 2 before any work.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import Script, fast_settings, rlm_process, stub_flags, tool

from rlm_graph import answer, build_graph
from rlm_graph.cli.main import main
from rlm_graph.offline.stub_server import Responder, StubServer
from rlm_graph.settings import Settings
from rlm_graph.storage import contexts as store
from rlm_graph.storage.contexts import ContextError, ContextWarning, store_path, store_stream

Start = Callable[[Responder], StubServer]


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RLM_MODEL", raising=False)


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A blob store of the test's own, for tests that store big contexts."""
    home = tmp_path / "home"
    monkeypatch.setenv("RLM_GRAPH_HOME", str(home))
    return home


def rlm(capsys: pytest.CaptureFixture[str], server: StubServer, *argv: str) -> tuple[int, str, str]:
    flags = ["--model", "stub-root", "--sub-model", "stub-sub", "--base-url", server.base_url]
    code = main(["run", *flags, "--quiet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlm: error: "), err
    assert "Traceback" not in err
    return lines[0]


def sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)  # no blocks written: size on disk stays ~0
    return path


LENGTH = tool("FINAL(len(context))")


# -- documented behaviours ------------------------------------------------------------------


def test_an_empty_file_is_used_with_a_warning(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    code, out, err = rlm(capsys, stub(Script([LENGTH])), "--context", str(empty), "Size?")
    assert (code, out) == (0, "0\n")
    assert (
        err == "rlm: warning: the context is empty: the model can only answer from the question\n"
    )


def test_a_binary_file_is_decoded_with_replacement_and_a_warning(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path
) -> None:
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    code, out, err = rlm(capsys, stub(Script([LENGTH])), "--context", str(binary), "Size?")
    assert code == 0 and int(out) > 0
    assert err.startswith(
        f"rlm: warning: context file {str(binary)!r} is not valid UTF-8: replaced"
    )
    assert err.count("\n") == 1


def test_invalid_utf8_on_stdin_is_replaced_with_a_warning(
    capsys: pytest.CaptureFixture[str], stub: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok \xff\xfe bad \xc3")))
    code, out, err = rlm(capsys, stub(Script([tool("FINAL(context)")])), "--context", "-", "Echo")
    assert (code, out) == (0, "ok \ufffd\ufffd bad \ufffd\n")
    assert err == (
        "rlm: warning: stdin is not valid UTF-8: replaced 3 invalid byte sequence(s) with U+FFFD\n"
    )


def test_a_directory_of_many_files_becomes_one_dict(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    for i in range(3_000):
        sub = folder / f"part{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(f"file {i}")
    server = stub(Script([tool("FINAL([len(context), context['part7/f7.txt']])")]))
    code, out, _ = rlm(capsys, server, "--json", "--context", str(folder), "How many?")
    assert code == 0
    assert json.loads(out)["answer"] == [3_000, "file 7"]


def test_symlinks_in_a_context_folder_are_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "real.txt").write_text("mine")
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "outside").symlink_to(tmp_path.parent)
    assert store.read_directory(folder) == {"real.txt": "mine"}


def test_a_folder_with_a_file_name_that_is_not_utf8_is_read_with_u_fffd(
    stub: Start, tmp_path: Path
) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name")  # surrogateescape
    server = stub(Script([tool("FINAL(sorted(context))")]))
    run = rlm_process("run", *stub_flags(server), "--json", "--context", str(folder), "Names?")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["answer"] == ["caf\ufffd.txt"]


def test_a_large_folder_with_a_name_that_is_not_utf8_is_read_as_u_fffd(
    stub: Start, tmp_path: Path
) -> None:
    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_text("kept in place")
    ref = store_path(tmp_path, lazy_folder_files=0)  # its names: nothing read
    assert (ref["kind"], ref["preview"]) == ("folder", "caf\ufffd.txt")
    server = stub(Script([tool("FINAL({name: context[name] for name in context.keys()})")]))
    result = answer("q", tmp_path, lazy_folder_files=0, **fast_settings(server))
    store.forget_folder(tmp_path)
    assert result.answer == {"caf\ufffd.txt": "kept in place"}  # was "Illegal byte sequence"


def test_a_lone_surrogate_in_a_json_context_becomes_u_fffd(stub: Start, tmp_path: Path) -> None:
    path = tmp_path / "lone.json"
    path.write_text('{"name": "x\\udcffy"}')  # valid JSON, but no UTF-8 can encode it
    server = stub(Script([tool("FINAL(context['name'])")]))
    run = rlm_process("run", *stub_flags(server), "--json", "--context", str(path), "Name?")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["answer"] == "x\ufffdy"


def test_bytes_that_are_not_utf8_in_the_question_become_u_fffd(stub: Start, tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("c")
    server = stub(Script([LENGTH]))
    run = rlm_process(
        "run", *stub_flags(server), "--context", str(tmp_path / "c.txt"), b"caf\xe9 or tea?"
    )
    assert run.returncode == 0, run.stderr
    assert "caf\ufffd or tea?" in json.dumps(server.requests[0].body, ensure_ascii=False)


def test_a_thread_name_that_is_not_utf8_is_one_line(stub: Start, tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("c")
    server = stub(Script([LENGTH]))
    durable = ["--checkpoint", str(tmp_path / "run.sqlite"), "--thread", b"t\xff"]
    run = rlm_process(
        "run", *stub_flags(server), "--context", str(tmp_path / "c.txt"), *durable, "Q"
    )
    assert run.returncode == 2
    assert "--thread 't\\udcff' is not UTF-8 text" in one_error_line(run.stderr.decode())


# -- clear errors, exit 2, nothing run --------------------------------------------------------


def test_a_2gb_json_file_is_refused_before_it_is_read(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path, own_home: Path
) -> None:
    # text of any size is read lazily (tests/repl/test_lazy.py); JSON is parsed whole
    huge = sparse_file(tmp_path / "huge.json", 2_200_000_000)
    server = stub(Script([LENGTH]))
    code, _, err = rlm(capsys, server, "--context", str(huge), "Size?")
    assert code == 2
    assert "holds 2,200,000,000 bytes or more, over the sandbox's limit" in one_error_line(err)
    assert server.requests == []
    stored = [p for p in own_home.rglob("*") if p.is_file()] if own_home.exists() else []
    assert stored == []  # not one byte of it was copied


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", b'{"unclosed": [1, 2', "is not valid JSON"),
        ("deep.json", b"[" * 10_000 + b"]" * 10_000, "more than 500 levels deep"),
        ("bom-garbage.json", b"\xff\xfe{", "is not valid JSON"),
    ],
)
def test_json_that_cannot_be_used_is_one_line(
    capsys: pytest.CaptureFixture[str],
    stub: Start,
    tmp_path: Path,
    name: str,
    content: bytes,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = rlm(capsys, stub(Script([LENGTH])), "--context", str(path), "Q?")
    assert code == 2
    assert message in err.splitlines()[-1]
    assert "Traceback" not in err


def test_an_integer_too_long_to_convert_is_one_line(stub: Start, tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"n": ' + "7" * 5_000 + "}")  # Python converts at most 4,300 digits
    server = stub(Script([LENGTH]))
    run = rlm_process("run", *stub_flags(server), "--context", str(path), "Q?")
    assert run.returncode == 2
    assert "holds an integer of over 4,300 digits" in one_error_line(run.stderr.decode())
    assert server.requests == []


def damaged(tmp_path: Path, how: str) -> Path:
    """A checkpoint file with a thread in it, then cut short or with a page overwritten."""
    path = tmp_path / "run.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE filler (n INTEGER, text TEXT)")
        conn.executemany("INSERT INTO filler VALUES (?, ?)", [(i, "x" * 500) for i in range(500)])
    size = path.stat().st_size
    with path.open("r+b") as handle:
        if how == "truncated":
            handle.truncate(size // 2)
        else:
            handle.seek(size // 2)
            handle.write(b"\xa5" * 4096)
    return path


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_damaged_checkpoint_file_is_one_line(stub: Start, tmp_path: Path, how: str) -> None:
    checkpoint = damaged(tmp_path, how)
    (tmp_path / "c.txt").write_text("c")
    server = stub(Script([LENGTH]))
    durable = ["--checkpoint", str(checkpoint), "--thread", "t1"]
    run = rlm_process(
        "run", *stub_flags(server), "--context", str(tmp_path / "c.txt"), *durable, "Q?"
    )
    assert run.returncode == 2
    line = one_error_line(run.stderr.decode())
    assert f"--checkpoint {str(checkpoint)!r} is not a usable SQLite database" in line
    assert server.requests == []


@pytest.mark.parametrize("path", ["/no/such/file.txt", "/dev/zero", "/dev/null"])
def test_paths_that_are_not_files_or_folders_are_one_line(
    capsys: pytest.CaptureFixture[str], stub: Start, path: str
) -> None:
    code, _, err = rlm(capsys, stub(Script([LENGTH])), "--context", path, "Q?")
    assert code == 2
    assert path in one_error_line(err)


# -- streaming ---------------------------------------------------------------------------------


def test_a_large_file_is_streamed_not_loaded(tmp_path: Path, own_home: Path) -> None:
    size = 48 << 20
    big = sparse_file(tmp_path / "big.log", size)
    tracemalloc.start()
    try:
        ref = store_path(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref["length"] == size
    assert peak < size // 6, f"peak {peak:,} bytes for a {size:,}-byte file"


def test_an_endless_stream_stops_at_the_size_limit(
    own_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            buffer[:] = b"y" * len(buffer)
            return len(buffer)

    monkeypatch.setattr(store, "MAX_TEXT_BYTES", 5 << 20)
    with pytest.raises(ContextError, match="over the 5,242,880 a text context may hold"):
        store_stream(io.BufferedReader(Endless()), "stdin")
    leftovers = [p for p in (own_home / "contexts").iterdir() if p.is_file()]
    assert leftovers == []  # the partial copy was removed


# -- Python API -------------------------------------------------------------------------------


def test_the_python_api_raises_one_line_context_errors(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="does not exist"):
        answer("q", tmp_path / "missing.txt")
    with pytest.raises(ContextError, match="is not text or JSON data"):
        answer("q", {"a": {1, 2}})
    deep: Any = []
    for _ in range(5_000):
        deep = [deep]
    with pytest.raises(ContextError, match="more than 500 levels deep"):
        answer("q", deep)


def test_the_python_api_warns_about_replaced_bytes(stub: Start) -> None:
    server = stub(Script([LENGTH]))
    with pytest.warns(ContextWarning, match="replaced 2 invalid byte"):
        result = answer("q", b"\xff ok \xfe", **fast_settings(server))
    assert result.answer == 6


def test_a_bad_context_path_sent_to_the_graph_ends_the_run_with_one_line(stub: Start) -> None:
    server = stub(Script([LENGTH]))
    state = build_graph().invoke(
        {"question": "q", "context_path": "/no/such/dir/log.txt"},
        context=Settings(**fast_settings(server)),
    )
    assert state["status"] == "failed"
    assert state["error"] == "context path '/no/such/dir/log.txt' does not exist"
    assert server.requests == []


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_sub_calls": -1}, "setting max_sub_calls=-1 is out of range: use an integer >= 0"),
        ({"max_depth": 0}, "setting max_depth=0 is out of range: use an integer >= 1"),
        ({"max_iterations": -5}, "setting max_iterations=-5 is out of range"),
        ({"depth": 1}, "unknown setting(s) depth"),
        ({"max_batch_size": 0}, "setting max_batch_size=0 is out of range"),
        ({"max_prompt_chars": 0}, "setting max_prompt_chars=0 is out of range"),
        ({"cell_timeout": -1.0}, "setting cell_timeout=-1.0 is out of range: use seconds > 0"),
        ({"sandbox_memory_mb": 100_000}, "the wasm32 sandbox can address at most 4096"),
        ({"max_concurrency": True}, "setting max_concurrency=True is out of range"),
        ({"model": " "}, "setting model is empty"),
        ({"max_budget": 3}, "unknown setting(s) max_budget: known are"),
    ],
)
def test_out_of_range_settings_are_rejected_in_one_line(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_mapping(values)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-depth", "-1"], "max_depth=-1 is out of range"),
        (["--max-sub-calls", "-3"], "max_sub_calls=-3 is out of range"),
        (["--cell-timeout", "0"], "cell_timeout=0.0 is out of range"),
    ],
)
def test_the_cli_rejects_bad_settings_before_any_work(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path, flags: list[str], message: str
) -> None:
    server = stub(Script([LENGTH]))
    (tmp_path / "c.txt").write_text("c")
    code, _, err = rlm(capsys, server, *flags, "--context", str(tmp_path / "c.txt"), "Q?")
    assert code == 2
    assert message in one_error_line(err)
    assert server.requests == []


def test_an_unknown_model_is_refused_at_the_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "c.txt").write_text("c")
    code = main(["run", "--model", "no-such-model", "--context", str(tmp_path / "c.txt"), "Q?"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "no-such-model" in one_error_line(err)

    result = answer("q", "ctx", model="no-such-model", sub_model="no-such-model")
    assert (result.status, result.iterations) == ("failed", 0)
    assert "cannot use model 'no-such-model'" in result.error
    assert "\n" not in result.error
