"""Model-written code trying to escape or abuse the sandbox: each attack is one test.

Most attacks run against a :class:`Sandbox` directly (fast); the end-to-end tests at the
bottom show that a run survives them with the model told what happened.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sandboxes import Echo, loader, run_cells
from support import Script, fast_settings, python_probe, tool

from rlm_graph import answer
from rlm_graph.offline.stub_server import StubReply
from rlm_graph.repl.process import sandbox_processes
from rlm_graph.repl.registry import REGISTRY, Checkout, SandboxRegistry
from rlm_graph.repl.session import CAPTURE_LIMIT, Limits, Sandbox
from rlm_graph.storage.contexts import blob_dir, store_value
from rlm_graph.text import one_line

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LIMITS = Limits(cell_timeout=10.0, cpu_instructions=5_000_000_000, memory_mb=512)
SECRET = "sk-host-secret-" + uuid.uuid4().hex
# Each halt gets the other brake far out of reach, so a slow machine cannot swap them.
FUEL_ONLY = Limits(cell_timeout=120.0, cpu_instructions=5_000_000_000, memory_mb=512)
WALL_ONLY = Limits(cell_timeout=2.0, cpu_instructions=10**13, memory_mb=512)


class Exploding:
    """A sub-call handler whose host code fails, with a host path in its traceback."""

    def query(self, prompt: str) -> dict[str, Any]:
        raise RuntimeError("host failure")

    def batch(self, prompts: list[str]) -> list[dict[str, Any]]:
        raise KeyError("host failure")


@pytest.fixture(autouse=True)
def host_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """API keys set on the host while every test here runs."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "RLM_TEST_API_KEY"):
        monkeypatch.setenv(name, SECRET)


@pytest.fixture
def box() -> Sandbox:
    sandbox = Sandbox(store_value("hello context"), LIMITS)
    sandbox.handler = Echo()
    return sandbox


# -- host files ---------------------------------------------------------------------------


def leaked_host_content(output: str) -> bool:
    """Whether ``output`` holds a line of /etc/passwd or of the project's pyproject.toml.

    Asserted on content, not names: a refusal echoes its path, and the clone's folder
    may well be called rlm-graph.
    """
    return "root:x:" in output or "[build-system]" in output


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        str(PROJECT_ROOT / "pyproject.toml"),
        str(Path.home() / ".ssh" / "id_rsa"),
        "/proc/self/environ",
        "/ctx/../../etc/passwd",
        "../../../../etc/passwd",
    ],
)
def test_host_files_cannot_be_read(box: Sandbox, path: str) -> None:
    out = box.run(f"print(open({path!r}).read())")
    assert re.search(r"(FileNotFoundError|PermissionError|OSError)", out.output), out.output
    assert not leaked_host_content(out.output)
    assert not out.halted


def test_listing_the_root_shows_no_host_directories(box: Sandbox) -> None:
    code = (
        "import os\n"
        "try:\n    print(sorted(os.listdir('/')))\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)"
    )
    out = box.run(code)
    assert out.error == "" and out.stdout.startswith(("[", "refused "))  # the code really ran
    assert not {"etc", "home", "proc", "usr", "root", "work"} & set(re.findall(r"\w+", out.stdout))


