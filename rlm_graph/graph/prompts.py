"""What the root model reads: the system prompt and the rendered history of cells.

The context is described, never included: its kind, size and a short preview. The
model sees each cell's code and the truncated output, as tool messages when it used
the tool and as user messages when it wrote fenced blocks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage

from rlm_graph.graph.replies import TOOL_NAME
from rlm_graph.graph.state import TurnRecord
from rlm_graph.storage.contexts import ContextRef
from rlm_graph.storage.records import Cell
from rlm_graph.text import preview, truncate

SYSTEM_PROMPT = """\
You answer a question about a context that is far too large to read at once. The
context lives in a persistent Python REPL as the variable `context`:
{context_description}
Preview of the start:
<<<
{context_preview}
>>>
{lazy_note}
Work by writing Python code. Each cell runs in the same REPL, so variables persist.
{code_protocol}
Only what you print() is shown to you, at most {max_output_chars:,} characters per cell
(longer output keeps its head and tail). Inspect, then narrow down; do not try to print
everything.

Helpers in the REPL:
- `await llm_query(prompt)` -> str: asks a sub model{sub_model_note}.
  Use it for the semantic work on chunks: classify, extract, summarize, judge. It
  raises SubCallFailed with the reason when the call cannot be answered.
- `await llm_batch(prompts)` -> list[str]: many prompts at once, answers in order, run
  concurrently (much faster than a loop of llm_query). A failed item is a SubCallError
  (a str starting with "Error:"); the others are answers.
- Sub models see only the prompt you send: never `context` or your variables, so put
  the text they need into the prompt, with the instruction.
- Both are async: `await` them at the top level of a cell or inside an `async def`
  (then `await` that function); a plain `def` cannot call them.
- The standard library is available (re, json, collections, math, ...); there is no
  network and no file system beyond the context.
You may make at most {max_sub_calls:,} sub-calls in total.

Strategies that work:
1. Peek: print(type(context), len(context)) and small slices to learn the structure.
2. Search: `re` / string methods to find candidate passages cheaply, without sub-calls.
3. Chunk + map: split into chunks that fit the sub model, `await llm_batch(...)` over
   them, then aggregate the answers in Python (count, merge, vote).
4. Recurse: give a sub-call a focused question with just the passage it needs.
5. Verify: check a candidate answer against the context before finishing.

Finishing: when you know the answer, call `FINAL(value)` in code (the value of the
expression is the answer), or `FINAL_VAR("name")` to answer with a variable, or set
`answer = {{"content": value, "ready": True}}`. Outside code you may write
FINAL(your answer) or FINAL_VAR(name) on its own line, but only in a reply without
code: an answer must rest on output you have seen, never on output you expect.
You have {max_iterations} iterations in all.{history_note}"""

RECURSIVE_NOTE = (
    " that is itself a recursive agent with its own REPL, so it can take a long prompt "
    "as its context"
)
# The window is stated as the server reports it (settings.with_server_windows), and the
# chunk in characters: a 1.5B model copied a stated "384,000 characters" into one
# sub-call, which a server with an 8,192-token window refused every time (issue 18).
WINDOW_NOTE = (
    " whose window is {tokens:,} tokens.\n  Keep each prompt under {chunk_chars:,} "
    "characters (counted at {chars_per_token} characters per token,\n  half left for the "
    "instruction and the reply); longer prompts fail"
)

_TOOL_PROTOCOL = (
    f"Run code with the `{TOOL_NAME}` tool, or in a ```repl fenced block in your reply."
)
_FENCE_PROTOCOL = "Put code in a ```repl fenced block in your reply; it runs when you send it."

_KIND_DESCRIPTIONS = {
    "text": "a str of {length:,} characters",
    "json": "parsed JSON, a {type_name} of {length:,} items",
    "directory": "a dict of {length:,} files (relative path -> text) from a directory",
}

LAZY_DESCRIPTION = "text of {length:,} characters, read on demand through a handle (below)"
LAZY_NOTE = """
This context is too large to hold in memory: `context` is a read-only handle, not a str.
Offsets are UTF-8 byte offsets; no cut splits a character.
- `context.size` (bytes); `context[a:b]` -> str (at most 64 MB per read)
- `context.lines(offset, count)` -> the lines from the one holding byte `offset`
- `for piece in context.chunks(1_000_000): ...` (pieces end after a newline);
  `for line in context: ...`
