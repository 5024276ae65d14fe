"""Cell records: what a state's reference names and how a missing one is reported."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import cast

import pytest

from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.records import (
    Cell,
    CellRef,
    MissingRecord,
    _RecordCache,
    forget_cached_records,
    load_cell,
    load_cell_views,
    save_cell,
)


def test_a_missing_record_is_a_one_line_error_naming_where_it_was_looked_for(
    tmp_path: Path,
) -> None:
    # A thread resumed on a machine whose local blob directory never saw its cells.
    ref = cast(CellRef, {"record": "ab" * 32})
    with pytest.raises(MissingRecord) as raised:
        load_cell(Blobs(root=tmp_path), "sandbox-1", ref)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"cell record abababababab… is missing from {tmp_path}")


def test_the_cache_of_cell_records_keeps_at_most_its_budget_of_sub_call_answers() -> None:
    # A cell's record holds its sub-call answers: 512 cells of 430 answers of 27 KB
    # would otherwise stay in memory after their records had been spilled to disk.
    cache = _RecordCache(size=512, budget=100_000)
    for n in range(10):
        cache.add(f"k{n}", cast(Cell, {"journal": [{"result": f"{n}" * 30_000}]}))
    assert 60_000 < cache.held <= 100_000
    assert cache.get("k0") is None and cache.get("k9") is not None


def labelling_cell(n: int, answers: int) -> Cell:
    """A cell that sent ``answers`` sub-calls, each answered with ~27 KB of labels."""
    labels = ', "entity"' * 2_700
    journal = [{"ok": True, "value": f'["label {n} {i}"{labels}]'} for i in range(answers)]
    return Cell(
        kind="model",
        turn=1,
        code=f"# label piece {n}",
        reply="",
        tool_call_id="",
        output=f"labelled piece {n}\n",
        error="",
        halted=False,
        journal=journal,
        sub_calls=answers,
        seconds=1.0,
    )


def test_a_prompt_s_cells_come_without_journals_one_record_read_at_a_time(
    tmp_path: Path,
) -> None:
    # A plan step reads every cell of its turn: whole, 60 cells of a 1b-token oolong
    # held ~660 MB of sub-call answers at once.
    blobs = Blobs(root=tmp_path)
    cells = [labelling_cell(n, answers=40) for n in range(12)]  # ~1 MB of journal each
    refs = [save_cell(blobs, "sandbox-views", cell) for cell in cells]
    forget_cached_records()  # a resumed run: every record comes back from disk
    tracemalloc.start()
    try:
        views = load_cell_views(blobs, "sandbox-views", refs)
        _, peak = tracemalloc.get_traced_memory()
        again = load_cell_views(blobs, "sandbox-views", refs)
    finally:
        tracemalloc.stop()
        forget_cached_records()
    assert [v["output"] for v in views] == [c["output"] for c in cells]
    assert all(v["journal"] == [] for v in views)
    assert all(a is v for a, v in zip(again, views, strict=True))  # cached, not read again
    assert peak < 5 << 20  # one record read at a time: all 12 held would be > 12 MB
    assert load_cell(blobs, "sandbox-views", refs[3]) == cells[3]  # replay keeps its journal