def test_writes_outside_the_sandbox_never_reach_the_host(box: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for path in (str(target), f"/ctx/{target.name}", "/tmp/escaped.txt"):
        out = box.run(f"open({path!r}, 'w').write('pwned')")
        assert re.search(r"(FileNotFoundError|PermissionError|OSError)", out.output), out.output
    assert not target.exists()
    assert list(blob_dir(box.ref).iterdir()) == [blob_dir(box.ref) / "context.txt"]


def test_symlinks_cannot_leave_the_context_mount(tmp_path: Path) -> None:
    ref = store_value(f"symlink probe {uuid.uuid4().hex}")
    planted = blob_dir(ref) / "planted"
    planted.symlink_to("/etc/passwd")  # as if the host's blob folder had been tampered with
    (blob_dir(ref) / "planted-dir").symlink_to(PROJECT_ROOT)
    sandbox = Sandbox(ref, LIMITS)
    guest_link = sandbox.run("import os\nos.symlink('/etc/passwd', '/ctx/mine')")
    assert "PermissionError" in guest_link.output
    for path in ("/ctx/planted", "/ctx/planted-dir/pyproject.toml"):
        out = sandbox.run(f"print(open({path!r}).read())")
        assert not leaked_host_content(out.output)
        assert "Error" in out.output


# -- host environment and host errors ----------------------------------------------------


def test_host_api_keys_are_not_in_the_guest_environment(box: Sandbox) -> None:
    out = box.run(
        "import os\n"
        "print(dict(os.environ))\n"
        "print(os.getenv('OPENAI_API_KEY'), [k for k in os.environ if k.endswith('_API_KEY')])"
    )
    assert SECRET not in out.output
    assert out.stdout.splitlines()[-1] == "None []"


# A fresh host whose environment holds keys of every key-like kind: opening a sandbox
# starts the zygote and a spare child; their environments are read from /proc.
ZYGOTE_ENV_PROBE = """
from pathlib import Path
from rlm_graph.repl.process import sandbox_processes, warm_up
warm_up()
(child,) = sandbox_processes()
zygote = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
for pid in (zygote, child):
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\\0")
    print(sorted(e.split(b"=")[0].decode() for e in entries if e.startswith(b"RLM_PROBE_")))
"""


def test_the_sandbox_processes_start_without_key_like_variables() -> None:
    keys = ("RLM_PROBE_API_KEY", "RLM_PROBE_TOKEN", "RLM_PROBE_PASSWORD", "RLM_PROBE_SECRET")
    done = python_probe(
        ZYGOTE_ENV_PROBE, timeout=120, RLM_PROBE_PLAIN="seen", **dict.fromkeys(keys, SECRET)
    )
    assert done.returncode == 0, done.stderr[-500:]
    # zygote, then its child: the plain variable shows the environment was really read
    assert done.stdout.splitlines() == ["['RLM_PROBE_PLAIN']"] * 2


@pytest.mark.parametrize("suffix", ["_API_KEY", "_TOKEN", "_PASSWORD", "_SECRET"])
def test_key_like_values_are_redacted_from_errors(
    suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"credential-{uuid.uuid4().hex}"
    monkeypatch.setenv(f"RLM_PROBE{suffix}", value)
    shown = one_line(RuntimeError(f"the server said: bad credential {value}"))
    assert shown == f"RuntimeError: the server said: bad credential [RLM_PROBE{suffix} redacted]"


def test_host_exceptions_reach_the_guest_without_host_tracebacks() -> None:
    sandbox = Sandbox(store_value("ctx"), LIMITS)
    sandbox.handler = Exploding()
    for code in ("await llm_query('q')", "await llm_batch(['a', 'b'])"):
        out = sandbox.run(code)
        assert "SubCallFailed: the host could not answer this sub-call" in out.output
        assert "host failure" in out.output
        for leak in (str(PROJECT_ROOT), "rlm_graph/", "site-packages", 'File "/'):
            assert leak not in out.output, out.output
        assert not out.halted


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("await _rlm_query()", "one keyword argument, prompt=str"),
        ("await _rlm_query(prompt=5)", "one keyword argument, prompt=str"),
        ("await _rlm_query(prompt='a', extra=1)", "one keyword argument, prompt=str"),
        ("await _rlm_batch(prompts='abc')", "prompts=[str, ...]"),
        ("await _rlm_batch(prompts=[1, 2])", "prompts=[str, ...]"),
    ],
)
def test_raw_callbacks_with_bad_arguments_are_refused_cleanly(
    box: Sandbox, code: str, message: str
) -> None:
    out = box.run(f"print({code})")
    assert message in out.stdout
    assert "Traceback" not in out.output
    assert box.handler.calls == []  # type: ignore[attr-defined]


