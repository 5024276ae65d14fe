"""``rlm view``: a trajectory as one self-contained HTML page.

Everything is inline (styles, a few lines of script, the data rendered as HTML), so the
file opens offline, from disk, in any browser, and can be attached to a bug report.
Collapsing uses ``<details>``, so the tree works even with scripts disabled; the script
only adds expand/collapse-all and jumps from the timeline to a sub-call.
"""

from __future__ import annotations

import html
import json
from typing import Any

from rlm_graph.models.pricing import cost_of, is_free
from rlm_graph.models.usage import total_tokens
from rlm_graph.observe.highlight import highlight_python
from rlm_graph.observe.trajectory import (
    CellRecord,
    Iteration,
    RunTree,
    SubCall,
    Trajectory,
    runs,
    usage_by_depth,
    usage_by_model,
)

Usage = dict[str, dict[str, int]]
TIMELINE_WIDTH = 960
LANE_HEIGHT = 14
MAX_LANES = 48
AXIS_HEIGHT = 16
AXIS_TICKS = 5
# What a context's length counts (ContextRef.length), by kind.
LENGTH_UNITS = {"text": "characters", "json": "items", "directory": "files", "folder": "files"}


def length_unit(context: dict[str, Any]) -> str:
    """What a context's length counts: bytes for a large file stored unread (a LazyText)."""
    if context.get("type_name") == "LazyText":
        return "bytes"
    return LENGTH_UNITS.get(context.get("kind", ""), "long")


