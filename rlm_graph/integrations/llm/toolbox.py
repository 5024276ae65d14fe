"""The ``RLM`` toolbox of the ``llm`` plugin: a context in a sandbox, driven by any model.

``llm -T 'RLM("big.log")' "question"`` lets a tool-capable model of the user's own
choice be the root of an RLM: ``load_context`` puts a file into a sandbox as ``context``
(only its size and a short preview go back to the model), ``execute_python`` runs code
there, and ``submit_answer`` records the answer. Code calls ``await llm_query(...)`` /
``await llm_batch([...])``; the broker answers them on the host through ``llm``'s own
models (``llm:<sub model>``), so keys stay on the host. The sandbox is the project's:
each cell is journaled, so a cell that times out or runs out of fuel loses no earlier
variable, and with ``session="name"`` the cells are kept on disk so ``llm -c`` (a new
process) gets its variables back by replay, without calling a model again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import llm

from rlm_graph.graph.prompts import describe_context
from rlm_graph.graph.recursion import run_child
from rlm_graph.graph.runtime import sandbox_limits
from rlm_graph.models.llm_cli import default_model_id, keys_dir
from rlm_graph.models.loading import LLM_PREFIX
from rlm_graph.repl.cell import CellMeta, workbench
from rlm_graph.repl.registry import REGISTRY, Checkout
from rlm_graph.repl.session import CellOutcome, SandboxError
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import (
    ContextError,
    ContextRef,
    check_ref,
    store_path,
    store_value,
)
from rlm_graph.storage.home import home
from rlm_graph.storage.records import CellRef, MissingRecord
from rlm_graph.subcalls.broker import SubCallBroker
from rlm_graph.subcalls.memo import SubCallMemo, memo_scope
from rlm_graph.subcalls.scope import Scope
from rlm_graph.text import truncate


class ToolboxError(click.ClickException):
    """A bad ``RLM(...)`` argument: llm's CLI prints it as one line, not a traceback."""


@dataclass
class Workspace:
    """What a conversation's sandbox holds, as data: enough to rebuild it by replay."""

    ref: ContextRef | None = None
    sandbox_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cells: list[CellRef] = field(default_factory=list)
    sub_calls: int = 0


def session_file(name: str) -> Path:
    """Where the named session lives; the name is hashed so any text is a safe name."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return home() / "llm-sessions" / f"{digest}.json"


def load_workspace(path: Path | None) -> Workspace:
    """The saved workspace of a session, or a fresh one."""
    if path is None or not path.exists():
        return Workspace()
    try:
        space = Workspace(**json.loads(path.read_text()))
        if not all(isinstance(cell, dict) and "record" in cell for cell in space.cells):
            raise ValueError("its cells are not cell references")
    except (ValueError, TypeError) as exc:
        raise ToolboxError(f"RLM session file {path} is unreadable ({exc}); delete it") from exc
    return space


def save_workspace(path: Path, space: Workspace) -> None:
    """Write the session atomically: a crash mid-write must not lose the earlier cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(space), default=str))
    os.replace(tmp, path)


def checked_path(path: str, *, below_cwd: bool) -> Path:
    """The file or folder to load, refused if it would put llm's keys into the sandbox.

    Paths the model picks (``below_cwd``) must also lie below the working directory:
    a model must not go reading the user's files on its own.
    """
    target = Path(path).expanduser().resolve()
    keys = keys_dir()
    if target.is_relative_to(keys) or keys.is_relative_to(target):
        raise ContextError(f"refusing to load {path!r}: it holds llm's keys and logs ({keys})")
    if below_cwd and not target.is_relative_to(Path.cwd().resolve()):
        raise ContextError(
            f"refusing to load {path!r}: only paths below the working directory can be "
            'loaded by the model; the user can name others as RLM("path")'
        )
    return target


def read_stdin() -> ContextRef:
    """The context piped on stdin; ``llm prompt`` reads stdin itself, hence the advice."""
    if sys.stdin is None or sys.stdin.isatty():
        raise ContextError('no context on stdin: pipe one in, or name a file as RLM("path")')
    data = sys.stdin.buffer.read()
    if not data:
        raise ContextError(
            "stdin is empty (`llm prompt` reads piped input into the prompt itself): "
            'save the context to a file and use RLM("file"), or pipe it into `llm rlm`'
        )
    return store_value(data)


def outcome_text(outcome: CellOutcome, limit: int) -> str:
    """What a cell returns to the model: its output, cut to ``limit`` characters."""
    return truncate(outcome.output, limit) or "(no output)"


