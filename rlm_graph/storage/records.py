"""What of a cell lives in state and what is stored beside it.

A cell's code, the model's reply, its output and its sub-call journal can be tens of
kilobytes; checkpointed at every step for every cell they made a 50-cell run write
100 MB. State keeps a :class:`CellRef` (a few hundred bytes: the key
of the full record and a short preview); the full :class:`Cell` is
written once to :class:`~rlm_graph.storage.blobs.Blobs`, addressed by its content, so a fork
or a resumed thread finds exactly the record its state names.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

from rlm_graph.storage.blobs import MEMORY_BUDGET, Blobs, content_key, text_bytes
from rlm_graph.text import preview

PREVIEW_CHARS = 240
_CACHE_SIZE = 512


class Cell(TypedDict):
    """One executed (or refused) step of the REPL, enough to show it and replay it.

    Stored beside the checkpoint (see ``records``); state keeps a :class:`CellRef`.
    """

    kind: Literal["model", "system", "note"]
    turn: int
    code: str
    reply: str
    tool_call_id: str
    output: str
    error: str
    halted: bool
    journal: list[Any]
    final: NotRequired[Any]
    host_note: NotRequired[str]
    """What the host adds below the output for the model (failed sub-calls), never part
    of the output a best-effort answer quotes."""
    sub_calls: int
    seconds: float


class CellRef(TypedDict):
    """What state keeps of a cell: the key of its full record and what routing needs."""

    kind: Literal["model", "system", "note"]
    turn: int
    record: str
    halted: bool
    error: str
    preview: str
    sub_calls: int
    seconds: float
    final: NotRequired[Any]


class MissingRecord(RuntimeError):
    """A cell named in state has no stored record (a local blob dir on another machine)."""


class _RecordCache:
    """Records already read or written in this process: content-addressed, never stale.

    Bounded in count and in bytes: a cell's journal holds its sub-call answers (~11 MB
    for a cell of 430 answers at `oolong --size 1b`), so 512 such cells would otherwise
    keep gigabytes that :class:`~rlm_graph.storage.blobs.MemoryRecords` has spilled.
    """

    def __init__(self, size: int, budget: int = MEMORY_BUDGET) -> None:
        self._items: OrderedDict[str, tuple[Cell, int]] = OrderedDict()
        self._size = size
        self._budget = budget
        self.held = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Cell | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def add(self, key: str, cell: Cell) -> None:
        size = text_bytes(cell)
        with self._lock:
            old = self._items.pop(key, None)
            self.held += size - (0 if old is None else old[1])
            self._items[key] = (cell, size)
            while len(self._items) > self._size or self.held > self._budget:
                self.held -= self._items.popitem(last=False)[1][1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.held = 0


# Records are content-addressed, so one cache serves every run of the process and is
# never stale; forget_cached_records() empties it (a test playing a fresh process).
# Whole records serve replay (a rebuilt sandbox) and the check that a record is stored
# already; prompts read views, so a few of the largest journals are enough here.
_CACHE = _RecordCache(_CACHE_SIZE, budget=16 << 20)
# The same records without their journals: what prompts show (see load_cell_views).
_VIEWS = _RecordCache(_CACHE_SIZE)


def forget_cached_records() -> None:
    """Drop every record this process cached, as a new process would start."""
    _CACHE.clear()
    _VIEWS.clear()


def without_journal(cell: Cell) -> Cell:
    """A record as a prompt shows it: everything but the sub-call journal, kept for replay."""
    view = cell.copy()
    view["journal"] = []
    return view


def save_cell(blobs: Blobs, sandbox_id: str, cell: Cell) -> CellRef:
    """Store the full record and return what state keeps of it."""
    key = content_key(cell)
    if _CACHE.get(key) is None:
        blobs.put(("cells", sandbox_id), key, dict(cell))
        _CACHE.add(key, cell)
        _VIEWS.add(key, without_journal(cell))
    ref = CellRef(
        kind=cell["kind"],
        turn=cell["turn"],
        record=key,
        halted=cell["halted"],
        error=preview(cell["error"], PREVIEW_CHARS),
        preview=preview(cell["output"], PREVIEW_CHARS),
        sub_calls=cell["sub_calls"],
        seconds=cell["seconds"],
    )
    if "final" in cell:
        ref["final"] = cell["final"]
    return ref


def load_cell(blobs: Blobs, sandbox_id: str, ref: CellRef) -> Cell:
    """The full record a state's reference names."""
    cached = _CACHE.get(ref["record"])
    if cached is not None:
        return cached
    cell = _read_record(blobs, sandbox_id, ref)
    _CACHE.add(ref["record"], cell)
    return cell


def _read_record(blobs: Blobs, sandbox_id: str, ref: CellRef) -> Cell:
    value: Any = blobs.get(("cells", sandbox_id), ref["record"])
    if value is None:
        raise MissingRecord(
            f"cell record {ref['record'][:12]}… is missing from {blobs.describe()}: resume "
            "the thread where it ran, or give every worker the same LangGraph store"
        )
    cell: Cell = value
    return cell


def load_cells(blobs: Blobs, sandbox_id: str, refs: Sequence[CellRef]) -> list[Cell]:
    """The full records of several references, in order."""
    return [load_cell(blobs, sandbox_id, ref) for ref in refs]


def load_cell_views(blobs: Blobs, sandbox_id: str, refs: Sequence[CellRef]) -> list[Cell]:
    """The records of several references without their journals, in order: for prompts.

    A plan step reads every cell of its turn. Whole, the 60 labelling cells of `rlm eval
    --task oolong --size 1b` are ~660 MB of sub-call answers (~11 MB of journal each),
    all held at once, read back from disk where they spilled and parsed again at every
    step. A view is made once, when its cell is saved or first read, and cached apart;
    a record read for its view does not displace the full ones a replay may need.
    """
    views = []
    for ref in refs:
        view = _VIEWS.get(ref["record"])
        if view is None:
            whole = _CACHE.get(ref["record"]) or _read_record(blobs, sandbox_id, ref)
            view = without_journal(whole)
            _VIEWS.add(ref["record"], view)
        views.append(view)
    return views
