"""One cell: bring the sandbox to the state its cells describe, run code, record the cell.

The graph's execute node, the ``llm`` toolbox and the tests run cells this way, so a
cell is recorded for replay identically wherever it ran: its full record goes to the
blob store (``storage.records``), the caller keeps the small :class:`CellRef`, and the
registry notes that the live session now holds it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Literal, TypedDict

from rlm_graph.offload import offload, owns_loop
from rlm_graph.repl.registry import Checkout, LoadCells, SandboxRegistry
from rlm_graph.repl.session import CellOutcome, SandboxBase
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import stored_text
from rlm_graph.storage.records import Cell, CellRef, load_cells, save_cell
from rlm_graph.text import truncate


class CellMeta(TypedDict):
    """Who asked for a cell: what the caller records beside the code and its outcome."""

    kind: Literal["model", "system"]
    turn: int
    reply: str
    tool_call_id: str


class Workbench:
    """A sandbox checked out for one step: run cells on it, record each one."""

    def __init__(
        self, box: SandboxBase, registry: SandboxRegistry, sandbox_id: str, blobs: Blobs
    ) -> None:
        self.box = box
        self._registry = registry
        self._sandbox_id = sandbox_id
        self._blobs = blobs

    def run(self, code: str, meta: CellMeta, output_limit: int) -> tuple[CellOutcome, Cell]:
        """Run ``code``; return its outcome and the cell to record.

        The cell's output is what the model is shown (head and tail within
        ``output_limit``); the outcome keeps all of it, for traces.
        """
        outcome = self.box.run(code)
        return outcome, _cell(code, meta, outcome, output_limit)

    async def arun(self, code: str, meta: CellMeta, output_limit: int) -> tuple[CellOutcome, Cell]:
        """:meth:`run` for a coroutine: the cell runs without holding a thread.

        On a loop its synchronous caller owns (``offload``), whose thread waits anyway, it
        is :meth:`run`, sub-calls answered on threads: waking that loop for the cell's
        result cost ~0.5 ms an iteration (docs/benchmarks.md).
        """
        outcome = self.box.run(code) if owns_loop() else await self.box.arun(code)
        return outcome, _cell(code, meta, outcome, output_limit)

    def record(self, cell: Cell) -> CellRef:
        """Store the cell's full record; the live session now holds its effects."""
        ref = save_cell(self._blobs, self._sandbox_id, cell)
        self._registry.record(self._sandbox_id, ref)
        return ref

    async def arecord(self, cell: Cell) -> CellRef:
        """:meth:`record` for a coroutine (the write happens on a thread, ``offload``)."""
        return await offload(self.record, cell)


def _cell(code: str, meta: CellMeta, outcome: CellOutcome, output_limit: int) -> Cell:
    """The record of a cell that ran: its output cut to what the model is shown."""
    cell = Cell(
        kind=meta["kind"],
        turn=meta["turn"],
        code=code,
        reply=meta["reply"],
        tool_call_id=meta["tool_call_id"],
        output=truncate(outcome.output, output_limit),
        error=outcome.error,
        halted=outcome.halted,
        journal=outcome.journal,
        sub_calls=0,
        seconds=round(outcome.seconds, 4),
    )
    if outcome.final is not None:
        cell["final"] = outcome.final["value"]
    return cell


@contextmanager
def workbench(registry: SandboxRegistry, want: Checkout, blobs: Blobs) -> Iterator[Workbench]:
    """Hold the session ``want`` names, in the state its cells describe.

    A session that is missing, broken or elsewhere is rebuilt by replaying the records
    in ``blobs``; ``want.handler`` answers its sub-calls while it is held.
    """
    want = _from_store(want, blobs)
    with registry.checkout(want, _loader(blobs, want.sandbox_id)) as box:
        yield Workbench(box, registry, want.sandbox_id, blobs)


@asynccontextmanager
async def aworkbench(
    registry: SandboxRegistry, want: Checkout, blobs: Blobs
) -> AsyncIterator[Workbench]:
    """:func:`workbench` for a coroutine (the graph's execute node)."""
    want = await offload(_from_store, want, blobs)
    async with registry.acheckout(want, _loader(blobs, want.sandbox_id)) as box:
        yield Workbench(box, registry, want.sandbox_id, blobs)


def _from_store(want: Checkout, blobs: Blobs) -> Checkout:
    """``want``, reading its context from the store when it is lazy and not held here."""
    chunks = stored_text(want.ref, blobs, want.limits.lazy_context_bytes)
    return want if chunks is None else replace(want, chunks=chunks)


def _loader(blobs: Blobs, sandbox_id: str) -> LoadCells:
    return lambda refs: load_cells(blobs, sandbox_id, refs)
