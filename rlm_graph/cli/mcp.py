"""``rlm mcp``: serve the RLM to MCP hosts (stdio, or streamable HTTP on loopback).

The operator fixes here what a client cannot change: the folders the server may read,
the models and budgets, where threads and traces live. Every check (settings, keys,
folders, the ``mcp`` extra) runs before the server starts, so a host's log shows one
line saying what to fix. The server itself is ``integrations.mcp``, imported when the
command runs (it needs the ``mcp`` extra).
"""

from __future__ import annotations

import argparse
from typing import Any

from rlm_graph.cli.main import (
    EXIT_OK,
    UsageError,
    add_model_flags,
    check_models,
    settings_from,
)
from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.persistence import PersistenceError, default_checkpoint


def add_command(commands: Any) -> None:
    """Add ``rlm mcp`` to the ``rlm`` subcommands."""
    parser = commands.add_parser(
        "mcp",
        help="serve the RLM to MCP hosts (Claude Desktop, Claude Code, Cursor, ...)",
        description="Serve the tools rlm_answer(question, path) and rlm_followup(thread, "
        "question) over MCP: stdio by default, or streamable HTTP on 127.0.0.1 with "
        "--http PORT. Paths outside FOLDER... are refused. See docs/integrations.md.",
    )
    parser.add_argument(
        "roots", nargs="+", metavar="FOLDER", help="a folder the server may read (and below)"
    )
    add_model_flags(parser)
    parser.add_argument(
        "--checkpoint",
        metavar="FILE|URL",
        help="where threads live: a SQLite file or a postgresql:// URL "
        "(default: $RLM_GRAPH_HOME/threads.sqlite)",
    )
    parser.add_argument(
        "--trace-dir",
        metavar="DIR",
        help="write each call's trajectory to a file here (default: $RLM_GRAPH_HOME/traces)",
    )
    parser.add_argument(
        "--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT"
    )
    parser.set_defaults(handler=mcp_command)


def mcp_command(args: argparse.Namespace) -> int:
    """``rlm mcp``: every check first, then serve until the client hangs up."""
    try:
        from rlm_graph.integrations.calls import FixedRLM
        from rlm_graph.integrations.mcp import serve
    except ImportError as exc:
        raise UsageError(
            f"rlm mcp needs the mcp extra: pip install 'rlm-graph[mcp]' ({exc})"
        ) from exc
    try:
        settings = settings_from(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    check_models(settings)
    try:
        fixed = FixedRLM(settings, args.roots, args.trace_dir)
        serve(fixed, args.checkpoint or str(default_checkpoint()), args.http)
    except (ContextError, PersistenceError) as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK
