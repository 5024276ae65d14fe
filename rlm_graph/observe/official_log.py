"""The official RLM library's JSONL log format, both ways.

The official library (alexzhang13/rlm) logs a ``metadata`` line and then one
``iteration`` line per root step: the messages the model read, its response, the code
blocks it ran with their stdout/stderr/locals and the sub-LM calls they made, and the
final answer. Its Next.js visualizer reads such files. Here:

- :func:`export_lines` / ``rlm export`` turn our trajectory into that format, so users
  of that visualizer can open our runs;
- :func:`read_official` reads an official log (including the ``run_context`` lines that
  newer versions write between runs), and :func:`to_trajectory` turns one of its runs
  into our tree, so ``rlm view`` shows official logs too.

What the format cannot say is lost on export, and docs/trajectory.md lists it: nested
sub-RLM trajectories become single ``rlm_calls`` entries, and ``locals`` stays empty
(the sandbox does not snapshot its variables). The exported ``prompt`` of iteration n is
rebuilt from the trace the way the official library builds it: system prompt, question,
then each earlier reply and its code's output.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from rlm_graph.observe.trajectory import (
    CellRecord,
    Iteration,
    RunEnd,
    RunTree,
    SubCall,
    TraceError,
    Trajectory,
    new_run,
    read_lines_of,
)


class OfficialRun(TypedDict):
    """One question of an official log: its ``run_context`` (if logged) and iterations."""

    context: dict[str, Any] | None
    iterations: list[dict[str, Any]]


class OfficialLog(TypedDict):
    """An official log file: its configuration and its runs."""

    metadata: dict[str, Any]
    runs: list[OfficialRun]


# -- export -----------------------------------------------------------------------------------


def _timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def metadata_line(header: dict[str, Any]) -> dict[str, Any]:
    """The official ``metadata`` line from our trace header."""
    settings = header.get("settings") or {}
    model = str(settings.get("model", ""))
    provider, _, name = model.rpartition(":")
    sub_model = settings.get("sub_model") or None
    return {
        "type": "metadata",
        "timestamp": str(header.get("started", "")).replace("+00:00", ""),
        "root_model": name,
        "max_depth": settings.get("max_depth"),
        "max_iterations": settings.get("max_iterations"),
        "backend": provider or "openai",
        "backend_kwargs": {"model_name": name},
        "environment_type": "eryx",
        "environment_kwargs": {},
        "other_backends": [sub_model] if sub_model else None,
    }


def rlm_call(call: SubCall) -> dict[str, Any]:
    """A sub-call as an official ``rlm_calls`` entry (the visualizer's and the library's keys)."""
    usage = call["usage"]
    prompt_tokens = sum(c.get("input_tokens", 0) for c in usage.values())
    completion_tokens = sum(c.get("output_tokens", 0) for c in usage.values())
    return {
        "root_model": call["model"],
        "prompt": call["prompt"],
        "response": call["answer"] if call["ok"] else f"Error: {call['error']}",
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usage_summary": {
            "model_usage_summaries": {
                model: {
                    "total_calls": counts.get("calls", 0),
                    "total_input_tokens": counts.get("input_tokens", 0),
                    "total_output_tokens": counts.get("output_tokens", 0),
                }
                for model, counts in usage.items()
            }
        },
        "execution_time": call["seconds"],
    }


def code_block(cell: CellRecord, calls: list[SubCall]) -> dict[str, Any]:
    """A cell as an official code block; an error goes to stderr, as a REPL prints it."""
    stderr = cell["error"] if cell["error"] and cell["error"] not in cell["output"] else ""
    return {
        "code": cell["code"],
        "result": {
            "stdout": cell["output"],
            "stderr": stderr,
            "locals": {},
            "execution_time": cell["seconds"],
            "rlm_calls": [rlm_call(call) for call in calls],
        },
    }


def cell_feedback(cell: CellRecord) -> str:
    """What the official library tells the model after running a code block."""
    return f"Code executed:\n```python\n{cell['code']}\n```\n\nREPL output:\n{cell['output']}"


def final_of(iteration: Iteration, run: RunTree, last: bool) -> str | None:
    """The final answer an iteration produced, if it produced one."""
    for cell in iteration["cells"]:
        if "final" in cell:
            return _text(cell["final"])
    if last and run["final"] is not None and run["final"]["status"] == "answered":
        return _text(run["final"]["answer"])
    return None


def export_lines(trajectory: Trajectory) -> list[dict[str, Any]]:
    """Our trajectory as official log lines: ``metadata``, then one line per iteration."""
    run = trajectory["root"]
    lines = [metadata_line(trajectory["header"])]
    messages = [
        {"role": "system", "content": run["system_prompt"]},
        {"role": "user", "content": run["question"]},
    ]
    steps = [it for it in run["iterations"] if not it["best_effort"]]
    for number, iteration in enumerate(steps, 1):
        model_cells = [c for c in iteration["cells"] if c["kind"] == "model"]
        blocks = [
            code_block(cell, iteration["sub_calls"] if cell is model_cells[-1] else [])
            for cell in model_cells
        ]
        lines.append(
            {
                "type": "iteration",
                "iteration": number,
                "timestamp": _timestamp(iteration["started"]),
                "prompt": list(messages),
                "response": iteration["reply"] or iteration["code"],
                "code_blocks": blocks,
                "final_answer": final_of(iteration, run, number == len(steps)),
                "iteration_time": round(
                    iteration["reply_seconds"] + sum(c["seconds"] for c in iteration["cells"]), 4
                ),
            }
        )
        messages.append({"role": "assistant", "content": iteration["reply"] or iteration["code"]})
        messages.extend({"role": "user", "content": cell_feedback(c)} for c in model_cells)
    return lines


def write_official(trajectory: Trajectory, path: str | os.PathLike[str]) -> None:
    """Write ``trajectory`` as an official log file."""
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in export_lines(trajectory))
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot write {path}: {exc.strerror}") from exc


# -- import -----------------------------------------------------------------------------------


def is_official(records: list[dict[str, Any]]) -> bool:
    """Whether parsed lines are an official log rather than our trace."""
    return bool(records) and records[0].get("type") in ("metadata", "iteration", "run_context")


def parse_official(records: list[dict[str, Any]], source: str) -> OfficialLog:
    """Group an official log's lines into runs; a ``run_context`` line starts a new one."""
    if not is_official(records):
        raise TraceError(f"{source} is not an official RLM log: no metadata or iteration line")
    metadata: dict[str, Any] = {}
    runs: list[OfficialRun] = []
    for record in records:
        kind = record.get("type", "iteration")
        if kind == "metadata":
            metadata = record
        elif kind == "run_context":
            runs.append(OfficialRun(context=record, iterations=[]))
        elif kind == "iteration":
            if not runs:
                runs.append(OfficialRun(context=None, iterations=[]))
            runs[-1]["iterations"].append(record)
    return OfficialLog(metadata=metadata, runs=runs)


