"""What every ``rlm`` command shares: exit codes, usage errors, the settings flags.

Light on purpose (the standard library and ``settings``): ``cli/main.py`` builds the
whole parser from it, so ``rlm --help`` and a mistyped flag never import LangGraph.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, NoReturn

from rlm_graph.settings import BY_PROFILE, Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_CODES = {"answered": EXIT_OK, "budget_exhausted": EXIT_BUDGET}
# The one description of the exit codes: `rlm run --help` prints it, the README quotes it.
EXIT_HELP = (
    "Exit codes: 0 answered; 1 failed (a model or its server failed); 2 usage error (a "
    "missing key or file, an unknown model or server, a setting out of range), before any "
    "work; 3 budget exhausted (iterations: best-effort answer printed; tokens or dollars: "
    "the best answer so far, marked); 130 interrupted."
)
# Settings exposed as `rlm run` flags: (field name, type, metavar).
RUN_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("sub_model", str, "MODEL"),
    ("base_url", str, "URL"),
    ("sub_base_url", str, "URL"),
    ("server_profile", str, "auto|hosted|local"),
    ("max_iterations", int, "N"),
    ("max_depth", int, "N"),
    ("sub_rlm_executor", str, "local|ray"),
    ("max_sub_calls", int, "N"),
    ("max_concurrency", int, "N"),
    ("cell_timeout", float, "SECONDS"),
    ("max_tokens", int, "N"),
    ("max_dollars", float, "DOLLARS"),
    ("root_window_tokens", int, "TOKENS"),
    ("sub_model_window_tokens", int, "TOKENS"),
    ("max_output_chars", int, "N"),
    ("model_timeout", float, "SECONDS"),
    ("model_max_retries", int, "N"),
    ("reply_max_tokens", int, "N"),
    ("tool_calling", bool, ""),
)
TRACE_HELP = "write the run's trajectory (JSON lines) to FILE; open it with `rlm view FILE`"


class UsageError(Exception):
    """A mistake in how ``rlm`` was called; reported in one line with exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block buries the message)."""

    def error(self, message: str) -> NoReturn:
        """Report ``message`` in one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _setting(name: str) -> Field[Any]:
    """The definition of one setting: its default and description live only there."""
    return next(f for f in fields(Settings) if f.name == name)


def setting_help(name: str) -> str:
    """A flag's help: the setting's own description, so CLI and Studio never disagree."""
    field = _setting(name)
    # "" has nothing to show; a profile's numbers are in the description itself
    default = f" (default: {field.default})" if field.default not in ("", BY_PROFILE) else ""
    return (str(field.metadata["description"]) + default).replace("%", "%%")


def add_model_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``--model``, the settings flags and ``--prices``, shared by ``rlm run`` and ``rlm eval``."""
    parser.add_argument(
        "--model",
        default=os.environ.get("RLM_MODEL") or _setting("model").default,
        metavar="MODEL",
        help="root model as provider:name, e.g. openai:gpt-5, anthropic:claude-sonnet-4-5; "
        "with --base-url a bare name is served by that OpenAI-compatible server "
        f"(default: $RLM_MODEL, else {_setting('model').default})",
    )
    for name, kind, metavar in RUN_FLAGS:
        flag = "--" + name.replace("_", "-")
        if name in skip:
            parser.set_defaults(**{name: None})
        elif kind is bool:  # on by default, so the flag turns it off
            parser.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_const",
                const=False,
                help=setting_help(name),
            )
        else:
            parser.add_argument(
                flag, dest=name, type=kind, metavar=metavar, help=setting_help(name)
            )
    parser.add_argument(
        "--local",
        dest="server_profile",
        action="store_const",
        const="local",
        help="the model server is one you run yourself: --server-profile local",
    )
    parser.add_argument(
        "--prices",
        metavar="FILE",
        help='JSON price table, {"model": {"input": $, "output": $, "cached_input": $}} per '
        "million tokens, over the built-in one",
    )


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags of parsed arguments, by setting name (None: not given)."""
    return {name: getattr(args, name) for name, _, _ in RUN_FLAGS}


def settings_from(model: str, flags: dict[str, Any], prices: str | None) -> Settings:
    """Settings from the flags given; omitted (None) flags keep the defaults Settings defines.

    A value out of range is a ``ValueError`` naming the setting, as Settings raises it.
    """
    values = {name: value for name, value in flags.items() if value is not None}
    if prices:
        values["prices"] = read_prices(prices)
    return Settings.from_mapping({"model": model, **values})


def read_prices(path: str) -> Any:
    """The user's price table from a JSON file (its shape is checked by Settings)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --prices {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"--prices {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
