"""``rlm mcp``: serve the RLM to MCP hosts (stdio, or streamable HTTP on loopback).

The operator fixes on the command line (its parser is ``cli.main.add_mcp``) what a
client cannot change: the folders the server may read, the models and budgets, where
threads and traces live. Every check (settings, keys, folders, the ``mcp`` extra) runs
before the server starts, so a host's log shows one line saying what to fix. The server
itself is ``integrations.mcp``, imported when the command runs (it needs the extra).
"""

from __future__ import annotations

import argparse

from rlm_graph.cli.common import EXIT_OK, UsageError, flag_values, settings_from
from rlm_graph.cli.run import check_models
from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.persistence import PersistenceError, default_checkpoint


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
        settings = settings_from(args.model, flag_values(args), args.prices)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        fixed = FixedRLM(settings, args.roots, args.trace_dir)
        check_models(settings)  # after the folders' checks: this one may ask the server
        serve(fixed, args.checkpoint or str(default_checkpoint()), args.http)
    except (ContextError, PersistenceError) as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK
