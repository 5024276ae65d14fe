"""What the root model reads: the system prompt and the rendered history of cells.

The context is described, never included: its kind, size and a short preview. The
model sees each cell's code and the truncated output, as tool messages when it used
the tool and as user messages when it wrote fenced blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage

from rlm_graph.graph.replies import TOOL_NAME, how_to_run
from rlm_graph.graph.state import TurnRecord
from rlm_graph.models.usage import WINDOW_CHARS_PER_TOKEN
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import LAZY_TEXT, ContextRef
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
# The chunk as the note states it, read back by the offline policies: kept beside the
# note so that rewording it cannot leave a reader matching nothing (a lowercase "keep"
# did, and the policies chunked at a made-up 100,000 characters whatever the window).
STATED_CHUNK = re.compile(r"Keep each prompt under ([\d,]+) characters")

_TOOL_PROTOCOL = (
    f"Run code with the `{TOOL_NAME}` tool, or in a ```repl fenced block in your reply."
)
_FENCE_PROTOCOL = "Put code in a ```repl fenced block in your reply; it runs when you send it."

_KIND_DESCRIPTIONS = {
    "text": "a str of {length:,} characters",
    "json": "parsed JSON, a {type_name} of {length:,} items",
    "directory": "a dict of {length:,} files (relative path -> text) from a directory",
    "folder": "a folder of {length:,} files, read on demand through a handle (below); the "
    "preview lists their paths",
}

LAZY_DESCRIPTION = "text of {length:,} {unit}, read on demand through a handle (below)"
SCAN_NOTE = """A cell's reads and searches are capped in bytes (cell_scan_mb); its output ends with
how much it scanned.
"""
LAZY_NOTE = (
    """
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
"""
    + SCAN_NOTE
)
FOLDER_NOTE = (
    """
This folder has too many files to load: `context` is a read-only handle, not a dict.
- `context.keys()` (paths relative to the folder), `len(context)`, `path in context`
- `context[path]`, `context.get(path)` -> the file's text (at most 64 MB); `context.items()`
- `hits = await context.search(r"regex", max_hits=100)` -> [{"path", "offset", "match",
  "line"}] over every file, run on the host, far faster than reading them: search first,
  then read the files it names. `start`/`stop` are indices into `list(context.keys())`.