def read_official(path: str | os.PathLike[str]) -> OfficialLog:
    """Read an official RLM log file."""
    return parse_official(read_lines_of(path), str(path))


def _iso_seconds(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


def _official_call(entry: dict[str, Any], started: float, index: str) -> SubCall:
    prompt = entry.get("prompt", "")
    tokens = {
        "calls": 1,
        "input_tokens": int(entry.get("prompt_tokens") or 0),
        "output_tokens": int(entry.get("completion_tokens") or 0),
    }
    seconds = float(entry.get("execution_time") or 0.0)
    model = str(entry.get("root_model") or "sub-lm")
    return SubCall(
        id=index,
        depth=1,
        model=model,
        recursive=False,
        prompt=_text(prompt),
        prompt_chars=len(_text(prompt)),
        started=started,
        ended=started + seconds,
        seconds=seconds,
        ok=True,
        answer=_text(entry.get("response", "")),
        error="",
        cached=False,
        usage={model: tokens},
        run=None,
    )


def _official_iteration(record: dict[str, Any], number: int) -> Iteration:
    started = _iso_seconds(record.get("timestamp"))
    messages = record.get("prompt") or []
    cells: list[CellRecord] = []
    calls: list[SubCall] = []
    for block_number, block in enumerate(record.get("code_blocks") or []):
        result = block.get("result") or {}
        cells.append(
            CellRecord(
                kind="model",
                code=str(block.get("code", "")),
                output=str(result.get("stdout", "")),
                error=str(result.get("stderr", "")),
                halted=False,
                seconds=float(result.get("execution_time") or 0.0),
                sub_calls=len(result.get("rlm_calls") or []),
            )
        )
        calls.extend(
            _official_call(entry, started, f"{number}-{block_number}-{i}")
            for i, entry in enumerate(result.get("rlm_calls") or [])
        )
    if record.get("final_answer") is not None and cells:
        cells[-1]["final"] = record["final_answer"]
    return Iteration(
        number=number,
        depth=0,
        started=started,
        prompt_chars=sum(len(_text(m.get("content", ""))) for m in messages),
        prompt_messages=len(messages),
        model="",
        reply=str(record.get("response", "")),
        code="",
        note="",
        reply_seconds=float(record.get("iteration_time") or 0.0),
        usage={},
        best_effort=False,
        cells=cells,
        sub_calls=calls,
    )


def final_answer_text(answer: Any) -> Any:
    """The official final answer: a string, or a ``[kind, value]`` pair in older logs."""
    return answer[1] if isinstance(answer, list) and len(answer) == 2 else answer


def to_trajectory(log: OfficialLog, run_index: int = -1) -> Trajectory:
    """One run of an official log as our trajectory (the last run by default)."""
    if not log["runs"]:
        raise TraceError("the official log holds no iteration")
    official = log["runs"][run_index]
    metadata = log["metadata"]
    records = official["iterations"]
    run = new_run(0)
    run["iterations"] = [_official_iteration(r, n) for n, r in enumerate(records, 1)]
    messages = records[0].get("prompt") or [] if records else []
    run["system_prompt"] = next((m["content"] for m in messages if m["role"] == "system"), "")
    question = str((official["context"] or {}).get("prompt") or "")
    run["question"] = question
    answer = final_answer_text(records[-1].get("final_answer")) if records else None
    if answer is not None:
        run["final"] = RunEnd(status="answered", answer=answer, stop_reason="", usage={})
    header = {
        "type": "run",
        "version": 0,
        "started": metadata.get("timestamp", ""),
        "question": question or "(question not logged)",
        "settings": {
            "model": metadata.get("root_model", ""),
            "max_depth": metadata.get("max_depth"),
            "max_iterations": metadata.get("max_iterations"),
        },
        "context": {"kind": metadata.get("environment_type", "")},
    }
    result = None
    if answer is not None:
        result = {"type": "result", "answer": answer, "status": "answered"}
        result["iterations"] = len(records)
    return Trajectory(header=header, root=run, result=result, events=len(records))
