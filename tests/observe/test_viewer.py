"""The offline viewer: highlighting, a self-contained page, and the page in a real browser."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, chromium_path
from support import Script, fast_settings, missing, tool

from rlm_graph import answer
from rlm_graph.cli.main import main
from rlm_graph.observe.highlight import highlight_python
from rlm_graph.observe.trajectory import read_trajectory
from rlm_graph.observe.viewer import length_unit, render_html
from rlm_graph.offline.stub_server import StubReply

ROOT = [
    tool("got = await llm_query('child task')\nprint('child said', got)", "Delegating."),
    tool("FINAL(got)"),
]
CHILD = [
    tool("parts = await llm_batch(['a', 'b', 'c'])\nprint(parts)"),
    tool("FINAL('+'.join(parts))"),
]


def slow_upper(prompt: str) -> StubReply:
    return StubReply(content=prompt.upper(), delay=0.2)


@pytest.fixture
def trace(stub: Any, tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    server = stub(Script(ROOT, sub=slow_upper, child=CHILD))
    result = answer("Which letters?", "ctx", trace=path, **fast_settings(server, max_depth=2))
    assert result.answer == "A+B+C"
    return path


def plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_highlighting_marks_tokens_and_keeps_the_text() -> None:
    code = 'import re\n# look\nx = await llm_query(f"n={1 + 2}")  # ask\nprint(len("<&>"))\n'
    out = highlight_python(code)
    assert plain(out) == code
    assert '<span class="k">import</span>' in out and '<span class="c"># look</span>' in out
    assert '<span class="r">llm_query</span>' in out and '<span class="b">print</span>' in out
    assert '<span class="s">&quot;&lt;&amp;&gt;&quot;</span>' in out and "<&>" not in out


@pytest.mark.parametrize("broken", ['x = """never closed\nprint(1)', "def f(:\n\tpass )]", ""])
def test_broken_code_is_shown_whole(broken: str) -> None:
    assert plain(highlight_python(broken)) == broken


def test_page_is_self_contained(trace: Path) -> None:
    page = render_html(read_trajectory(trace))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert page.count('class="iteration"') == 4  # two of the root, two of the sub-RLM


def test_the_header_has_units_and_the_timeline_a_time_axis(trace: Path) -> None:
    page = render_html(read_trajectory(trace))
    assert "context: text, 3 characters" in plain(page)
    unread = {"kind": "text", "type_name": "LazyText"}  # a large file stored by its stamp
    assert (length_unit(unread), length_unit({"kind": "folder"})) == ("bytes", "files")
    axis = re.search(r'<g class="axis">(.*?)</g>', page)
    assert axis is not None
    seconds = [float(s) for s in re.findall(r">([\d.e-]+) s<", axis.group(1))]
    assert len(seconds) == 5 and seconds[0] == 0 and seconds == sorted(seconds)
    assert seconds[-1] >= 0.2  # the sub-calls take 0.2 s each


def test_unfinished_trace_says_so(trace: Path) -> None:
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join(lines[:-1]) + "\n")
    assert "The trace ends before the run did" in render_html(read_trajectory(trace))


@pytest.mark.slow
def test_page_loads_in_chromium_without_errors(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = chromium_path()
    if binary is None:
        missing("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    page = tmp_path / "run.html"
    assert main(["view", str(trace), "-o", str(page)]) == 0
    assert capsys.readouterr().out.strip() == str(page)
    with Browser(binary) as browser:
        browser.open(page.as_uri())
        answer_text = browser.evaluate("document.querySelector('#answer .answer').innerText")
        iterations = browser.evaluate("document.querySelectorAll('details.iteration').length")
        shown = browser.evaluate("document.querySelector('#tree').innerText")
        bars = browser.evaluate("document.querySelectorAll('#timeline rect').length")
        browser.evaluate("document.querySelector('button[data-open=false]').click()")
        open_after_collapse = browser.evaluate("document.querySelectorAll('details[open]').length")
        first_bar = "document.querySelector('#timeline rect')"
        browser.evaluate(f"{first_bar}.dispatchEvent(new Event('click'))")
        opened = browser.evaluate(
            f"document.getElementById('call-' + {first_bar}.dataset.call).open"
        )
        browser.screenshot(tmp_path / "shot.png")
        assert browser.errors == []
    assert answer_text == "A+B+C"
    assert iterations == 4
    assert "iteration 1" in shown and "child said A+B+C" in shown and "1 sub-calls" in shown
    assert bars == 4  # the sub-RLM and its three plain sub-calls
    assert open_after_collapse == 0 and opened is True
    assert (tmp_path / "shot.png").read_bytes().startswith(b"\x89PNG")