# -- processes, sockets, DNS, native code --------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import subprocess\nsubprocess.run(['ls'])", "does not support processes"),
        ("import os\nos.system('ls')", "has no attribute 'system'"),
        ("import os\nos.fork()", "has no attribute 'fork'"),
        ("import os\nos.execv('/bin/sh', ['sh'])", "has no attribute 'execv'"),
        ("import threading\nthreading.Thread(target=print).start()", "can't start new thread"),
        (
            "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
            "networking not enabled",
        ),
        ("import ctypes", "No module named '_ctypes'"),
    ],
)
def test_processes_sockets_and_native_code_are_refused(
    box: Sandbox, code: str, message: str
) -> None:
    box.run("keep = 'still here'")
    out = box.run(code)
    assert message in out.output
    assert not out.halted
    assert box.run("print(keep)").stdout == "still here\n"


def test_the_guest_stdin_is_closed(box: Sandbox) -> None:
    code = (
        "import os, sys\n"
        "for read in (sys.stdin.read, lambda: os.read(0, 10)):\n"
        "    try:\n        print(repr(read()))\n"
        "    except OSError as exc:\n        print('closed', type(exc).__name__)"
    )
    out = box.run(code)
    assert out.stdout.splitlines() == ["closed OSError"] * 2, out.output


def test_dns_lookups_never_resolve(box: Sandbox) -> None:
    code = (
        "import socket\n"
        "for name in ('localhost', 'example.com'):\n"
        "    try:\n        print(socket.gethostbyname(name))\n"
        "    except OSError as exc:\n        print('unresolved', type(exc).__name__)"
    )
    out = box.run(code)
    # WASI has no resolver: a name comes back as itself (or the lookup fails), no address
    for name, shown in zip(("localhost", "example.com"), out.stdout.splitlines(), strict=True):
        assert shown == name or shown.startswith("unresolved "), out.output


# -- output that bypasses capture -----------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.write(1, b'BYPASS-MARK\\n')",
        "import os\nos.write(2, b'BYPASS-MARK\\n')",
        "import _io\n_io.FileIO(1, 'w').write(b'BYPASS-MARK\\n')",
    ],
)
def test_raw_descriptor_writes_never_reach_the_host_terminal(
    box: Sandbox, code: str, capfd: pytest.CaptureFixture[str]
) -> None:
    out = box.run(code)
    host = capfd.readouterr()
    assert "BYPASS-MARK" not in host.out + host.err
    assert "Bad file descriptor" in out.output
    assert not out.halted


