"""``llm rlm "question" -f big.txt``: the whole rlm-graph loop with ``llm``'s models.

It is ``rlm run`` under llm's roof: the same checks, progress, output, exit codes and
budget flags (this module only translates llm's option names and model names into a
:class:`rlm_graph.cli.run.RunRequest` and hands it to ``run_request``, as ``rlm run``
does). Models are llm model ids or aliases, run through the ``llm:`` adapter, so the
user's llm keys and plugins are used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rlm_graph.cli.common import RUN_FLAGS, TRACE_HELP, UsageError, setting_help
from rlm_graph.cli.run import RunRequest, run_request
from rlm_graph.models.llm_cli import default_model_id
from rlm_graph.models.loading import LLM_PREFIX

# `rlm run` flags that make no sense here: llm configures its models' endpoints itself.
_NOT_FOR_LLM = {"sub_model", "base_url", "sub_base_url"}
BUDGET_FLAGS = [flag for flag in RUN_FLAGS if flag[0] not in _NOT_FOR_LLM]


class _UsageProblem(click.ClickException):
    """A usage mistake, reported in one line with ``rlm run``'s exit code 2."""

    exit_code = 2


def _budget_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``rlm run``'s budget flags, with the help text the settings define."""
    for name, kind, metavar in reversed(BUDGET_FLAGS):
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, name, type=kind, metavar=metavar, help=setting_help(name))(
            command
        )
    return command


@click.command(name="rlm")
@click.argument("question")
@click.option(
    "-f",
    "--file",
    "context",
    default="-",
    metavar="PATH",
    help="The context: a text file, a .json file (parsed), a directory, or - for stdin "
    "(the default)",
)
@click.option("-m", "--model", help="Root model: an llm model id or alias (default: llm's)")
@click.option("--sub-model", help="Model of llm_query/llm_batch (default: the root model)")
@_budget_options
@click.option("--prices", metavar="FILE", help="JSON price table over the built-in one")
@click.option("--trace", metavar="FILE", help=TRACE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, not the answer")
@click.option("--quiet", is_flag=True, help="No progress on stderr")
def rlm_command(
    question: str,
    context: str,
    model: str | None,
    sub_model: str | None,
    prices: str | None,
    trace: str | None,
    as_json: bool,
    quiet: bool,
    **budgets: Any,
) -> None:
    """Answer QUESTION about a context far larger than a prompt (a Recursive LM).

    The root model writes Python that reads the context in a sandbox and asks the sub
    model about chunks; neither ever reads the whole context. Progress goes to
    stderr, the answer to stdout. Exit codes: 0 answered, 1 failed, 2 usage error,
    3 iteration budget exhausted (best-effort answer printed).
    """
    root = model or default_model_id()
    request = RunRequest(
        question=question,
        context=context,
        model=LLM_PREFIX + root,
        settings={"sub_model": LLM_PREFIX + (sub_model or root), **budgets},
        prices=prices,
        trace=trace,
        as_json=as_json,
        quiet=quiet,
    )  # durable threads stay with `rlm run --checkpoint`; llm reviews tools with its --ta
    try:
        status = run_request(request)
    except UsageError as exc:
        raise _UsageProblem(str(exc)) from exc
    click.get_current_context().exit(status)