`str(context)` raises.
"""
    + SCAN_NOTE
)

BEST_EFFORT_PROMPT = """\
The iteration budget is spent. From what the cells above showed, give your best final
answer to the question now, as plain text with no code. If it is uncertain, say what is
known and what is not."""

# The root window's share left for the reply: a 1.5B model's replies ran to ~500 tokens,
# and a server counts a requested max_tokens into the window too.
REPLY_SHARE = 4
# One cell's output may fill an eighth of the window: 3,072 characters of an 8,192-token
# window (five such outputs and the 2,600-character system prompt fit before older ones
# shrink); from
# 53,334 tokens up the 20,000 default is the smaller and holds.
OUTPUT_SHARE = 8
OLDER_OUTPUT_CHARS = 400  # what an older output keeps when the conversation must shrink
OLDER_CUT = "an older output, shortened to fit the model's window"
LEFT_OUT = (
    "[Left out to fit the model's window: the first {} cell(s) of this question; what "
    "they defined is still in the REPL.]"
)

REPEATED = "Your reply is identical to your previous one, so it was not run again. "

CHILD_QUESTION = (
    "The variable `context` holds a request from a calling program. Do what it asks and "
    "return the result with FINAL."
)


@dataclass(frozen=True)
class RootWindow:
    """What the root model's window holds, in characters (at the conservative estimate)."""

    tokens: int
    max_output_chars: int
    tightness: int = 0
    """1 after the server refused a prompt as too long: half the room."""

    @property
    def prompt_chars(self) -> int:
        """Room for the whole prompt; a quarter of the window stays for the reply."""
        chars = self.tokens * WINDOW_CHARS_PER_TOKEN
        return (chars - chars // REPLY_SHARE) >> self.tightness

    @property
    def output_chars(self) -> int:
        """What one cell's output may show: ``max_output_chars``, less on a small window."""
        return min(self.max_output_chars, self.tokens * WINDOW_CHARS_PER_TOKEN // OUTPUT_SHARE)


def repeat_note(previous: Cell, tool_calling: bool) -> str:
    """What a model that sent its previous reply again is told, from how that one went."""
    if not previous["code"]:
        return (
            f"{REPEATED}It still holds no code: {how_to_run(tool_calling)}, e.g. "
            "print(len(context)), or reply FINAL(answer) to finish."
        )
    if previous["error"]:
        failure = previous["error"].strip().splitlines()[-1]
        return (
            f"{REPEATED}Its code failed with {preview(failure, 200)}; it would fail the "
            "same way again: change the code to avoid that error."
        )
    if not previous["output"].strip():
        return f"{REPEATED}Its code printed nothing: print() what you need to see."
    return (
        f"{REPEATED}Its output is above: use it. Write code for the next step, or reply "
        "FINAL(answer) if that output holds the answer."
    )


def describe_context(ref: ContextRef, lazy: bool = False) -> str:
    """One line on what ``context`` is, from the reference (and whether it is ``lazy``)."""
    if ref["kind"] == "text" and (lazy or ref["type_name"] == LAZY_TEXT):
        # a file stored by its stamp was never read whole: its characters were not counted
        unit = "bytes" if ref["type_name"] == LAZY_TEXT else "characters"
        return LAZY_DESCRIPTION.format(length=ref["length"], unit=unit)
    return _KIND_DESCRIPTIONS[ref["kind"]].format(**ref)


def chunk_chars(window_tokens: int, chars_per_token: int) -> int:
    """The sub-call prompt size the window note states: half the window (at the estimate)."""
    return window_tokens * chars_per_token // 2


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
        context_description=describe_context(ref, lazy),
        context_preview=ref["preview"],
        lazy_note=FOLDER_NOTE if ref["kind"] == "folder" else LAZY_NOTE if lazy else "",
        code_protocol=_TOOL_PROTOCOL if tool_calling else _FENCE_PROTOCOL,
        max_output_chars=max_output_chars,
        sub_model_note=RECURSIVE_NOTE
        if recursive
        else WINDOW_NOTE.format(
            tokens=sub_window_tokens,
            chunk_chars=chunk_chars(sub_window_tokens, chars_per_token),
            chars_per_token=chars_per_token,
        ),
        max_sub_calls=max_sub_calls,
        max_iterations=max_iterations,
        history_note=history_note,
    )


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def root_window(settings: Settings, tightness: int = 0) -> RootWindow:
    """The root model's window for these settings; ``tightness`` 1 halves the prompt's room."""
    return RootWindow(settings.root_window, settings.max_output_chars, tightness)


def prompt_chars(messages: Sequence[AnyMessage]) -> int:
    """The characters a conversation sends: texts and the code of its tool calls.

    It runs on every exchange at every iteration, so it is a plain loop, and only an
    AIMessage is asked for tool calls: asking any other message went through pydantic's
    missing-attribute path, 1.7 us a message, more than the rest of the count.
    """
    total = 0
    for message in messages:
        total += len(str(message.content))
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                total += len(str(call["args"]))
    return total


def shown_output(cell: Cell, limit: int) -> str:
    """What the model reads of a cell's output, before any note of the host."""
    return truncate(cell["output"], limit) or "(no output)"


def exchange(cell: Cell, shown: str) -> list[AnyMessage]:
    """One cell as messages: the model's reply, then ``shown`` and the host's note."""
    shown += cell.get("host_note", "")
    if not cell["tool_call_id"]:
        label = "Note" if cell["kind"] == "note" else "REPL output"
        return [AIMessage(content=cell["reply"]), HumanMessage(content=f"{label}:\n{shown}")]
    call = {"id": cell["tool_call_id"], "name": TOOL_NAME, "args": {"code": cell["code"]}}
    return [
        AIMessage(content=cell["reply"], tool_calls=[call]),
        ToolMessage(content=shown, tool_call_id=cell["tool_call_id"]),
    ]


def render_cells(cells: Sequence[Cell], window: RootWindow, room: int) -> list[AnyMessage]:
    """The conversation so far, each reply followed by what its code printed, in ``room``.

    Past the room, older outputs shrink first, oldest first, to their head and tail with
    a note; then the oldest exchanges are left out; the newest output, what the model
    acts on, shrinks last of all. Two cells printing 20,000 characters each pushed a 1.5B
    model's next request past its 8,192-token window and lost the run (issue 18).

    Each exchange is built once and measured once, and rebuilt only if its output shrank:
    building every one twice (to measure, then to send) took the prompt from 0.23 to 0.57
    ms per iteration of a 50-iteration run; 0.26 now.
    """
    kept = [c for c in cells if c["kind"] != "system"]
    limit = window.output_chars
    shown = [shown_output(c, limit) for c in kept]
    exchanges = [exchange(c, s) for c, s in zip(kept, shown, strict=True)]
    over = sum(map(prompt_chars, exchanges)) - room
    left_out = _fit(kept, shown, exchanges, over) if over > 0 else 0
    messages: list[AnyMessage] = [HumanMessage(LEFT_OUT.format(left_out))] if left_out else []
    for pair in exchanges[left_out:]:
        messages.extend(pair)
    return messages


def _fit(kept: list[Cell], shown: list[str], exchanges: list[list[AnyMessage]], over: int) -> int:
    """Shrink outputs and leave out the oldest exchanges until ``over`` characters are gone.

    ``exchanges`` whose output shrank are rebuilt in place; returns how many are left out.
    An exchange holds its output once, so it shrinks by what its output lost.
    """
    before = list(shown)
    over = _shrink(shown, range(len(kept) - 1), over)
    left_out = 0
    while over > 0 and left_out < len(kept) - 1:
        cut = len(before[left_out]) - len(shown[left_out])
        over -= prompt_chars(exchanges[left_out]) - cut
        left_out += 1
    _shrink(shown, range(left_out, len(kept)), over)
    for i in range(left_out, len(kept)):
        if shown[i] is not before[i]:
            exchanges[i] = exchange(kept[i], shown[i])
    return left_out


def _shrink(shown: list[str], indices: range, over: int) -> int:
    """Cut the outputs at ``indices`` in turn until ``over`` characters are gone; what is left."""
    for i in indices:
        if over <= 0:
            break
        shorter = truncate(shown[i], OLDER_OUTPUT_CHARS, OLDER_CUT)
        over -= len(shown[i]) - len(shorter)
        shown[i] = shorter
    return over


def build_messages(
    system: str,
    question: str,
    cells: Sequence[Cell],
    *,
    iteration: int,
    max_iterations: int,
    window: RootWindow,
) -> list[AnyMessage]:
    """System prompt, the question, the history within the window, where the budget stands."""
    messages: list[AnyMessage] = [SystemMessage(system), HumanMessage(f"Question: {question}")]
    ending: list[AnyMessage] = []
    if cells:
        left = max_iterations - iteration
        ending.append(
            HumanMessage(
                f"Iteration {iteration + 1} of {max_iterations} ({left - 1} left after this). "
                f"Continue towards the answer to: {preview(question, 500)}"
            )
        )
    room = window.prompt_chars - prompt_chars([*messages, *ending])
    return [*messages, *render_cells(cells, window, room), *ending]