def test_dunder_streams_are_the_captured_ones(
    box: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    out = box.run(
        "import sys\nsys.__stdout__.write('to out\\n')\nsys.__stderr__.write('to err\\n')"
    )
    host = capfd.readouterr()
    assert "to out" not in host.out + host.err
    assert out.stdout == "to out\n" and "to err" in out.stderr


# -- runaway code: stopped or contained, earlier variables survive ---------------------------

HOSTILE = [
    pytest.param("while True: pass", "ResourceLimitError", True, FUEL_ONLY, id="busy-loop"),
    pytest.param("import time\ntime.sleep(1e9)", "TimeoutError", True, WALL_ONLY, id="sleep"),
    pytest.param(
        "hog = []\nwhile True:\n    hog.append(bytearray(10**7))",
        "MemoryError",
        False,
        LIMITS,
        id="memory-bomb",
    ),
    pytest.param(
        "def down(n):\n    return 0 if n == 0 else 1 + down(n - 1)\ndown(2_000_000)",
        "RecursionError",
        False,
        LIMITS,
        id="deep-recursion",
    ),
    pytest.param(
        "for _ in range(1_000):\n    print('x' * 1_000_000)",
        "bytes of output dropped",
        True,  # eryx also keeps all output inside the sandbox, and 512 MB runs out
        LIMITS,
        id="print-1GB",
    ),
    pytest.param("import sys\nsys.exit(3)", "SystemExit", True, LIMITS, id="sys.exit"),
    pytest.param("import os\nos._exit(1)", "SystemExit", True, LIMITS, id="os._exit"),
    pytest.param("raise SystemExit", "SystemExit", True, LIMITS, id="raise-SystemExit"),
]


@pytest.mark.parametrize(("code", "told", "halts", "limits"), HOSTILE)
def test_runaway_code_is_contained_and_earlier_variables_survive(
    code: str, told: str, halts: bool, limits: Limits
) -> None:
    registry = SandboxRegistry()
    ref = store_value("hello context")
    handler = Echo()
    first = "keep = [1, 2, 3]\nr = await llm_query('q')\ndef f():\n    return sum(keep) + len(r)"
    cells, out, box = run_cells(
        registry, "hostile", ref, [first, "lost = 1\n" + code], limits, handler
    )
    assert told in out.output, out.output[-500:]
    assert out.halted is halts and box.broken is halts
    assert len(out.output) < 2 * CAPTURE_LIMIT
    with registry.checkout(
        Checkout("hostile", ref, cells, limits, handler), loader("hostile")
    ) as again:
        assert (again is not box) is halts  # a halted session is rebuilt by replay
        shown = again.run("print(f(), len(context), 'lost' in dir())").stdout
    assert shown == f"9 13 {not halts}\n"  # a halted cell's own variables are gone
    assert handler.calls == ["q"]  # a rebuild serves the sub-call from the journal


def test_printing_a_gigabyte_is_reported_as_such_when_it_breaks_the_cell() -> None:
    sandbox = Sandbox(store_value("ctx"), LIMITS)
    out = sandbox.run("for _ in range(1_000):\n    print('x' * 1_000_000)")
    assert out.halted
    assert "after the cell printed" in out.error and "(print less)" in out.error, out.error
    assert len(out.stdout) < CAPTURE_LIMIT + 1_000


def test_a_json_context_at_the_depth_limit_loads_in_the_sandbox() -> None:
    from rlm_graph.storage.contexts import MAX_JSON_DEPTH

    nested: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):
        nested = [nested]
    sandbox = Sandbox(store_value(nested), LIMITS)
    out = sandbox.run(
        "d, x = 0, context\nwhile isinstance(x, list):\n    d, x = d + 1, x[0]\nprint(d)"
    )
    assert out.stdout == f"{MAX_JSON_DEPTH - 1}\n"


CRASH_PROBE = """
from rlm_graph.storage.contexts import store_value
from rlm_graph.repl.session import Limits
from rlm_graph.repl.process import IsolatedSandbox
box = IsolatedSandbox(store_value("ctx"), Limits(10.0, 5_000_000_000, 512))
box.run("keep = 1")
out = box.run("import json\\njson.loads('[' * 5000 + ']' * 5000)")
print("survived", out.halted, box.broken, out.error)
"""


