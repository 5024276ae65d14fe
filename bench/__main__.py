"""``python -m bench all|FIGURE [--quick]``: a figure of FIGURES (``all`` runs them) or APART."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

FIGURES = (
    "overhead",
    "batch",
    "first_cell",
    "needle",
    "versus",
    "resume",
    "huge",
    "cold",
    "server",
)
# Not in `all`: it starts a Ray cluster (the ray extra) and measures deployment, not speed.
APART = ("scale",)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def describe() -> str:
    """Machine, versions and commit: numbers mean little without them."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    packages = ", ".join(
        f"{name} {_version(name)}"
        for name in ("langgraph", "pyeryx", "langchain-openai", "openai", "rlms", "dspy")
    )
    return (
        f"{os.cpu_count()} CPUs ({cpu}); Python {platform.python_version()}; {packages}; "
        f"commit {commit or 'unknown'}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen figures and print their tables (Markdown, ready for the docs)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figure", choices=("all", *FIGURES, *APART), help="which figure to measure")
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and smaller sizes (a smoke run)"
    )
    args = parser.parse_args(argv)
    chosen = FIGURES if args.figure == "all" else (args.figure,)
    print(describe(), flush=True)
    started = time.perf_counter()
    for name in chosen:
        figure_started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        print(module.run(quick=args.quick), flush=True)
        print(f"({name}: {time.perf_counter() - figure_started:.1f} s)\n", flush=True)
    print(f"total {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