def answer_text(value: Any) -> str:
    """An answer as text (JSON for structured values)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


class RLM(llm.Toolbox):  # type: ignore[no-untyped-call]  # llm's __init_subclass__
    """Work on a document too large for a prompt, in a sandboxed Python REPL.

    Load it with load_context (or the user names it: RLM("big.log")), explore it with
    execute_python, where `context` holds it and sub models answer prompts about chunks,
    and finish with submit_answer.
    """

    def __init__(
        self,
        context: str = "",
        sub_model: str = "",
        max_depth: int = 1,
        max_sub_calls: int = 1_000,
        max_output_chars: int = 20_000,
        cell_timeout: float = 600.0,
        session: str = "",
    ) -> None:
        sub = LLM_PREFIX + (sub_model or default_model_id())
        try:
            self._settings = Settings(
                model=sub,
                sub_model=sub,
                max_depth=max_depth,
                max_sub_calls=max_sub_calls,
                max_output_chars=max_output_chars,
                cell_timeout=cell_timeout,
            )
        except ValueError as exc:
            raise ToolboxError(f"RLM: {exc}") from exc
        self._session = session_file(session) if session else None
        # A session's cell records go to disk with it; others live as long as the process.
        self._blobs = Blobs.for_run(None, resumable=self._session is not None)
        self._space = load_workspace(self._session)
        self._answer: Any = None
        if context:
            try:
                if context == "-":
                    ref = read_stdin()
                else:
                    ref = store_path(checked_path(context, below_cwd=False))
            except ContextError as exc:
                raise ToolboxError(f"RLM: {exc}") from exc
            if self._space.ref is None or self._space.ref["hash"] != ref["hash"]:
                self._bind(ref)

    @property
    def answer(self) -> Any:
        """The answer given by submit_answer or FINAL in code; None before that."""
        return self._answer

    # -- tools (every public method is a tool; its docstring is what the model reads) ----

    def load_context(self, path: str) -> str:
        """Load a file or folder below the working directory as the variable `context`.

        A .json file is parsed; a folder becomes {relative path: text}. Loading starts a
        fresh sandbox: earlier variables are gone. Returns the size and a short preview
        only; read the rest with RLM_execute_python.
        """
        try:
            ref = store_path(checked_path(path, below_cwd=True))
        except ContextError as exc:
            return f"Error: {exc}"
        self._bind(ref)
        return (
            f"Loaded {path}: `context` is {describe_context(ref)}. Start:\n{ref['preview']}\n"
            "Explore it with RLM_execute_python."
        )

    def execute_python(self, code: str) -> str:
        """Run Python in the persistent sandbox where `context` holds the document.

        Variables persist between calls. Only what you print() comes back (head and tail
        of long output), so print small slices. Inside the code, `await
        llm_query(prompt)` asks a sub model one prompt and `await llm_batch(prompts)`
        asks many concurrently; sub models see only the prompt you send, never
        `context`. Standard library only, no network. FINAL(value) in code records
        the answer, like RLM_submit_answer.
        """
        outcome = self._run(code)
        if isinstance(outcome, str):
            return outcome
        text = outcome_text(outcome, self._settings.max_output_chars)
        if outcome.final is not None:
            self._answer = outcome.final["value"]
            text += "\n[answer recorded; tell the user]"
        return text

    def submit_answer(self, answer: str = "", variable: str = "") -> str:
        """Record the final answer: its text, or the name of a sandbox variable holding it.

        Then tell the user the answer.
        """
        if not variable:
            self._answer = answer
            return f"Answer recorded: {truncate(answer, self._settings.max_output_chars)}"
        outcome = self._run(f"FINAL_VAR({variable!r})")
        if isinstance(outcome, str):
            return outcome
        if outcome.final is None:
            return outcome_text(outcome, self._settings.max_output_chars)
        self._answer = outcome.final["value"]
        shown = truncate(answer_text(self._answer), self._settings.max_output_chars)
        return f"Answer recorded: {shown}"

    # -- the sandbox ----------------------------------------------------------------------

    def _bind(self, ref: ContextRef) -> None:
        """Start a new sandbox on ``ref``; the old one's variables described another context."""
        REGISTRY.release(self._space.sandbox_id)
        Blobs.forget(self._space.sandbox_id)
        self._space = Workspace(ref=ref)
        self._save()

    def _run(self, code: str) -> CellOutcome | str:
        """Run one cell (or say why it cannot run), so the sandbox can be rebuilt by replay."""
        if self._space.ref is None:
            return "Error: no context is loaded: call RLM_load_context(path) first."
        try:
            return self._run_cell(code, self._space.ref)
        except (SandboxError, MissingRecord, ContextError) as exc:
            return f"Error: {exc}"

    def _run_cell(self, code: str, ref: ContextRef) -> CellOutcome:
        """One cell, journaled and recorded like a graph cell."""
        space, settings, blobs = self._space, self._settings, self._blobs
        key = space.sandbox_id
        scope = Scope.root(settings, space.sub_calls, {})
        broker = SubCallBroker(
            settings,
            scope,
            run_child=run_child,
            memo=SubCallMemo(blobs, key, memo_scope(scope, settings)),
        )
        check_ref(ref)  # a session may outlive its context's cached copy
        meta = CellMeta(kind="model", turn=1, reply="", tool_call_id="")
        want = Checkout(key, ref, space.cells, sandbox_limits(settings), broker)
        with workbench(REGISTRY, want, blobs) as bench:
            outcome, cell = bench.run(code, meta, settings.max_output_chars)
            cell["sub_calls"] = broker.calls
            cell["output"] = cell["output"] or "(no output)"
            space.cells.append(bench.record(cell))
        space.sub_calls += scope.counted(broker.calls)
        self._save()
        return outcome

    def _save(self) -> None:
        if self._session is not None:
            save_workspace(self._session, self._space)