def test_deeply_nested_data_in_guest_code_does_not_kill_the_host() -> None:
    # In-process, eryx aborts the whole host here ('execution on async fiber has
    # overflowed its stack'); each sandbox lives in a child process for that reason.
    done = python_probe(CRASH_PROBE, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("survived True True SandboxCrash:"), done.stdout
    assert "nested too deeply" in done.stdout


# -- end to end: the run continues and the model is told ------------------------------------


@pytest.mark.parametrize(
    ("hostile", "told"),
    [
        ("while True: pass", "ResourceLimitError"),
        ("import os\nos._exit(0)", "SystemExit"),
        ("import os\nos.write(1, b'escape')", "Bad file descriptor"),
        ("import subprocess\nsubprocess.run(['id'])", "does not support processes"),
        ("import json\njson.loads('[' * 5000 + ']' * 5000)", "nested too deeply"),
    ],
)
def test_a_run_survives_hostile_cells_and_keeps_earlier_variables(
    stub: Any, hostile: str, told: str
) -> None:
    script = Script([tool("keep = 41"), tool(hostile), tool("FINAL(keep + 1)")])
    server = stub(script)
    result = answer("q", "ctx", **fast_settings(server, cell_cpu_instructions=5_000_000_000))
    assert (result.answer, result.status, result.iterations) == (42, "answered", 3)
    third = json.dumps(server.requests[2].body)
    assert told in third


def test_api_keys_never_reach_sub_call_prompts_or_the_answer(stub: Any) -> None:
    code = (
        "import os\n"
        "dump = repr(dict(os.environ))\n"
        "reply = await llm_query('env: ' + dump)\n"
        "FINAL(dump + reply)"
    )
    server = stub(Script([tool(code)]))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.status == "answered"
    assert "PYTHONHOME" in result.answer  # the guest's environment was really dumped
    assert any("env: {" in json.dumps(r.body) for r in server.requests)
    for request in server.requests:
        assert SECRET not in json.dumps(request.body)
    assert SECRET not in json.dumps(result.state, default=str)


def test_a_provider_error_echoing_the_key_reaches_the_guest_redacted(stub: Any) -> None:
    echoed = StubReply(status=401, error=f"Incorrect API key provided: {SECRET}")
    code = "try:\n    await llm_query('hi')\nexcept SubCallFailed as exc:\n    FINAL(str(exc))"
    server = stub(Script([tool(code)], sub=lambda prompt: echoed))
    result = answer("q", "ctx", **fast_settings(server))
    assert "Incorrect API key provided: [OPENAI_API_KEY redacted]" in result.answer
    assert SECRET not in json.dumps(result.state, default=str)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("FINAL('x' * 20_000_000)", "over the 16,777,216 an answer may hold"),
        (
            "class Opaque:\n    def __repr__(self):\n        raise ValueError('no repr')\n"
            "FINAL(Opaque())",
            "could not be taken out of the sandbox (ValueError: no repr)",
        ),
        (
            "class Opaque:\n    def __repr__(self):\n        raise ValueError('no repr')\n"
            "answer = {'content': Opaque(), 'ready': True}",
            "could not be taken out of the sandbox (ValueError: no repr)",
        ),
        # eryx gives no JSON for these: once dropped without a word (issue 13)
        (
            "FINAL(float('nan'))",
            "(ValueError: Out of range float values are not JSON compliant: nan)",
        ),
        ("FINAL(float('inf'))", "not JSON compliant: inf)"),
        ("FINAL({'rows': [1, float('-inf')]})", "not JSON compliant: -inf)"),
        ("answer = {'content': float('nan'), 'ready': True}", "not JSON compliant: nan)"),
        ("loop = []\nloop.append(loop)\nFINAL(loop)", "(ValueError: Circular reference detected)"),
        ("FINAL({(1, 2): 'tuple key'})", "(TypeError: keys must be str, int, float, bool or None"),
    ],
)
def test_an_answer_that_cannot_leave_the_sandbox_is_an_error_not_a_crash(
    box: Sandbox, code: str, message: str
) -> None:
    out = box.run(code)
    assert out.final is None and not out.halted
    assert out.error.startswith("FinalError: ") and message in out.error, out.error
    again = box.run("FINAL(1)")  # nothing left half-collected
    assert (again.final, again.error) == ({"value": 1}, "")


