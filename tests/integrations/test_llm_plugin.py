"""The `llm` plugin, offline: scripted models registered through llm's own hook.

Every model call goes through llm (its plugin manager, model resolution, key lookup
and, for the toolbox, its chain/tool loop); the scripted models record every prompt
they are sent, so the tests can check that the context never reaches one. Two tests
use llm's own OpenAI plugin against the stub server, so the wire format is real too.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llm
import pytest
from click.testing import CliRunner, Result
from llm.cli import cli
from support import Script

from rlm_graph.api import answer
from rlm_graph.cli.main import main as rlm_main
from rlm_graph.integrations.llm.toolbox import RLM, ToolboxError, session_file
from rlm_graph.models.loading import ModelConfigError, load_chat_model
from rlm_graph.offline.stub_server import (
    Responder,
    StubReply,
    StubServer,
    last_user_text,
    replies_so_far,
)
from rlm_graph.offline.stub_server import tool_reply as stub_tool
from rlm_graph.repl.registry import REGISTRY

NEEDLE = "NEEDLE-7F3A"
SUB_KEY = "sk-sub-secret-41"
Reply = str | tuple[str, dict[str, Any]]


@dataclass(eq=False)
class Scripted(llm.KeyModel):  # type: ignore[misc]
    """A model that replies from a script by how many replies it gave in the conversation.

    A reply is text, or ``(tool name, arguments)`` for a tool call. Without a script it
    answers the last user message upper-cased (a sub model).
    """

    model_id: str
    script: Sequence[Reply] = ()
    supports_tools: bool = True
    needs_key: str | None = None
    key_env_var: str | None = None
    prompts: list[str] = field(default_factory=list)
    tools: list[list[str]] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any, key: Any) -> Any:
        messages = prompt.messages
        self.prompts.append(json.dumps([m.to_dict() for m in messages]))
        self.tools.append([tool.name for tool in prompt.tools])
        self.keys.append(key)
        if not self.script:
            yield _text(messages[-1]).upper()
            return
        done = sum(m.role == "assistant" for m in messages)
        reply = self.script[min(done, len(self.script) - 1)]
        if isinstance(reply, str):
            yield reply
            return
        name, arguments = reply
        response.add_tool_call(llm.ToolCall(name=name, arguments=arguments))
        yield ""


def _text(message: Any) -> str:
    return "".join(getattr(part, "text", "") for part in message.parts)


@pytest.fixture(autouse=True)
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """llm's keys, logs and default model live in a temporary directory, never in ~."""
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    load_chat_model.cache_clear()
    yield home
    load_chat_model.cache_clear()


Register = Callable[..., None]