DEPTH_COLOURS = ("#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1f2328}
header{background:#1f2937;color:#fff;padding:14px 22px}
header h1{font-size:18px;margin:0 0 6px}
main{padding:16px 22px;max-width:1200px}
section{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:12px 16px;
margin:0 0 16px}
h2{font-size:15px;margin:0 0 8px}
pre{background:#f3f4f6;border-radius:4px;padding:8px;overflow:auto;max-height:420px;
white-space:pre-wrap;word-break:break-word;margin:6px 0}
pre.code{background:#0f172a;color:#e2e8f0}
.k{color:#c084fc}.s{color:#86efac}.c{color:#94a3b8;font-style:italic}.n{color:#fbbf24}
.b{color:#67e8f9}.r{color:#f472b6;font-weight:600}
details{margin:6px 0 6px 4px}
summary{cursor:pointer;font-weight:600}
details.iteration{border-left:3px solid #3b82f6;padding-left:10px}
details.subcall{border-left:3px solid #f59e0b;padding-left:10px;font-weight:normal}
details.subrlm{border-left:3px solid #10b981;padding-left:10px}
.meta{color:#57606a;font-weight:normal;font-size:12px;margin-left:6px}
.label{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.error{color:#b91c1c}
.answer{font-size:16px;white-space:pre-wrap}
table{border-collapse:collapse;margin:4px 0 10px}
td,th{border:1px solid #d9dde3;padding:3px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
button{margin-right:6px}
svg rect{cursor:pointer}
"""

SCRIPT = """
document.querySelectorAll('button[data-open]').forEach(function (button) {
  button.addEventListener('click', function () {
    var open = button.dataset.open === 'true';
    document.querySelectorAll('details').forEach(function (d) { d.open = open; });
  });
});
document.querySelectorAll('svg rect[data-call]').forEach(function (bar) {
  bar.addEventListener('click', function () {
    var target = document.getElementById('call-' + bar.dataset.call);
    if (!target) { return; }
    for (var node = target; node; node = node.parentElement) {
      if (node.tagName === 'DETAILS') { node.open = true; }
    }
    target.scrollIntoView({block: 'center'});
  });
});
"""


def esc(value: Any) -> str:
    """Text for HTML; structured values as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return html.escape(text)


def tokens_text(usage: Usage) -> str:
    """A short usage note."""
    return f"{total_tokens(usage):,} tokens" if usage else ""


def usage_table(rows: list[tuple[str, Usage]], prices: dict[str, Any]) -> str:
    """Calls, tokens and dollars per row (a depth or a model)."""
    head = (
        "<tr><th></th><th>calls</th><th>prompt</th><th>cached</th>"
        "<th>completion</th><th>dollars</th></tr>"
    )
    body = []
    for label, usage in rows:
        sums = {
            key: sum(c.get(key, 0) for c in usage.values())
            for key in ("calls", "input_tokens", "cached_tokens", "output_tokens")
        }
        cost = cost_of(usage, prices)
        dollars = f"${cost['dollars']:.4f}" if cost["models"] else "no price"
        if is_free(cost):
            dollars = "free, local"
        if cost["models"] and cost["unpriced"]:
            dollars += " + unpriced"
        body.append(
            f"<tr><td>{esc(label)}</td><td>{sums['calls']:,}</td>"
            f"<td>{sums['input_tokens']:,}</td><td>{sums['cached_tokens']:,}</td>"
            f"<td>{sums['output_tokens']:,}</td><td>{dollars}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def totals_section(root: RunTree, prices: dict[str, Any]) -> str:
    """Token and cost totals per depth and per model."""
    by_depth = [(f"depth {d}", usage) for d, usage in usage_by_depth(root).items()]
    by_model = [(model, {model: counts}) for model, counts in usage_by_model(root).items()]
    return (
        '<section id="totals"><h2>Tokens and cost</h2>'
        f"{usage_table(by_depth, prices)}{usage_table(by_model, prices)}</section>"
    )


def all_calls(root: RunTree) -> list[SubCall]:
    """Every sub-call of the tree, by start time."""
    calls = [
        call
        for run in runs(root)
        for iteration in run["iterations"]
        for call in iteration["sub_calls"]
    ]
    return sorted(calls, key=lambda call: call["started"])


def lanes(calls: list[SubCall]) -> list[int]:
    """A row for each call so that calls overlapping in time sit on different rows."""
    free_at: list[float] = []
    rows = []
    for call in calls:
        end = call["ended"] if call["ended"] is not None else call["started"]
        row = next((i for i, t in enumerate(free_at) if t <= call["started"]), len(free_at))
        if row == len(free_at):
            free_at.append(end)
        free_at[row] = end
        rows.append(row)
    return rows


def timeline_section(root: RunTree) -> str:
    """When each sub-call ran: bars side by side ran in parallel."""
    calls = all_calls(root)
    if not calls:
        return ""
    start = calls[0]["started"]
    end = max((c["ended"] or c["started"]) for c in calls)
    span = max(end - start, 1e-3)
    rows = lanes(calls)
    height = (min(max(rows), MAX_LANES - 1) + 1) * LANE_HEIGHT
    bars = []
    for call, row in zip(calls, rows, strict=True):
        x = (call["started"] - start) / span * TIMELINE_WIDTH
        width = max(
            ((call["ended"] or call["started"]) - call["started"]) / span * TIMELINE_WIDTH, 2
        )
        colour = DEPTH_COLOURS[(call["depth"] - 1) % len(DEPTH_COLOURS)]
        title = f"depth {call['depth']} · {call['seconds']:.2f} s · {call['prompt'][:80]}"
        bars.append(
            f'<rect x="{x:.1f}" y="{min(row, MAX_LANES - 1) * LANE_HEIGHT}" '
            f'width="{width:.1f}" height="{LANE_HEIGHT - 3}" fill="{colour}" '
            f'data-call="{esc(call["id"])}"><title>{esc(title)}</title></rect>'
        )
    return (
        '<section id="timeline"><h2>Sub-call timeline</h2>'
        f'<div class="meta">{len(calls):,} sub-calls over {span:.2f} s, '
        f"at most {max(rows) + 1} at once; colour = depth</div>"
        f'<svg width="{TIMELINE_WIDTH}" height="{height + AXIS_HEIGHT}" role="img">'
        f"{''.join(bars)}{time_axis(span, height)}</svg>"
        "</section>"
    )


def time_axis(span: float, top: int) -> str:
    """Seconds since the first sub-call, as tick labels along the timeline's bottom."""
    labels = []
    for tick in range(AXIS_TICKS):
        x = tick / (AXIS_TICKS - 1) * TIMELINE_WIDTH
        anchor = "start" if tick == 0 else "end" if tick == AXIS_TICKS - 1 else "middle"
        labels.append(
            f'<text x="{x:.1f}" y="{top + AXIS_HEIGHT - 4}" font-size="11" '
            f'text-anchor="{anchor}">{tick / (AXIS_TICKS - 1) * span:.3g} s</text>'
        )
    return f'<g class="axis">{"".join(labels)}</g>'


def cell_html(cell: CellRecord) -> str:
    """A cell's code and full output."""
    parts = []
    if cell["kind"] != "model":
        parts.append(f'<div class="label">{esc(cell["kind"])} cell</div>')
    parts.append(f'<pre class="code">{highlight_python(cell["code"])}</pre>')
    note = f"{cell['seconds']:.2f} s" + (" · halted" if cell["halted"] else "")
    parts.append(f'<div class="label">output <span class="meta">{note}</span></div>')
    parts.append(f'<pre class="output">{esc(cell["output"])}</pre>')
    if "final" in cell:
        parts.append(f'<div class="label">final</div><pre>{esc(cell["final"])}</pre>')
    return "".join(parts)


def sub_call_html(call: SubCall) -> str:
    """A sub-call; a sub-RLM's whole run nests inside it."""
    status = "cached" if call["cached"] else ("ok" if call["ok"] else "failed")
    if call["ended"] is None:
        status = "unfinished"
    meta = " · ".join(
        part
        for part in (
            f"depth {call['depth']}",
            call["model"],
            f"{call['seconds']:.2f} s",
            tokens_text(call["usage"]),
            status,
        )
        if part
    )
    kind = "subrlm" if call["recursive"] else "subcall"
    body = [
        f'<div class="label">prompt ({call["prompt_chars"]:,} chars)</div>',
        f"<pre>{esc(call['prompt'])}</pre>",
    ]
    if call["error"]:
        body.append(f'<pre class="error">{esc(call["error"])}</pre>')
    else:
        body.append(f'<div class="label">answer</div><pre>{esc(call["answer"])}</pre>')
    if call["run"] is not None:
        body.append(run_html(call["run"]))
    title = "sub-RLM" if call["recursive"] else "sub-call"
    return (
        f'<details class="{kind}" id="call-{esc(call["id"])}"><summary>{title}'
        f'<span class="meta">{esc(meta)}</span></summary>{"".join(body)}</details>'
    )


def iteration_html(iteration: Iteration) -> str:
    """One iteration: the reply, its cells, its sub-calls."""
    label = "best-effort answer" if iteration["best_effort"] else f"iteration {iteration['number']}"
    meta = " · ".join(
        part
        for part in (
            f"depth {iteration['depth']}",
            f"prompt {iteration['prompt_chars']:,} chars",
            f"reply {iteration['reply_seconds']:.2f} s",
            tokens_text(iteration["usage"]),
            f"{len(iteration['sub_calls'])} sub-calls" if iteration["sub_calls"] else "",
        )
        if part
    )
    body = []
    if notice := iteration.get("notice"):
        body.append(f'<div class="label">notice</div><pre>{esc(notice)}</pre>')
    if iteration["reply"].strip():
        body.append(f'<div class="label">reply</div><pre>{esc(iteration["reply"])}</pre>')
    if not iteration["cells"] and iteration["code"]:  # the run stopped while it ran
        body.append(f'<pre class="code">{highlight_python(iteration["code"])}</pre>')
    if iteration["note"]:
        note = esc(iteration["note"])
        body.append(f'<div class="label">note to the model</div><pre>{note}</pre>')
    body.extend(cell_html(cell) for cell in iteration["cells"])
    if iteration["sub_calls"]:
        calls = "".join(sub_call_html(call) for call in iteration["sub_calls"])
        body.append(
            f"<details><summary>{len(iteration['sub_calls'])} sub-calls</summary>{calls}</details>"
        )
    return (
        f'<details class="iteration" open><summary>{label}'
        f'<span class="meta">{esc(meta)}</span></summary>{"".join(body)}</details>'
    )


def run_html(run: RunTree) -> str:
    """A run's iterations and, when it finished, its answer."""
    parts = [iteration_html(iteration) for iteration in run["iterations"]]
    if run["final"] is not None:
        parts.append(
            f'<div class="label">answer ({esc(run["final"]["status"])})</div>'
            f"<pre>{esc(run['final']['answer'])}</pre>"
        )
    return "".join(parts)


def answer_section(trajectory: Trajectory) -> str:
    """The outcome first: what the run answered, or that it did not finish."""
    result = trajectory["result"]
    if result is None:
        return (
            '<section id="answer"><h2>No result</h2><p class="error">The trace ends '
            "before the run did (it crashed or was stopped): below is everything up to "
            "that moment.</p></section>"
        )
    notes = [f"status {result.get('status')}", f"{result.get('iterations', 0)} iterations"]
    notes += [f"{result.get('sub_calls', 0)} sub-calls", f"{result.get('seconds', 0)} s"]
    if result.get("stop_reason"):
        notes.append(str(result["stop_reason"]))
    error = f'<p class="error">{esc(result["error"])}</p>' if result.get("error") else ""
    return (
        f'<section id="answer"><h2>Answer</h2><div class="answer">{esc(result.get("answer"))}'
        f'</div><div class="meta">{esc(" · ".join(notes))}</div>{error}</section>'
    )


def render_html(trajectory: Trajectory) -> str:
    """The whole page for ``trajectory``."""
    header = trajectory["header"]
    settings = header.get("settings") or {}
    prices = settings.get("prices") or {}
    context = header.get("context") or {}
    subtitle = (
        f"{settings.get('model', '')} · sub model {settings.get('sub_model') or 'default'} · "
        f"context: {context.get('kind', '?')}, {context.get('length', 0):,} "
        f"{length_unit(context)} · "
        f"started {header.get('started', '')}"
    )
    root = trajectory["root"]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>rlm trace: {esc(header.get('question', ''))[:80]}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(header.get('question', ''))}</h1>"
        f'<div class="meta" style="color:#cbd5e1">{esc(subtitle)}</div></header><main>'
        f"{answer_section(trajectory)}{totals_section(root, prices)}{timeline_section(root)}"
        '<section id="tree"><h2>Iterations</h2>'
        '<button type="button" data-open="true">expand all</button>'
        '<button type="button" data-open="false">collapse all</button>'
        f"{run_html(root)}</section></main><script>{SCRIPT}</script></body></html>"
    )