def test_an_answer_that_is_not_a_number_is_told_and_the_run_answers_after(stub: Any) -> None:
    server = stub(Script([tool("FINAL(float('nan'))"), tool("FINAL(1.5)")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert (result.answer, result.status, result.iterations) == (1.5, "answered", 2)
    second = json.dumps(server.requests[1].body)
    assert "FinalError: the answer could not be taken out of the sandbox" in second
    assert "not JSON compliant: nan" in second


# -- guest tampering with the prelude: the guest's problem, never the host's -----------------

COLLECTOR_RETURNS = "def _rlm_collect():\n    global _rlm_result\n    _rlm_result = {}"
TAMPERING = [
    pytest.param("_rlm_result = 5\nFINAL(1)", {"value": 1}, "", id="result-variable"),
    pytest.param(COLLECTOR_RETURNS.format("5"), None, "_rlm_collect() left 5,", id="int"),
    pytest.param(COLLECTOR_RETURNS.format("{'x': 1}"), None, 'left {"x": 1},', id="dict"),
    pytest.param(COLLECTOR_RETURNS.format("[1]"), None, "left [1],", id="list"),
    pytest.param(COLLECTOR_RETURNS.format("float('nan')"), None, "left no JSON,", id="nan"),
    pytest.param("del _rlm_collect", None, "(NameError: name '_rlm_collect'", id="deleted"),
    pytest.param(
        COLLECTOR_RETURNS.format("{'read': 'lots', 'value': 1}"),
        None,
        'left {"read": "lots", "value": 1},',
        id="read-str",
    ),
    pytest.param(COLLECTOR_RETURNS.format("{'read': -1}"), None, "left {", id="read-negative"),
    pytest.param("_rlm_scan = None", None, "(TypeError: 'NoneType' object is not", id="scan"),
    pytest.param("_rlm_final = 5", None, "(AttributeError: 'int' object", id="final-list"),
    pytest.param("FINAL = print", None, "", id="FINAL"),
    pytest.param("_rlm_jsonable = lambda value: 'mine'", {"value": "mine"}, "", id="jsonable"),
]


@pytest.mark.parametrize(("tamper", "final", "told"), TAMPERING)
def test_a_redefined_collector_is_an_error_the_model_reads(
    tamper: str, final: dict[str, Any] | None, told: str
) -> None:
    # Through the one cell step, as the execute node runs it: the host raised there
    # (outcome.final["value"] of an int), and again at every resume of the thread.
    ref = store_value("ctx")
    steps = [tamper, "FINAL(1)"]
    cells, out, _ = run_cells(SandboxRegistry(), "tamper", ref, steps, LIMITS, Echo())
    assert (out.final, out.halted) == (final, False)
    assert ("FinalError: " in out.error and told in out.error) if told else not out.error
    # A resume elsewhere replays the tampering cell and runs the next one (which may
    # be told again: the collector stays what the guest made it)
    again_at = Checkout("tamper", ref, cells, LIMITS, Echo())
    with SandboxRegistry().checkout(again_at, loader("tamper")) as box:
        again = box.run("print('still runs')")
    assert (again.stdout, again.halted) == ("still runs\n", False)


@pytest.mark.parametrize(
    "tamper", ["_rlm_random = None", "import random\nrandom.seed = 5", "del FINAL, llm_query"]
)
def test_redefined_helpers_never_stop_later_cells(box: Sandbox, tamper: str) -> None:
    # A broken seed once failed every later cell before its code ran; a deleted FINAL
    # once made every later error a halt that lost the erring cell's variables.
    box.run(tamper)
    out = box.run("kept = 1\n1 / 0")
    assert "ZeroDivisionError" in out.error and not out.halted, out.error
    assert box.run("print(kept)").stdout == "1\n"


def test_tampering_runs_leave_no_process_fd_or_sandbox_behind(stub: Any) -> None:
    server = stub(Script([tool(COLLECTOR_RETURNS.format("5")), "FINAL(told)"]))
    settings = fast_settings(server)
    answer("q", "ctx", **settings)  # the worker pool and the clients' connections
    before = (sorted(sandbox_processes()), len(os.listdir("/proc/self/fd")), len(REGISTRY))
    for _ in range(4):
        result = answer("q", "ctx", **settings)
        assert (result.answer, result.status) == ("told", "answered")
    after = (sorted(sandbox_processes()), len(os.listdir("/proc/self/fd")), len(REGISTRY))
    assert after == before
    # each run's model read why its FINAL was not taken
    assert "_rlm_collect() left 5, not an answer" in json.dumps(server.requests[-1].body)
