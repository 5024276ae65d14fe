"""Records of runs without a thread: in memory up to a budget, then spilled to disk."""

from __future__ import annotations

import stat
import tracemalloc
from pathlib import Path
from typing import Any

from sandboxes import LIMITS, Echo, cell

from rlm_graph.repl.registry import Checkout, SandboxRegistry
from rlm_graph.storage.blobs import Blobs, MemoryRecords
from rlm_graph.storage.contexts import store_value
from rlm_graph.storage.records import (
    Cell,
    forget_cached_records,
    load_cell,
    load_cells,
    save_cell,
)

KB = 1 << 10


def answer(n: int, size: int = 27 * KB) -> dict[str, Any]:
    """A record shaped like a cell's journal: sub-call answers of ``size`` characters."""
    return {"journal": [{"call": "query", "key": f"k{n}", "result": f"{n:>8}" * (size // 8)}]}


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*.json") if path.is_file()]


def test_records_past_the_budget_go_to_a_private_directory_and_come_back_equal() -> None:
    records = MemoryRecords(budget=100 * KB)
    blobs = Blobs(memory=records)
    for n in range(10):
        blobs.put(("cells", "sandbox-spill"), f"r{n}", answer(n))
    assert records.held <= 100 * KB
    spilled = records.spill_root
    assert spilled is not None
    assert stat.S_IMODE(spilled.stat().st_mode) == 0o700
    assert len(files_under(spilled)) == 10 - records.held // (27 * KB)
    for n in range(10):
        assert blobs.get(("cells", "sandbox-spill"), f"r{n}") == answer(n)
    assert blobs.get(("cells", "sandbox-spill"), "absent") is None


def test_forgetting_a_sandbox_removes_its_spilled_files_and_frees_its_budget() -> None:
    records = MemoryRecords(budget=30 * KB)  # room for one answer: sandbox-a's first
    blobs = Blobs(memory=records)
    for n in range(4):
        blobs.put(("cells", "sandbox-a"), f"r{n}", answer(n))
        blobs.put(("cells", "sandbox-b"), f"r{n}", answer(n))
    assert records.spill_root is not None
    assert len(files_under(records.spill_root)) == 7
    records.forget("sandbox-a")
    assert len(files_under(records.spill_root)) == 4
    assert records.held == 0
    assert blobs.get(("cells", "sandbox-a"), "r1") is None
    assert blobs.get(("cells", "sandbox-b"), "r3") == answer(3)
    records.forget("sandbox-b")
    assert files_under(records.spill_root) == []
    assert records.held == 0


def test_memory_stays_bounded_while_putting_many_large_records() -> None:
    # 200 answers of 27 KB would hold 5.4 MB; the budget keeps ~1 MB of them in memory.
    records = MemoryRecords(budget=1 << 20)
    blobs = Blobs(memory=records)
    tracemalloc.start()
    try:
        for n in range(200):
            blobs.put(("cells", "sandbox-many"), f"r{n}", answer(n))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        records.forget("sandbox-many")
    assert held < 2 << 20


def test_cell_records_of_a_run_without_a_thread_replay_exactly_once_spilled() -> None:
    records = MemoryRecords(budget=0)
    blobs = Blobs(memory=records)
    cell = Cell(
        kind="model",
        turn=1,
        code="answer = llm_query('label')",
        reply="",
        tool_call_id="",
        output="ok\n",
        error="",
        halted=False,
        journal=answer(7)["journal"],
        sub_calls=1,
        seconds=0.5,
    )
    ref = save_cell(blobs, "sandbox-replay", cell)
    forget_cached_records()  # a rebuilt sandbox reads the record back, not the cache
    assert load_cell(blobs, "sandbox-replay", ref) == cell
    assert records.held == 0
    records.forget("sandbox-replay")


def test_a_sandbox_rebuilt_from_spilled_records_replays_its_sub_call_answers() -> None:
    records = MemoryRecords(budget=0)  # every record of this run goes to disk
    blobs = Blobs(memory=records)
    ref = store_value("ctx")
    code = "seen = await llm_query('a' * 30000)"
    with SandboxRegistry().checkout(
        Checkout("spilled", ref, [], LIMITS, Echo()), lambda refs: []
    ) as box:
        out = box.run(code)
    done = save_cell(blobs, "spilled", cell(code, out.journal))
    assert records.spill_root is not None and len(files_under(records.spill_root)) == 1
    forget_cached_records()
    offline = Echo()  # a replay served from the journal asks no model
    registry = SandboxRegistry()
    want = Checkout("spilled", ref, [done], LIMITS, offline)
    with registry.checkout(want, lambda refs: load_cells(blobs, "spilled", refs)) as again:
        shown = again.run("print(len(seen), seen[:3])")
        assert shown.stdout == "30002 <aa\n", shown
    registry.release("spilled")
    records.forget("spilled")
    assert offline.calls == []
