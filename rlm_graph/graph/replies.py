"""Reading a root model's reply: the code to run and any final answer it claims.

Models speak several protocols: an ``execute_python`` tool call, fenced ```repl or
```python blocks, ``FINAL(...)`` / ``FINAL_VAR(name)`` written outside code. All of them
are accepted here so that models with and without tool calling work alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage

from rlm_graph.models.messages import message_text

TOOL_NAME = "execute_python"

_FENCE = re.compile(
    r"```[ \t]*(repl|python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE
)
_FINAL_VAR = re.compile(
    r"^\s*FINAL_VAR\(\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?\s*\)\s*$", re.MULTILINE
)
_FINAL = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.MULTILINE | re.DOTALL)
# Tool calls a server wrote into the text instead of sending them (issue 18: llama.cpp
# with a model's own template): a JSON object in a fence of any tag, or in the
# <tool_call> tags of Qwen's and Hermes' templates.
_WRITTEN_CALL = re.compile(
    r"```[ \t]*\w*[ \t]*\n(\{.*?\})\s*```|<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL
)
_FINAL_NAMES = {"final", "final_answer", "answer"}
_ONE_WORD = re.compile(r"^\s*[\w.]+\s*$")


@dataclass(frozen=True)
class ParsedReply:
    """What a reply asks for; ``problem`` explains a reply that cannot be acted on."""

    text: str
    code: str = ""
    tool_call_id: str = ""
    final_text: str | None = None
    final_var: str | None = None
    problem: str = ""


def _strip_fences(text: str) -> str:
    return _FENCE.sub("", text)


def cut_off(message: AIMessage) -> str:
    """Why a reply stopped before its end, or "" when it is complete.

    The client repairs the half of a tool call's JSON that arrived into valid arguments,
    so a cut-off reply looks like a shorter program: running it would execute code the
    model never finished. OpenAI-compatible replies always end with a finish_reason; a
    stream that broke off has none.
    """
    meta = message.response_metadata or {}
    if meta.get("finish_reason") == "length" or meta.get("stop_reason") == "max_tokens":
        return "it reached the output token limit"
    if meta.get("model_provider") == "openai" and not meta.get("finish_reason"):
        return "the connection ended before the reply was complete"
    return ""


def parse_reply(message: AIMessage, *, tool_calling: bool = True) -> ParsedReply:
    """Extract code and final-answer claims from one root-model reply.

    ``tool_calling`` says whether the model was offered the tool: a reply with nothing
    to act on is told the way to send code that it has.
    """
    text = message_text(message)
    if reason := cut_off(message):
        return ParsedReply(
            text=text,
            problem=f"your reply was cut off ({reason}), so none of it was run: send it "
            "again, shorter if needed",
        )
    codes: list[str] = []
    tool_call_id = ""
    problem = ""
    for call in message.tool_calls:
        if call["name"] != TOOL_NAME:
            problem = f"unknown tool {call['name']!r}: the only tool is {TOOL_NAME}(code)"
            continue
        code = call["args"].get("code")
        if not isinstance(code, str):
            problem = f"{TOOL_NAME} needs a string argument 'code'"
            continue
        codes.append(code)
        tool_call_id = tool_call_id or str(call.get("id") or "")
    for bad in message.invalid_tool_calls:
        problem = (
            f"the arguments of tool call {bad.get('name')!r} were not valid JSON "
            f"({bad.get('error') or 'unparseable'}); send the code again"
        )
    written_final = None
    fences = [m.group(2) for m in _FENCE.finditer(text)]
    if not codes:
        codes = [body for body in fences if is_code(body)]
    if not codes:
        codes, written_final = written_calls(text)
    outside = _strip_fences(text)
    final_var = None
    final_text = written_final
    if match := _FINAL_VAR.search(outside):
        final_var = match.group(1)
    elif match := _FINAL.search(outside):
        final_text = _unquote(match.group(1).strip())
    code = "\n\n".join(c.strip("\n") for c in codes if c.strip())
    if not code and final_var is None and final_text is None and not problem:
        problem = no_code_note(tool_calling, skipped=any(b.strip() for b in fences))
    return ParsedReply(
        text=text,
        code=code,
        tool_call_id=tool_call_id,
        final_text=final_text,
        final_var=final_var,
        problem=problem if not code else "",
    )


def how_to_run(tool_calling: bool) -> str:
    """How a model sends code in this run: the tool only when it was offered."""
    if tool_calling:
        return f"call the {TOOL_NAME} tool with Python code (or write a ```repl block)"
    return "write Python code in a ```repl block (there is no tool to call)"


def no_code_note(tool_calling: bool, *, skipped: bool) -> str:
    """What a reply with nothing to act on is told: how to send code in this run."""
    why = (
        " (a fenced block holding only JSON or one word is not run: print(name) shows a variable)"
        if skipped
        else ""
    )
    return (
        f"no code and no final answer found{why}: {how_to_run(tool_calling)} to run code, "
        "or reply "
        "FINAL(answer) / FINAL_VAR(name) to finish"
    )


def is_code(body: str) -> bool:
    """Whether a fence holds a program: small models fence JSON and lone words.

    Run as Python, ``{"name": ..., "arguments": {..., true}}`` failed with
    ``NameError: name 'true'`` eight times in one run, and a fenced ``repl`` once more.
    """
    if _ONE_WORD.match(body):
        return False
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


def written_calls(text: str) -> tuple[list[str], str | None]:
    """The code and the final answer of tool calls written into ``text`` as JSON."""
    codes: list[str] = []
    final: str | None = None
    for match in _WRITTEN_CALL.finditer(text):
        try:
            call = json.loads(match.group(1) or match.group(2))
        except ValueError:
            continue
        name, arguments = _call_parts(call)
        if name == TOOL_NAME and isinstance(arguments.get("code"), str):
            codes.append(arguments["code"])
        elif name.lower() in _FINAL_NAMES and arguments and final is None:
            value = next(iter(arguments.values()))
            final = value if isinstance(value, str) else json.dumps(value)
    return codes, final


def _call_parts(call: Any) -> tuple[str, dict[str, Any]]:
    """A written call's name and arguments (which some templates send as a JSON string)."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return "", {}
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return call["name"], {}
    return call["name"], arguments if isinstance(arguments, dict) else {}


def _unquote(value: str) -> str:
    """``FINAL("x")`` means the text x, not the quoted literal."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            loaded = json.loads(value) if value[0] == '"' else value[1:-1]
        except json.JSONDecodeError:
            loaded = value[1:-1]
        return str(loaded)
    return value
