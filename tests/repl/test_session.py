"""The sandbox on its own: helpers, halts, replay."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sandboxes import LIMITS, Echo, loader, saved

from rlm_graph.repl.registry import (
    IDLE_SECONDS,
    MAX_LIVE,
    Checkout,
    SandboxRegistry,
    replayable,
)
from rlm_graph.repl.session import Sandbox, SandboxError
from rlm_graph.storage.contexts import store_value
from rlm_graph.storage.records import CellRef


@pytest.fixture
def sandbox() -> Sandbox:
    box = Sandbox(store_value("hello context"), LIMITS)
    box.handler = Echo()
    return box


def test_context_is_bound_and_output_captured(sandbox: Sandbox) -> None:
    out = sandbox.run("print(type(context).__name__, len(context))")
    assert out.stdout == "str 13\n"
    assert not out.error and not out.halted


def test_json_context_is_parsed() -> None:
    box = Sandbox(store_value({"a": [1, 2]}), LIMITS)
    assert box.run("print(context['a'][1])").stdout == "2\n"


def test_final_forms(sandbox: Sandbox) -> None:
    assert sandbox.run("x = 3\nFINAL(x)").final == {"value": 3}
    assert sandbox.run("t = (1, 2)\nFINAL_VAR('t')").final == {"value": [1, 2]}
    assert sandbox.run("FINAL_VAR(t)").final == {"value": [1, 2]}
    assert sandbox.run('answer = {"content": "c", "ready": True}').final == {"value": "c"}
    assert sandbox.run("y = 1").final is None  # collected finals are cleared


def test_final_var_of_a_missing_name_is_an_error(sandbox: Sandbox) -> None:
    out = sandbox.run("FINAL_VAR('nope')")
    assert "no variable named 'nope'" in out.output
    assert out.final is None


def test_code_ending_in_a_double_quote(sandbox: Sandbox) -> None:
    # regression guard for an old eryx bug
    assert sandbox.run('s = "quoted"').error == ""
    assert sandbox.run("print(s)").stdout == "quoted\n"


def test_exceptions_keep_output_and_hide_eryx_frames(sandbox: Sandbox) -> None:
    out = sandbox.run("print('before')\nraise ValueError('boom')")
    assert out.stdout == "before\n"
    assert "ValueError: boom" in out.output
    assert "_eryx_exec" not in out.output
    assert not out.halted


def test_a_traceback_under_await_shows_only_the_models_frames() -> None:
    # It began with five eryx frames ("<string>", "_eryx_async") and one of the prelude.
    box = Sandbox(store_value("hello context"), LIMITS)  # no handler: sub-calls fail
    out = box.run("async def ask():\n    return await llm_query('q')\nawait ask()")
    assert out.error == (
        "Traceback (most recent call last):\n"
        '  File "<user>", line 3, in <module>\n'
        '  File "<user>", line 2, in ask\n'
        "SubCallFailed: sub-calls are not available here"
    )


def test_the_last_expression_is_shown_when_the_cell_printed_nothing(sandbox: Sandbox) -> None:
    assert sandbox.run("r = await llm_batch(['x', 'y'])\nr").stdout == "['<x>', '<y>']\n"
    assert sandbox.run("await llm_query('q')  # no print").stdout == "'<q>'\n"
    assert sandbox.run("print('printed')\nr").stdout == "printed\n"  # prints win
    assert sandbox.run("len(r)\nx = 1").stdout == ""  # not the last statement
    assert sandbox.run("None").stdout == ""
    assert sandbox.run("list(range(10**6))").stdout.endswith("98, 99, ...]\n")  # bounded
    assert sandbox.run("FINAL(len(r))").stdout == ""  # the answer, not an output


def test_sub_calls_reach_the_handler_and_are_journaled(sandbox: Sandbox) -> None:
    out = sandbox.run("a = await llm_query('q1')\nb = await llm_batch(['x', 'y'])\nprint(a, b)")
    assert out.stdout == "<q1> ['<x>', '<y>']\n"
    assert len(out.journal) == 2


def test_replay_rebuilds_variables_functions_and_classes_without_live_calls() -> None:
    ref = store_value("abc")
    live = Echo()
    first = Sandbox(ref, LIMITS)
    first.handler = live
    codes = [
        "r = await llm_query('expensive')\n"
        "class Box:\n    def __init__(self, v):\n        self.v = v",
        "def double(b):\n    return Box(b.v * 2)\nitem = double(Box(21))",
    ]
    cells = []
    for code in codes:
        out = first.run(code)
        cells.append(saved("classes", code, out.journal, halted=out.halted))
    cells.append(saved("classes", "x = 1\nwhile True: pass", [], halted=True))  # never replayed
    probe = "print(r, item.v, type(item).__name__, double(Box(1)).v, 'x' in dir())"
    expected = first.run(probe).stdout
    assert len(live.calls) == 1

    second = Sandbox(ref, LIMITS)
    replay_handler = Echo()
    second.handler = replay_handler
    second.replay(loader("classes")(replayable(cells)))
    assert second.run(probe).stdout == expected == "<expensive> 42 Box 2 False\n"
    assert replay_handler.calls == []


def test_registry_replays_only_what_a_live_session_lacks() -> None:
    registry = SandboxRegistry()
    ref = store_value("ctx")
    handler = Echo()
    cells: list[CellRef] = []
    with registry.checkout(Checkout("s1", ref, cells, LIMITS, handler), loader("s1")) as box:
        out = box.run("n = 1")
        done = saved("s1", "n = 1", out.journal)
        registry.record("s1", done)
    cells.append(done)
    with registry.checkout(Checkout("s1", ref, cells, LIMITS, handler), loader("s1")) as again:
        assert again is box
    # a fork to before that cell gets a fresh session without it
    with registry.checkout(Checkout("s1", ref, [], LIMITS, handler), loader("s1")) as forked:
        assert forked is not box
        assert "NameError" in forked.run("print(n)").output
    registry.release("s1")
    assert "s1" not in registry


def test_registry_closes_idle_sessions_whatever_the_cap() -> None:
    registry = SandboxRegistry(idle_seconds=0.0, max_live=100)
    ref = store_value("ctx")
    for name in ("a", "b"):
        with registry.checkout(Checkout(name, ref, [], LIMITS, Echo()), loader(name)):
            pass
    assert "a" not in registry and "b" in registry  # a was idle when b came
    registry.release("b")


def test_registry_keeps_at_most_max_live_and_closes_the_least_recently_used() -> None:
    # Nothing is idle for 600 s: only the cap closes sessions. busy_seconds=0 counts a
    # session given back as no longer part of a run (60 s by default; a test cannot wait).
    registry = SandboxRegistry(idle_seconds=600.0, max_live=2, busy_seconds=0.0)
    ref = store_value("ctx")
    for name in ("a", "b", "c"):
        with registry.checkout(Checkout(name, ref, [], LIMITS, Echo()), loader(name)):
            pass
    assert len(registry) == 2
    assert "a" not in registry and "b" in registry and "c" in registry  # the oldest went
    for name in ("b", "c"):
        registry.release(name)


def test_registry_defaults_are_the_documented_ten_minutes_and_sixty_four_live() -> None:
    assert (IDLE_SECONDS, MAX_LIVE) == (600.0, 64)  # docs/security.md says so


@pytest.mark.parametrize(("mode", "kind"), [("process", "IsolatedSandbox"), ("inline", "Sandbox")])
def test_isolation_setting_chooses_where_sandboxes_live(
    mode: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_SANDBOX_ISOLATION", mode)
    registry = SandboxRegistry()
    ref = store_value("ctx")
    with registry.checkout(Checkout("iso", ref, [], LIMITS, Echo()), loader("iso")) as box:
        assert type(box).__name__ == kind
        assert box.run("print(len(context), await llm_query('q'))").stdout == "3 <q>\n"
    registry.release("iso")


def test_an_unknown_isolation_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_SANDBOX_ISOLATION", "container")
    registry = SandboxRegistry()
    ref = store_value("c")
    with (
        pytest.raises(SandboxError, match="use 'process' \\(the default\\) or 'inline'"),
        registry.checkout(Checkout("x", ref, [], LIMITS, Echo()), loader("x")),
    ):
        pass


class LowMemory:
    """A host memory reading that stays under the threshold for ``low_reads`` reads."""

    def __init__(self, low_reads: int = 0) -> None:
        self.low_reads = low_reads

    def __call__(self) -> int:
        if self.low_reads:
            self.low_reads -= 1
            return 100 << 20
        return 8 << 30


def test_memory_pressure_closes_least_recently_used_idle_sandboxes() -> None:
    reading = LowMemory()
    registry = SandboxRegistry(busy_seconds=0.0, available=reading, min_available_mb=512)
    ref = store_value("ctx")
    for name in ("a", "b", "c", "d"):
        with registry.checkout(Checkout(name, ref, [], LIMITS, Echo()), loader(name)):
            pass
    assert len(registry) == 4  # plenty of memory: idle sandboxes are kept
    reading.low_reads = 2  # two closes bring the host back above the threshold
    with registry.checkout(Checkout("e", ref, [], LIMITS, Echo()), loader("e")):
        assert [n for n in "abcde" if n in registry] == ["c", "d", "e"]
    for name in "cde":
        registry.release(name)


def test_memory_pressure_spares_sandboxes_of_runs_still_going() -> None:
    reading = LowMemory(low_reads=1_000)
    registry = SandboxRegistry(available=reading, min_available_mb=512)
    ref = store_value("ctx")
    with registry.checkout(Checkout("held", ref, [], LIMITS, Echo()), loader("held")):
        for name in ("recent", "new"):
            with registry.checkout(Checkout(name, ref, [], LIMITS, Echo()), loader(name)):
                pass
        assert all(n in registry for n in ("held", "recent", "new"))
    for name in ("held", "recent", "new"):
        registry.release(name)


def test_min_available_memory_is_an_operator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = store_value("ctx")
    one_gigabyte = lambda: 1 << 30  # noqa: E731 - above the default threshold of 512 MB
    for threshold, evicted in (("", False), ("4096", True)):
        monkeypatch.setenv("RLM_MIN_AVAILABLE_MB", threshold)
        registry = SandboxRegistry(busy_seconds=0.0, available=one_gigabyte)
        for name in ("a", "b"):
            with registry.checkout(Checkout(name, ref, [], LIMITS, Echo()), loader(name)):
                pass
        assert ("a" not in registry) is evicted
        for name in ("a", "b"):
            registry.release(name)
    monkeypatch.setenv("RLM_MIN_AVAILABLE_MB", "lots")
    registry = SandboxRegistry()  # as the import makes it: a bad value must not fail there
    with pytest.raises(SandboxError) as raised:
        registry.prepare("bad", ref, LIMITS)  # a run's first step: the checkout reports it
        with registry.checkout(Checkout("bad", ref, [], LIMITS, Echo()), loader("bad")):
            pass
    assert str(raised.value) == "RLM_MIN_AVAILABLE_MB='lots': a whole number, at least 0"


def test_the_inline_cell_pool_has_the_operator_s_size() -> None:
    """Eight cells waiting at once take ``RLM_CELL_THREADS`` threads, 64 by default."""
    script = """
import threading
from rlm_graph.repl.session import cell_pool
go = threading.Event()
def name():
    go.wait(60)
    return threading.current_thread().name
waiting = [cell_pool().submit(name) for _ in range(8)]
go.set()
print(len({w.result() for w in waiting}))
"""
    for setting, threads in (("", "8"), ("3", "3")):
        env = {**os.environ, "RLM_CELL_THREADS": setting}
        ran = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert ran.stdout.strip() == threads


def test_concurrent_sub_calls_replay_from_a_journal_in_another_order() -> None:
    code = (
        "import asyncio\nboth = await asyncio.gather(llm_query('a'), llm_query('b'))\nprint(both)"
    )
    ref = store_value("ctx")
    first = Sandbox(ref, LIMITS)
    first.handler = Echo()
    journal = first.run(code).journal
    assert len(journal) == 2
    second = Sandbox(ref, LIMITS)
    replay_handler = Echo()
    second.handler = replay_handler
    # The calls finished the other way round this time: matched by call, not by position.
    assert second.run(code, journal[::-1]).stdout == "['<a>', '<b>']\n"
    assert replay_handler.calls == []
