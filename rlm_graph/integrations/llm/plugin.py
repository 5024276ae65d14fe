"""The ``llm`` plugin: the entry point ``[project.entry-points.llm] rlm_graph``.

Only the hooks live here; the toolbox is in llm_toolbox, the ``llm rlm`` command in
llm_command, and the adapter that runs llm's models in the graph in llm_chat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import llm

from rlm_graph.integrations.llm.command import rlm_command
from rlm_graph.integrations.llm.toolbox import RLM


@llm.hookimpl
def register_tools(register: Callable[..., Any]) -> None:
    """Offer the RLM toolbox: `llm -T 'RLM("big.log")' "question"`."""
    register(RLM)


@llm.hookimpl
def register_commands(cli: click.Group) -> None:
    """Add `llm rlm "question" -f big.log`."""
    cli.add_command(rlm_command)