@pytest.fixture
def models() -> Iterator[Callable[..., None]]:
    """Register scripted models with llm for one test, through the register_models hook."""
    plugin = types.ModuleType("rlm_test_models")
    registered: list[Scripted] = []

    @llm.hookimpl  # type: ignore[misc]
    def register_models(register: Register) -> None:
        for model in registered:
            register(model)

    plugin.register_models = register_models  # type: ignore[attr-defined]
    llm.pm.register(plugin, name="rlm_test_models")

    def add(*new: Scripted) -> None:
        registered.extend(new)

    yield add
    llm.pm.unregister(name="rlm_test_models")


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A 60 KB document whose one interesting line is far past any preview."""
    path = tmp_path / "big.txt"
    path.write_text("filler line\n" * 5_000 + f"the code is {NEEDLE}\n" + "tail\n" * 100)
    return path


def run_llm(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def run(code: str) -> Reply:
    return ("RLM_execute_python", {"code": code})


def tool_results(model: Scripted) -> list[str]:
    """The outputs of tool calls the model was shown, from its last prompt."""
    messages = json.loads(model.prompts[-1])
    return [
        part["output"]
        for message in messages
        for part in message["parts"]
        if part["type"] == "tool_result"
    ]


# -- plugin registration ----------------------------------------------------------------


def test_llm_plugins_lists_the_plugin_with_both_hooks() -> None:
    result = run_llm("plugins")
    assert result.exit_code == 0, result.output
    plugins = {p["name"]: p for p in json.loads(result.output)}
    assert set(plugins["rlm-graph"]["hooks"]) == {"register_tools", "register_commands"}


def test_llm_tools_lists_the_toolbox_and_its_tools() -> None:
    result = run_llm("tools")
    assert result.exit_code == 0, result.output
    for tool in ("RLM_load_context", "RLM_execute_python", "RLM_submit_answer"):
        assert tool in result.output


# -- the toolbox, through llm's own chain -----------------------------------------------


def test_toolbox_chain_keeps_variables_and_never_shows_the_context(
    models: Callable[..., None], big: Path
) -> None:
    root = Scripted(
        "rlm-root",
        [
            ("RLM_load_context", {"path": "big.txt"}),
            run("hits = [l for l in context.splitlines() if 'NEEDLE' in l]"),
            run("reply = await llm_query('shout ' + hits[0])\nprint(len(context), reply)"),
            ("RLM_submit_answer", {"variable": "reply"}),
            "The answer is in.",
        ],
    )
    sub = Scripted("rlm-sub")
    models(root, sub)
    toolbox = RLM(sub_model="rlm-sub")
    conversation = llm.get_model("rlm-root").conversation(tools=[toolbox], chain_limit=10)
    chain = conversation.chain("Find the code.")
    assert chain.text().endswith("The answer is in.")
    outputs = tool_results(root)
    assert outputs[0].startswith("Loaded big.txt: `context` is a str of ")
    assert outputs[2] == f"{big.stat().st_size} SHOUT THE CODE IS {NEEDLE}"
    assert toolbox.answer == f"SHOUT THE CODE IS {NEEDLE}"
    # The sub model read what the code sent; the root model only what code printed.
    assert sub.prompts and NEEDLE in sub.prompts[0]
    assert all("filler line\\nfiller line\\n" * 50 not in p for p in root.prompts + sub.prompts)
    assert not any(NEEDLE in p for p in root.prompts[:3])


def test_cli_toolbox_with_a_session_gets_its_variables_back_in_a_new_process(
    models: Callable[..., None], big: Path
) -> None:
    """`llm -c` builds a new toolbox from the stored arguments; the session replays."""
    root = Scripted(
        "rlm-root",
        [
            run("reply = await llm_query('once')\nprint(reply)"),
            "Stored.",
            run("print('again:', reply)"),
            "Recalled.",
        ],
    )
    sub = Scripted("rlm-sub")
    models(root, sub)
    session = f"notes-{uuid.uuid4().hex}"  # sessions outlive a test run: never reuse one
    spec = json.dumps({"context": str(big), "sub_model": "rlm-sub", "session": session})
    first = run_llm("-m", "rlm-root", "-T", f"RLM({spec})", "--cl", "10", "Remember it.")
    assert first.exit_code == 0, first.output
    assert "Stored." in first.output
    # A new process has no live sandbox: drop this one, as if the process had ended.
    saved = json.loads(session_file(session).read_text())
    REGISTRY.release(saved["sandbox_id"])
    second = run_llm("-c", "--cl", "10", "What was it?")
    assert second.exit_code == 0, second.output
    assert "Recalled." in second.output
    assert tool_results(root)[-1] == "again: ONCE"
    assert len(sub.prompts) == 1  # the replay served the recorded answer


def test_sub_calls_use_the_users_llm_key_which_never_enters_the_sandbox(
    models: Callable[..., None], big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_FAKE_KEY", SUB_KEY)
    root = Scripted(
        "rlm-root",
        [
            run("import os\nprint(sorted(os.environ.items()), await llm_query('hi'))"),
            "Done.",
        ],
    )
    sub = Scripted("rlm-sub", needs_key="rlmfake", key_env_var="RLM_FAKE_KEY")
    models(root, sub)
    toolbox = RLM(str(big), sub_model="rlm-sub")
    llm.get_model("rlm-root").conversation(tools=[toolbox]).chain("Go.").text()
    assert sub.keys == [SUB_KEY]
    (output,) = tool_results(root)
    assert output.endswith("HI") and SUB_KEY not in output


def test_toolbox_keeps_earlier_variables_when_a_cell_is_stopped(big: Path) -> None:
    # The replay of the first cell has the same limit: 3 s is room on a loaded machine
    toolbox = RLM(str(big), sub_model="rlm-sub", cell_timeout=3.0)
    assert toolbox.execute_python("kept = len(context)") == "(no output)"
    assert toolbox.execute_python("while True: pass").startswith("TimeoutError: the cell ran")
    assert toolbox.execute_python("print(kept)") == str(big.stat().st_size)


def test_toolbox_sub_calls_are_sub_rlms_at_depth_two(
    models: Callable[..., None], big: Path
) -> None:
    child = Scripted("rlm-sub", [("execute_python", {"code": "FINAL(context[::-1])"})])
    models(child)
    toolbox = RLM(str(big), sub_model="rlm-sub", max_depth=2)
    assert toolbox.execute_python("print(await llm_query('abc'))") == "cba"
    assert "Question: The variable `context` holds a request" in child.prompts[0]


def test_toolbox_budget_refuses_sub_calls_past_max_sub_calls(
    models: Callable[..., None], big: Path
) -> None:
    root = Scripted("rlm-root", [run("print(await llm_batch(['a', 'b']))"), "Done."])
    sub = Scripted("rlm-sub")
    models(root, sub)
    toolbox = RLM(str(big), sub_model="rlm-sub", max_sub_calls=1)
    llm.get_model("rlm-root").conversation(tools=[toolbox]).chain("Go.").text()
    (output,) = tool_results(root)
    assert "sub-call budget exhausted: 2 requested, 1 of 1 left (max_sub_calls)" in output
    assert sub.prompts == []


def test_toolbox_budget_counts_the_sub_calls_of_all_cells_together(
    models: Callable[..., None], big: Path
) -> None:
    models(Scripted("rlm-sub"))
    toolbox = RLM(str(big), sub_model="rlm-sub", max_sub_calls=2)
    assert toolbox.execute_python("print(await llm_query('a'))") == "A"
    assert toolbox.execute_python("print(await llm_query('b'))") == "B"
    third = toolbox.execute_python("print(await llm_query('c'))")
    assert "SubCallFailed: sub-call budget exhausted: 1 requested" in third


def test_toolbox_shows_head_and_tail_past_max_output_chars_and_records_a_given_answer(
    big: Path,
) -> None:
    toolbox = RLM(str(big), sub_model="rlm-sub", max_output_chars=200)
    shown = toolbox.execute_python("print('HEAD' + 'x' * 5000 + 'TAIL')")
    assert len(shown) <= 200
    assert shown.startswith("HEADxxx") and shown.endswith("xxxTAIL")
    assert "[... 4,8" in shown  # the cut is marked, with how much was left out
    assert toolbox.submit_answer(answer="forty-two") == "Answer recorded: forty-two"
    assert toolbox.answer == "forty-two"


def test_model_cannot_load_files_outside_the_working_directory_or_llms_keys(
    models: Callable[..., None], tmp_path_factory: pytest.TempPathFactory, llm_home: Path
) -> None:
    (llm_home / "keys.json").write_text('{"openai": "sk-real"}')
    outside = tmp_path_factory.mktemp("elsewhere") / "outside.txt"
    outside.write_text("private")
    root = Scripted(
        "rlm-root",
        [
            ("RLM_load_context", {"path": str(outside)}),
            ("RLM_load_context", {"path": "llm-home/keys.json"}),
            ("RLM_load_context", {"path": "."}),
            "Done.",
        ],
    )
    models(root)
    llm.get_model("rlm-root").conversation(tools=[RLM()]).chain("Go.").text()
    refusals = tool_results(root)
    assert "only paths below the working directory" in refusals[0]
    assert all("it holds llm's keys and logs" in r for r in refusals[1:])
    assert not any("sk-real" in p for p in root.prompts)


def test_toolbox_reads_stdin_and_final_in_code_records_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped caf\xc3\xa9")))
    toolbox = RLM("-", sub_model="rlm-sub")
    assert (
        toolbox.execute_python("FINAL(context.upper())")
        == "(no output)\n[answer recorded; tell the user]"
    )
    assert toolbox.answer == "PIPED CAFÉ"


def test_an_unreadable_session_file_is_a_one_line_error() -> None:
    session = f"broken-{uuid.uuid4().hex}"
    session_file(session).parent.mkdir(parents=True, exist_ok=True)
    session_file(session).write_text('{"cells": [{"code": "x = 1"}]}')
    with pytest.raises(ToolboxError, match=r"is unreadable \(its cells are not cell references\)"):
        RLM(session=session)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('RLM("missing.txt")', "Error: RLM: context path"),
        ("RLM(max_depth=0)", "Error: RLM: setting max_depth=0 is out of range"),
        ('RLM("-")', "Error: RLM: stdin is empty"),
    ],
)
def test_bad_toolbox_arguments_are_one_line_errors(
    models: Callable[..., None], spec: str, message: str
) -> None:
    root = Scripted("rlm-root", ["unused"])
    models(root)
    result = CliRunner().invoke(cli, ["-m", "rlm-root", "-T", spec, "-n", "Go."], input="")
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert root.prompts == []


# -- `llm rlm`: the whole graph with llm's models ---------------------------------------


def test_llm_rlm_runs_the_graph_with_llm_models_and_prints_the_answer(
    models: Callable[..., None], big: Path
) -> None:
    code = "hits = [l for l in context.splitlines() if 'NEEDLE' in l]\n"
    code += "reply = await llm_query('shout ' + hits[0])\nprint(len(hits))"
    root = Scripted("rlm-root", [("execute_python", {"code": code}), "FINAL_VAR(reply)"])
    sub = Scripted("rlm-sub")
    models(root, sub)
    result = run_llm(
        "rlm",
        "Find the code.",
        "-f",
        str(big),
        "-m",
        "rlm-root",
        "--sub-model",
        "rlm-sub",
        "--max-iterations",
        "4",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"SHOUT THE CODE IS {NEEDLE}\n"
    assert len(root.prompts) == 2 and not any(NEEDLE in p for p in root.prompts)
    assert root.tools[0] == ["execute_python"]
    assert '"output": "1"' in root.prompts[1]  # the tool result went back as a tool part


def test_llm_rlm_reads_stdin_and_works_with_models_without_tools(
    models: Callable[..., None],
) -> None:
    root = Scripted(
        "rlm-plain",
        ["```repl\nFINAL(context.split()[1])\n```"],
        supports_tools=False,
    )
    models(root)
    result = run_llm("rlm", "Second word?", "-m", "rlm-plain", "--json", stdin="one two three")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["answer"], report["status"], report["iterations"]) == ("two", "answered", 1)
    assert root.tools == [[]]


def test_llm_rlm_stops_at_max_iterations_with_a_best_effort_answer(
    models: Callable[..., None], big: Path
) -> None:
    root = Scripted("rlm-root", [("execute_python", {"code": "print(1)"}), "My best guess."])
    models(root)
    result = run_llm("rlm", "Q?", "-f", str(big), "-m", "rlm-root", "--max-iterations", "1")
    assert result.exit_code == 3
    assert result.stdout.splitlines() == [
        "[budget exhausted after 1 iteration: best-effort answer]",
        "My best guess.",
    ]


def test_llm_rlm_unknown_model_is_a_one_line_usage_error(big: Path) -> None:
    result = run_llm("rlm", "Q?", "-f", str(big), "-m", "no-such-model")
    assert result.exit_code == 2
    assert result.output == (
        "Error: cannot use model 'llm:no-such-model': Unknown model: no-such-model "
        "(`llm models` lists them)\n"
    )


# -- llm's own OpenAI plugin, against the OpenAI-compatible stub ------------------------


@pytest.fixture
def stub_models(
    stub: Callable[[Responder], StubServer], llm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Responder], StubServer]:
    """Models stub-root and stub-sub of llm's OpenAI plugin, served by a stub server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-stub")

    def start(responder: Responder) -> StubServer:
        server = stub(responder)
        (llm_home / "extra-openai-models.yaml").write_text(
            "".join(
                f"- model_id: {name}\n  model_name: {name}\n  api_base: {server.base_url}\n"
                "  supports_tools: true\n"
                for name in ("stub-root", "stub-sub")
            )
        )
        return server

    return start


