"""``rlm view`` and ``rlm export``: a trace read back, written as a page or an official log."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlm_graph.cli.common import EXIT_OK, UsageError
from rlm_graph.observe.official_log import (
    is_official,
    parse_official,
    to_trajectory,
    write_official,
)
from rlm_graph.observe.trajectory import read_lines_of, read_trajectory, trajectory_from
from rlm_graph.observe.viewer import render_html


def view_command(args: argparse.Namespace) -> int:
    """``rlm view``: a trace as one offline HTML page."""
    records = read_lines_of(args.trace)
    if is_official(records):
        trajectory = to_trajectory(parse_official(records, args.trace))
    else:
        trajectory = trajectory_from(records, args.trace)
    out = Path(args.output) if args.output else Path(args.trace).with_suffix(".html")
    try:
        out.write_text(render_html(trajectory), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}") from exc
    print(out)
    return EXIT_OK


def export_command(args: argparse.Namespace) -> int:
    """``rlm export``: a trace in the official library's log format."""
    out = Path(args.output) if args.output else Path(args.trace).with_suffix(".official.jsonl")
    write_official(read_trajectory(args.trace), out)
    print(out)
    return EXIT_OK
