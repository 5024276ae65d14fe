"""Running tasks by the methods the paper compares, and recording each run.

The methods are listed in ``eval/plan.py``.

Every run is scored and appended to the results file as it ends; runs already in the
file are skipped, so an interrupted eval resumes where it stopped.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from rlm_graph.api import reference
from rlm_graph.eval import families, scoring
from rlm_graph.eval.plan import Plan
from rlm_graph.eval.report import NOT_RUN, ProgressBar, Summary
from rlm_graph.eval.results import ResultsFile, Row, RunKey
from rlm_graph.eval.tasks import TASK_CHARS_PER_TOKEN, Task
from rlm_graph.graph import graph
from rlm_graph.graph.runner import RLMResult, Run, run_graph
from rlm_graph.models.loading import load_chat_model
from rlm_graph.models.messages import message_text, usage_of
from rlm_graph.models.pricing import cost_of
from rlm_graph.models.usage import total_tokens
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import blob_dir, forget_folder, read_directory
from rlm_graph.storage.folders import list_files
from rlm_graph.text import one_line

MAX_ANSWER_CHARS = 4_000  # of an answer kept in the results file


def method_settings(method: str, settings: Settings) -> Settings:
    """The RLM settings a method runs with."""
    if method == "rlm-no-sub":
        return replace(settings, max_depth=1, max_sub_calls=0)
    if method == "rlm-depth2":
        return replace(settings, max_depth=2)
    return replace(settings, max_depth=1)


def prompt_tokens(task: Task) -> int:
    """The plain model's prompt size, at the tasks' own 4 characters per token."""
    return math.ceil((context_chars(task.context) + len(task.question)) / TASK_CHARS_PER_TOKEN)


def context_chars(context: str | Path) -> int:
    """How long a task's context is: a str, a generated file or a folder of files (ASCII)."""
    if isinstance(context, str):
        return len(context)
    if context.is_dir():
        return sum((context / path).stat().st_size for path in list_files(context))
    return context.stat().st_size


def context_text(context: str | Path) -> str:
    """What the plain model reads: the text, or a folder's files one after another."""
    if isinstance(context, str):
        return context
    if context.is_dir():
        return "\n\n".join(f"### {path}\n{text}" for path, text in read_directory(context).items())
    return context.read_text(encoding="utf-8")


def run_base(task: Task, settings: Settings, window: int) -> RLMResult:
    """The plain model, context in the prompt; "not run" when it cannot fit."""
    needed = prompt_tokens(task)
    if needed > window:
        reason = f"the prompt (~{needed:,} tokens) exceeds the model's window of {window:,}"
        return RLMResult(None, NOT_RUN, 0, 0, {}, 0.0, reason, cost=None)
    started = time.perf_counter()
    try:
        model = load_chat_model(
            settings.model,
            settings.base_url,
            settings.model_timeout,
            settings.model_max_retries,
            max_tokens=settings.reply_cap(settings.model),
        )
        context = context_text(task.context)
        reply = model.invoke([HumanMessage(f"{context}\n\nQuestion: {task.question}")])
    except Exception as exc:
        seconds = time.perf_counter() - started
        return RLMResult(None, "failed", 0, 0, {}, seconds, one_line(exc), cost_of({}, {}))
    text = message_text(reply) if isinstance(reply, AIMessage) else str(reply.content)
    usage = usage_of(reply, settings.model)
    seconds = time.perf_counter() - started
    return RLMResult(text, "answered", 1, 0, usage, seconds, cost=cost_of(usage, settings.prices))


def run_rlm(task: Task, settings: Settings) -> RLMResult:
    """The RLM graph on the task; a raised error is a failed run, not a crashed eval."""
    ref = reference(task.context, settings.lazy_folder_files)
    return run_graph(
        Run(question=task.question, settings=settings, graph=graph, context_ref=ref, catch=True)
    )


def dollars(result: RLMResult) -> float | None:
    """What a run cost; ``None`` when a model it used has no price (never a guess)."""
    if result.cost is None or result.cost["unpriced"]:
        return None
    return result.cost["dollars"]


def row_of(key: RunKey, task: Task, result: RLMResult) -> Row:
    """What the results file keeps of one run."""
    ran = result.status != NOT_RUN
    answer = result.answer
    if isinstance(answer, str) and len(answer) > MAX_ANSWER_CHARS:
        answer = answer[:MAX_ANSWER_CHARS] + "…"
    return {
        "task": key.task,
        "size": key.size,
        "seed": key.seed,
        "method": key.method,
        "status": result.status,
        "score": scoring.score(task.kind, result.answer, task.gold) if ran else None,
        "answer": answer,
        "gold": task.gold,
        "seconds": round(result.seconds, 3),
        "iterations": result.iterations,
        "sub_calls": result.sub_calls,
        "tokens": total_tokens(result.tokens),
        "usage": result.tokens,
        "dollars": dollars(result),
        "error": result.error,
    }


@dataclass(frozen=True)
class Eval:
    """An eval's fixed inputs: the models' settings (prices included) and the base's window."""

    settings: Settings
    window: int


def run_one(method: str, task: Task, config: Eval) -> RLMResult:
    """One run of one method."""
    if method == "base":
        return run_base(task, config.settings, config.window)
    return run_rlm(task, method_settings(method, config.settings))


def evaluate(
    plan: Plan,
    config: Eval,
    results: ResultsFile,
    progress: ProgressBar,
    generate: Callable[[str, int, int], Task] = families.generate,
) -> list[Row]:
    """Run every planned run not in ``results`` yet; return the plan's rows, in order."""
    rows: list[Row] = []
    for task_name, size, seed in plan.instances():
        keys = plan.keys(task_name, size, seed)
        todo = [key for key in keys if key not in results]
        task = generate(task_name, size, seed) if todo else None
        for key in keys:
            if task is not None and key in todo:
                progress.start(key)
                results.add(row_of(key, task, run_one(key.method, task, config)))
            progress.finish(key, results.rows[key])
            rows.append(results.rows[key])
        if task is not None:
            forget_context(task, config.settings)
    return rows


def forget_context(task: Task, settings: Settings) -> None:
    """Drop a generated context (and its file or folder): it is regenerated from its seed."""
    ref = reference(task.context, settings.lazy_folder_files)
    shutil.rmtree(blob_dir(ref), ignore_errors=True)
    if isinstance(task.context, Path) and task.context.is_dir():
        forget_folder(task.context)  # each run's listing of a large one
        shutil.rmtree(task.context)
    elif isinstance(task.context, Path):
        task.context.unlink()


def usage_models(settings: Settings) -> dict[str, str]:
    """The models a results file records (resuming with others would mix scores)."""
    return {"model": settings.model, "sub_model": settings.effective_sub_model}


def summary_json(rows: Sequence[Row], summaries: Sequence[Summary]) -> dict[str, Any]:
    """The ``--json`` object: the summary lines and every run."""
    return {"summary": [s.to_json() for s in summaries], "runs": list(rows)}
