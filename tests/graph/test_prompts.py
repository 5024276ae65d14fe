"""What the root model reads: the conversation fitted to the root window."""

from __future__ import annotations

from sandboxes import cell

from rlm_graph.graph.prompts import RootWindow, prompt_chars, render_cells
from rlm_graph.storage.records import Cell


def exchange_of(reply: str, output: str) -> Cell:
    made = cell("print(x)", [])
    made["reply"], made["output"] = reply, output
    return made


def test_older_outputs_shrink_first_then_the_oldest_exchanges_are_left_out() -> None:
    window = RootWindow(tokens=8192, max_output_chars=20_000)
    cells = [exchange_of(f"reply {i} " + "r" * 2_000, f"out{i} " + "o" * 3_000) for i in range(8)]

    roomy = render_cells(cells, window, room=100_000)
    assert len(roomy) == 16 and "left out" not in str(roomy[0].content)

    shrunk = render_cells(cells, window, room=25_000)
    assert len(shrunk) == 16  # every exchange kept, older outputs cut to head and tail
    assert prompt_chars(shrunk) <= 25_000
    assert "shortened to fit the model's window" in str(shrunk[1].content)

    tight = render_cells(cells, window, room=8_000)
    assert "the first 6 cell(s) of this question" in str(tight[0].content)
    assert prompt_chars(tight) <= 8_000 + 200  # the note itself
    assert "out7 " + "o" * 2_000 in str(tight[-1].content)  # the newest, as the window allows


def test_cell_output_is_scaled_to_the_window() -> None:
    assert RootWindow(tokens=8192, max_output_chars=20_000).output_chars == 3_072
    assert RootWindow(tokens=128_000, max_output_chars=20_000).output_chars == 20_000
    assert RootWindow(tokens=8192, max_output_chars=20_000, tightness=1).prompt_chars == 9_216