- `hits = await context.search(r"regex", max_hits=100)` -> [{"offset", "match", "line"}],
  run on the host over the whole context, far faster than a loop: search first, then
  read around the hits, e.g. `context.lines(hits[0]["offset"] - 2000, 40)`.
`str(context)` and `print(context)` raise; `len(context)` fails above 2 GB.
A cell's reads and searches are capped in bytes (cell_scan_mb); its output ends with
how much it scanned.
"""

BEST_EFFORT_PROMPT = """\
The iteration budget is spent. From what the cells above showed, give your best final
answer to the question now, as plain text with no code. If it is uncertain, say what is
known and what is not."""

CHILD_QUESTION = (
    "The variable `context` holds a request from a calling program. Do what it asks and "
    "return the result with FINAL."
)


def describe_context(ref: ContextRef) -> str:
    """One line on what ``context`` is, from the reference alone."""
    return _KIND_DESCRIPTIONS[ref["kind"]].format(**ref)


def system_prompt(
    ref: ContextRef,
    *,
    max_output_chars: int,
    max_iterations: int,
    max_sub_calls: int,
    sub_window_tokens: int,
    chars_per_token: int,
    recursive: bool,
    tool_calling: bool,
    history: Sequence[TurnRecord],
    lazy: bool = False,
) -> str:
    """The root model's instructions for this run."""
    history_note = ""
    if history:
        lines = [
            f"- Q: {preview(h['question'], 200)}\n  A: {preview(_as_text(h['answer']), 300)}"
            for h in history[-10:]
        ]
        history_note = (
            "\n\nEarlier questions on this context (variables from those cells are still "
            "defined; the list `history` holds them in full):\n" + "\n".join(lines)
        )
    return SYSTEM_PROMPT.format(
        context_description=LAZY_DESCRIPTION.format(**ref) if lazy else describe_context(ref),
        context_preview=ref["preview"],
        lazy_note=LAZY_NOTE if lazy else "",
        code_protocol=_TOOL_PROTOCOL if tool_calling else _FENCE_PROTOCOL,
        max_output_chars=max_output_chars,
        sub_model_note=RECURSIVE_NOTE
        if recursive
        else WINDOW_NOTE.format(
            tokens=sub_window_tokens,
            chunk_chars=sub_window_tokens * chars_per_token // 2,
            chars_per_token=chars_per_token,
        ),
        max_sub_calls=max_sub_calls,
        max_iterations=max_iterations,
        history_note=history_note,
    )


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def render_cells(cells: Sequence[Cell], max_output_chars: int) -> list[AnyMessage]:
    """The conversation so far: each model reply followed by what its code printed."""
    messages: list[AnyMessage] = []
    for cell in cells:
        if cell["kind"] == "system":
            continue
        shown = (truncate(cell["output"], max_output_chars) or "(no output)") + cell.get(
            "host_note", ""
        )
        if cell["tool_call_id"]:
            messages.append(
                AIMessage(
                    content=cell["reply"],
                    tool_calls=[
                        {
                            "id": cell["tool_call_id"],
                            "name": TOOL_NAME,
                            "args": {"code": cell["code"]},
                        }
                    ],
                )
            )
            messages.append(ToolMessage(content=shown, tool_call_id=cell["tool_call_id"]))
        else:
            messages.append(AIMessage(content=cell["reply"]))
            label = "REPL output" if cell["code"] else "Note"
            messages.append(HumanMessage(content=f"{label}:\n{shown}"))
    return messages


def build_messages(
    system: str,
    question: str,
    cells: Sequence[Cell],
    *,
    iteration: int,
    max_iterations: int,
    max_output_chars: int,
) -> list[AnyMessage]:
    """System prompt, the question, the history, and where the budget stands."""
    messages: list[AnyMessage] = [SystemMessage(system), HumanMessage(f"Question: {question}")]
    messages.extend(render_cells(cells, max_output_chars))
    if cells:
        left = max_iterations - iteration
        messages.append(
            HumanMessage(
                f"Iteration {iteration + 1} of {max_iterations} ({left - 1} left after this). "
                f"Continue towards the answer to: {preview(question, 500)}"
            )
        )
    return messages