def test_llm_rlm_through_llms_openai_plugin(
    stub_models: Callable[[Responder], StubServer], big: Path
) -> None:
    code = "hits = [l for l in context.splitlines() if 'NEEDLE' in l]\n"
    code += "reply = await llm_query('shout ' + hits[0])\nprint(len(hits))"
    server = stub_models(Script([stub_tool(code), "FINAL_VAR(reply)"], sub=str.upper))
    result = run_llm(
        "rlm", "Find it.", "-f", str(big), "-m", "stub-root", "--sub-model", "stub-sub", "--quiet"
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"SHOUT THE CODE IS {NEEDLE}\n"
    first, sub, second = (r.body for r in server.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["execute_python"]
    assert sub["messages"] == [{"role": "user", "content": f"shout the code is {NEEDLE}"}]
    call_id = second["messages"][2]["tool_calls"][0]["id"]
    assert second["messages"][3] == {"role": "tool", "tool_call_id": call_id, "content": "1"}
    assert not any(NEEDLE in json.dumps(body) for body in (first, second))


def test_toolbox_through_llms_openai_plugin(
    stub_models: Callable[[Responder], StubServer], big: Path
) -> None:
    def respond(body: dict[str, Any]) -> StubReply | str:
        if not body.get("tools"):  # a sub-call
            return last_user_text(body).upper()
        script = [
            StubReply(
                content=None,
                tool_calls=[{"name": "RLM_execute_python", "arguments": {"code": "n = 2"}}],
            ),
            StubReply(
                content=None,
                tool_calls=[
                    {
                        "name": "RLM_execute_python",
                        "arguments": {"code": "print(n, await llm_query('hi'))"},
                    }
                ],
            ),
            "Two.",
        ]
        return script[min(replies_so_far(body), len(script) - 1)]

    server = stub_models(respond)
    spec = f'RLM(context="{big}", sub_model="stub-sub")'
    result = run_llm("-m", "stub-root", "-T", spec, "Go.")
    assert result.exit_code == 0, result.output
    assert result.output == "Two.\n"
    last = server.requests[-1].body["messages"]
    assert last[-1] == {
        "role": "tool",
        "tool_call_id": last[-2]["tool_calls"][0]["id"],
        "content": "2 HI",
    }
    assert not any(NEEDLE in json.dumps(r.body) for r in server.requests)


# -- `llm:` models anywhere a model is named --------------------------------------------


def test_python_api_takes_llm_models_by_prefix(models: Callable[..., None]) -> None:
    root = Scripted("rlm-root", [("execute_python", {"code": "FINAL(await llm_query('x'))"})])
    sub = Scripted("rlm-sub")
    models(root, sub)
    result = answer("Q?", "some text", model="llm:rlm-root", sub_model="llm:rlm-sub")
    assert (result.status, result.answer) == ("answered", "X")
    assert set(result.tokens) == {"llm:rlm-root", "llm:rlm-sub"}


def test_rlm_run_takes_llm_models_by_prefix(
    models: Callable[..., None], big: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models(Scripted("rlm-root", [("execute_python", {"code": "FINAL(len(context))"})]))
    status = rlm_main(["run", "--model", "llm:rlm-root", "--context", str(big), "--quiet", "Q?"])
    assert (status, capsys.readouterr().out) == (0, f"{big.stat().st_size}\n")


def test_llm_models_without_the_llm_package_name_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "rlm_graph.models.llm_cli", None)  # as if llm were missing
    with pytest.raises(ModelConfigError, match=r"pip install 'rlm-graph\[llm\]'"):
        load_chat_model("llm:4o", "", 10.0, 0)


# -- every `llm` command the README shows, through llm's own CLI ------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
COUNT_RUNS = "runs = globals().get('runs', 0) + 1\nprint(len(context), runs)"


def readme_llm_commands() -> list[str]:
    """The commands of the README's section for llm users, one line each, comments cut."""
    section = README.read_text(encoding="utf-8").split("## For `llm` users", 1)[1]
    blocks = re.findall(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    lines = "".join(blocks).replace("\\\n", " ").splitlines()
    return [re.split(r"\s+# ", line, maxsplit=1)[0].strip() for line in lines if line.strip()]


def readme_model(body: dict[str, Any]) -> StubReply | str:
    """The stub's root and sub models for the README's commands.

    `llm rlm` (the graph's ``execute_python`` tool) answers with the context's length; the
    toolbox loads a file when asked to ("load PATH"), runs :data:`COUNT_RUNS` and says
    what it printed; a sub-call is answered upper-cased.
    """
    tools = [tool["function"]["name"] for tool in body.get("tools") or []]
    if not tools:
        return last_user_text(body).upper()
    if "execute_python" in tools:
        return stub_tool("FINAL(len(context))")
    last = body["messages"][-1]
    if last["role"] == "tool" and not last["content"].startswith("Loaded"):
        return f"Printed: {last['content']}"
    if last["role"] == "user" and last_user_text(body).startswith("load "):
        call = {"name": "RLM_load_context", "arguments": {"path": last_user_text(body)[5:]}}
    else:
        call = {"name": "RLM_execute_python", "arguments": {"code": COUNT_RUNS}}
    return StubReply(content=None, tool_calls=[call])


def run_readme_command(command: str) -> Result:
    """One README command through llm's CLI; ``cat FILE | llm ...`` pipes FILE to it."""
    stdin = "load big.log\nquit\n" if command.startswith("llm chat") else None
    if " | " in command:
        source, command = command.split(" | ")
        stdin = Path(shlex.split(source)[1]).read_text()
    program, *args = shlex.split(command)
    assert program == "llm", command
    return run_llm(*args, stdin=stdin)


def test_every_llm_command_in_the_readme_runs(
    stub_models: Callable[[Responder], StubServer], llm_home: Path, big: Path
) -> None:
    """llm's parser takes ``RLM("path")`` or ``RLM(key=value, ...)``, never both: the
    README must show only forms that parse, and every one of them must run."""
    stub_models(readme_model)
    (llm_home / "aliases.json").write_text(json.dumps({"4o": "stub-root", "4o-mini": "stub-sub"}))
    (llm_home / "default_model.txt").write_text("stub-root")
    big.rename("big.log")
    size = Path("big.log").stat().st_size
    Path("dump.json").write_text(json.dumps({"errors": [500, 404, 500]}))
    Path("docs").mkdir()
    for name in ("a.md", "b.md"):
        Path("docs", name).write_text(f"document {name}\n")
    session = f"crashes-{uuid.uuid4().hex}"  # sessions outlive a test run: never reuse one
    commands = readme_llm_commands()
    assert commands[0].startswith("llm install -e ")  # installs: how this venv was made
    outputs = []
    for command in commands[1:]:
        result = run_readme_command(command.replace('session="crashes"', f'session="{session}"'))
        assert result.exit_code == 0, f"{command}\n{result.output}"
        outputs.append(result.stdout)
    plugins, tools, *graph_runs, one_shot, with_session, follow_up, chat = outputs
    assert "rlm-graph" in plugins and "RLM_execute_python" in tools
    assert graph_runs[0] == f"{size}\n" and json.loads(graph_runs[2])["answer"] == 2
    assert [one_shot, with_session] == [f"Printed: {size} 1\n"] * 2
    assert follow_up == f"Printed: {size} 2\n"  # same session: same variables
    assert f"Printed: {size} 1" in chat
