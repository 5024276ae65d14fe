"""Sandbox helpers shared by tests: a sub-call handler that echoes, cells run as the graph does."""

from __future__ import annotations

from typing import Any

from rlm_graph.repl.cell import CellMeta, workbench
from rlm_graph.repl.registry import Checkout, LoadCells, SandboxRegistry
from rlm_graph.repl.session import CellOutcome, Limits, Sandbox, SandboxBase
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import ContextRef
from rlm_graph.storage.records import Cell, CellRef, load_cells, save_cell

LIMITS = Limits(cell_timeout=5.0, cpu_instructions=5_000_000_000, memory_mb=512)


class Echo:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def query(self, prompt: str) -> dict[str, Any]:
        self.calls.append(prompt)
        return {"ok": True, "value": f"<{prompt}>"}

    def batch(self, prompts: list[str]) -> list[dict[str, Any]]:
        return [self.query(p) for p in prompts]


def cell(code: str, journal: list[Any], halted: bool = False) -> Cell:
    return Cell(
        kind="model",
        turn=1,
        code=code,
        reply="",
        tool_call_id="",
        output="",
        error="",
        halted=halted,
        journal=journal,
        sub_calls=0,
        seconds=0.0,
    )


BLOBS = Blobs(memory=True)


def saved(sandbox_id: str, code: str, journal: list[Any], halted: bool = False) -> CellRef:
    return save_cell(BLOBS, sandbox_id, cell(code, journal, halted))


def loader(sandbox_id: str) -> LoadCells:
    return lambda refs: load_cells(BLOBS, sandbox_id, refs)


def run_cells(
    registry: SandboxRegistry,
    sandbox_id: str,
    ref: ContextRef,
    steps: list[str],
    limits: Limits,
    handler: Echo,
) -> tuple[list[CellRef], CellOutcome, SandboxBase]:
    """Run ``steps`` as the consecutive cells of one thread, the way the graph does."""
    cells: list[CellRef] = []
    meta = CellMeta(kind="model", turn=1, reply="", tool_call_id="")
    for step in steps:
        want = Checkout(sandbox_id, ref, cells, limits, handler)
        with workbench(registry, want, BLOBS) as bench:
            out, record = bench.run(step, meta, output_limit=20_000)
            cells.append(bench.record(record))
    return cells, out, bench.box


def printed(box: Sandbox, code: str) -> str:
    """What ``code`` printed in ``box``; it must not fail."""
    out = box.run(code)
    assert not out.error, out.error
    return out.stdout


def assert_replays(box: Sandbox, code: str, limits: Limits) -> None:
    """``code`` run in ``box``, then replayed in a fresh sandbox, leaves ``seen`` the same."""
    box.run(code)
    again = Sandbox(box.ref, limits)
    again.replay([cell(code, [])])
    assert printed(again, "print(seen)") == printed(box, "print(seen)")
