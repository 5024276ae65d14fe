"""Sub-RLMs as Ray tasks: each in a sandbox of its own on whichever node has room.

Chosen by ``sub_rlm_executor="ray"`` (:func:`rlm_graph.graph.recursion.child_runner`).
The parent's broker still does everything around a sub-call (limits, memo, journal),
so a resumed parent never runs a finished sub-RLM again; only the child run itself
moves. What crosses to the worker is the prompt (Ray moves a large one through its
object store, not the task message), the settings and the scope, whose budget is the
tree's :class:`~rlm_graph.subcalls.cluster.RayBudget`; keys stay in each node's
environment. Ray retries a task whose node died on another node (``max_retries``); an
error of the child run itself is an answer, not a reason to retry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rlm_graph.graph.recursion import run_child
from rlm_graph.observe.events import Event
from rlm_graph.settings import Settings
from rlm_graph.subcalls.broker import ChildResult, Emit
from rlm_graph.subcalls.cluster import connect, ray_module
from rlm_graph.subcalls.scope import Scope

# The custom resource a node declares to say how many sandboxes it can hold (about
# 120 MB each at rest, up to sandbox_memory_mb): `ray start --resources='{"rlm_sandbox": 8}'`.
# A cluster that declares none gets one sub-RLM per CPU.
SANDBOX_RESOURCE = "rlm_sandbox"
NODE_RETRIES = 3  # a task whose node dies runs again elsewhere, up to this many times


@dataclass
class RemoteChild:
    """What a sub-RLM's task sends back: its result (or error) and its progress events."""

    result: ChildResult | None
    error: str = ""
    events: list[Event] = field(default_factory=list)


def run_remote(prompt: str, settings: Settings, scope: Scope) -> RemoteChild:
    """The task body, on a worker: run the sub-RLM here, keep its events for the parent.

    Events are sent back with the answer rather than streamed, so the root's trace has
    the whole tree once each sub-RLM ends. The child's own ``final`` event says which
    node ran it.
    """
    events: list[Event] = []
    try:
        result = asyncio.run(run_child(prompt, settings, scope, events.append))
    except Exception as exc:  # the child run failed: an answer for the broker, not a retry
        return RemoteChild(None, str(exc), events)
    node = ray_module().get_runtime_context().get_node_id()
    for event in events:
        if event["event"] == "final" and "path" not in event:
            event["node"] = node
    return RemoteChild(result, events=events)


@cache
def _task() -> Any:
    return ray_module().remote(run_remote)


def _placement(ray: Any) -> dict[str, Any]:
    """One sandbox slot when the cluster declares them, else one CPU."""
    if SANDBOX_RESOURCE in ray.cluster_resources():
        return {"num_cpus": 0, "resources": {SANDBOX_RESOURCE: 1}}
    return {"num_cpus": 1}


async def run_child_on_ray(
    prompt: str, settings: Settings, scope: Scope, emit: Emit | None = None
) -> ChildResult:
    """Answer ``prompt`` with a sub-RLM run as a Ray task; its events go to ``emit`` at the end."""
    ray = connect()
    options = {**_placement(ray), "max_retries": NODE_RETRIES, "retry_exceptions": False}
    ref = _task().options(**options).remote(prompt, settings, scope)
    try:
        remote: RemoteChild = await ref
    except asyncio.CancelledError:  # the cell timed out: free the slot
        ray.cancel(ref)
        raise
    if emit is not None:
        for event in remote.events:
            emit(event)
    if remote.result is None:
        raise RuntimeError(remote.error or "sub-RLM failed")
    return remote.result
