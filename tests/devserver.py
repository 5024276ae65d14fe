"""`langgraph dev` started for a test: the project's graphs, a private home, no keys.

The ``dev_server`` fixture (conftest.py) starts one per test and stops it afterwards.
The server allows one model base URL, ``http://127.0.0.1:<model_port>/v1``: a test
serves its stub model there (``StubServer(..., port=server.model_port)``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
RUN_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevServer:
    process: subprocess.Popen[bytes]
    log_path: Path
    model_port: int
    url: str = ""

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)[-20_000:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


def server_env(home: Path) -> dict[str, str]:
    """The test's environment minus credentials and tracing, plus the dev-server settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_API_KEY")
        and not key.startswith(("LANGSMITH_", "LANGCHAIN_", "OPENAI_"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        RLM_GRAPH_HOME=str(home),
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGSMITH_TEST_TRACKING="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def project_config(workdir: Path, source: Path) -> Path:
    """A langgraph.json of the project with its paths made absolute, written to ``workdir``.

    `langgraph dev` resolves the graph, dependency and .env paths against its working
    directory and keeps its in-memory database in ``<cwd>/.langgraph_api`` (pickles that
    later servers reload; the config's `disable_persistence` key is dropped by the CLI's
    validation in langgraph-cli 0.4.x). Running from ``workdir`` keeps that database out
    of the project while serving exactly the graphs the project's config names.
    """
    config = json.loads(source.read_text())

    def absolute(path: str) -> str:
        return os.path.normpath(source.parent / path)

    config["graphs"] = {
        name: absolute(spec) if isinstance(spec, str) and spec.startswith(".") else spec
        for name, spec in config["graphs"].items()
    }
    config["dependencies"] = [
        absolute(dep) if dep.startswith(".") else dep for dep in config.get("dependencies", [])
    ]
    if isinstance(config.get("env"), str):
        config["env"] = absolute(config["env"])
    if "auth" in config:
        config["auth"]["path"] = absolute(config["auth"]["path"])
    path = workdir / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def start_dev_server(
    tmp: Path,
    home: Path,
    env_extra: dict[str, str] | None = None,
    config: Path = PROJECT_ROOT / "langgraph.json",
    options: Sequence[str] = (),
) -> DevServer:
    """Start `langgraph dev` on the project's graphs and wait until it answers /ok.

    ``env_extra`` adds to the server's environment (the deployment's ``RLM_*``
    variables); ``config`` is the project's langgraph.json or a variant of it
    (``deploy/langgraph.json``, with auth); ``options`` go on its command line
    (e.g. ``--n-jobs-per-worker``).
    """
    model_port = free_port()
    env = server_env(home)
    env["RLM_ALLOWED_BASE_URLS"] = f"http://127.0.0.1:{model_port}/v1"
    env.update(env_extra or {})
    cli = shutil.which("langgraph", path=env["PATH"])
    if cli is None:
        pytest.skip("langgraph CLI not installed (pip install -e '.[dev]')")
    workdir = tmp / "server"
    workdir.mkdir()
    config_path = project_config(workdir, config)
    log_path = tmp / "langgraph-dev.log"
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                cli,
                "dev",
                "--no-browser",
                "--no-reload",
                "--port",
                str(port),
                "--config",
                str(config_path),
                *options,
            ],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DevServer(process, log_path, model_port)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"langgraph dev exited with {process.returncode}:\n{server.log()}")
        # The server moves to another port if ours was taken meanwhile: read it from the log.
        if not server.url and (match := re.search(r"API: (http://[\w.]+:\d+)", server.log())):
            server.url = match.group(1)
        if server.url:
            try:
                with urllib.request.urlopen(f"{server.url}/ok", timeout=2) as response:
                    if response.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"langgraph dev not ready after {READY_TIMEOUT:g} s:\n{server.log()}")


def prebuild_sandbox_factory(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the sandbox factory in ``home`` so the server loads it instead of building it."""
    from rlm_graph.repl import session as sandbox

    monkeypatch.setenv("RLM_GRAPH_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    path = Path(sandbox._factory_path())
    factory = sandbox.sandbox_factory()  # cached per process: may come from another home
    if not path.exists():
        factory.save(str(path))
