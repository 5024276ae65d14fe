"""``rlm threads``: the threads kept in a checkpoint, with their status, newest first."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import StateSnapshot

from rlm_graph.cli.common import EXIT_OK, UsageError
from rlm_graph.graph import build_graph
from rlm_graph.graph.runner import cut_off
from rlm_graph.storage.persistence import PersistenceError, open_persistence


def thread_of(config: RunnableConfig) -> str:
    """The thread id of a config."""
    return str(config.get("configurable", {}).get("thread_id", ""))


def thread_row(thread: str, snapshot: StateSnapshot) -> dict[str, Any]:
    """What ``rlm threads`` says of one thread."""
    values = snapshot.values or {}
    if snapshot.interrupts:
        status = "waiting for approval"
    elif cut_off(snapshot):
        status = "cut off (resumable)"
    else:
        status = str(values.get("status", "new")).replace("_", " ")
    question = values.get("active_question") or values.get("question") or ""
    return {
        "thread": thread,
        "status": status,
        "iterations": values.get("iteration", 0),
        "cells": len(values.get("cells") or []),
        "question": question,
        "updated": snapshot.created_at or "",
    }


def threads_command(args: argparse.Namespace) -> int:
    """``rlm threads``: the threads of a checkpoint, newest first."""
    if (
        not args.checkpoint.startswith(("postgres://", "postgresql://"))
        and not Path(args.checkpoint).is_file()
    ):
        raise UsageError(f"no checkpoint file at {args.checkpoint!r}")
    try:
        with open_persistence(args.checkpoint) as persistence:
            durable = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
            seen: list[str] = []
            for saved in persistence.checkpointer.list(None):
                thread = thread_of(saved.config)
                if thread not in seen:
                    seen.append(thread)
            rows = [
                thread_row(t, durable.get_state({"configurable": {"thread_id": t}})) for t in seen
            ]
    except PersistenceError as exc:
        raise UsageError(str(exc)) from exc
    rows.sort(key=lambda row: str(row["updated"]), reverse=True)
    for row in rows:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            question = one_line_text(row["question"], 60)
            print(f"{row['thread']}  {row['status']:<22} {row['iterations']:>4} it  {question}")
    if not rows and not args.json:
        print("rlm: no threads in this checkpoint", file=sys.stderr)
    return EXIT_OK


def one_line_text(text: str, limit: int) -> str:
    """Text on one line, clipped, for a table cell."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
