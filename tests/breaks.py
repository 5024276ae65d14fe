"""Break each documented guarantee on purpose, in a scratch copy, and show its tests fail.

    .venv/bin/python tests/breaks.py              # every break (a few minutes)
    .venv/bin/python tests/breaks.py window-edge  # one, by name
    .venv/bin/python tests/breaks.py --list

A break replaces one piece of the package's source with a plausible mistake. The copy
holds the checkout's files (tracked and new, nothing ignored) and is imported in place of
the checkout (``PYTHONPATH``), so the sandbox processes a test starts run the broken code
too. A break *bites* when every test named for it fails; one that stays green means the
guarantee is held by no test. ``tests/test_breaks.py`` checks that each break still
applies to the source, so this list cannot silently drift away from the code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
# Broken, the slowest test named below (the memory bound's: the hog's cell runs to its
# end) took 45 s on a loaded 2-core machine; one still running after 10 minutes has hung.
TEST_SECONDS = 600


@dataclass(frozen=True)
class Edit:
    """In the file at ``path``, ``old`` (found exactly once) becomes ``new``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Break:
    """One guarantee, a mistake that breaks it, and the tests that must then fail."""

    name: str
    guarantee: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


BREAKS = (
    Break(
        "tree-budget",
        "max_sub_calls bounds the whole recursion tree, not each sub-RLM",
        (
            Edit(
                "rlm_graph/subcalls/scope.py",
                "return replace(self, depth=self.depth + 1)",
                "return replace(self, depth=self.depth + 1, budget=LocalBudget(self.budget.left))",
            ),
        ),
        (
            "tests/security/test_security_subcalls.py"
            "::test_recursion_that_never_ends_is_capped_by_the_shared_budget",
            "tests/subcalls/test_scope.py::test_the_depth_rule_decides_plain_call_or_sub_rlm",
        ),
    ),
    Break(
        "output-cut",
        "the model reads at most max_output_chars of a cell's output, head and tail",
        (  # cut twice, when the cell is recorded and when it is shown: both must go
            Edit(
                "rlm_graph/repl/cell.py",
                "output=truncate(outcome.output, output_limit)",
                "output=outcome.output",
            ),
            Edit(
                "rlm_graph/graph/prompts.py",
                'truncate(cell["output"], limit) or "(no output)"',
                'cell["output"] or "(no output)"',
            ),
        ),
        ("tests/graph/test_e2e.py::test_the_model_reads_cell_output_cut_to_max_output_chars",),
    ),
    Break(
        "final-lines",
        "FINAL(...) written outside code may span several lines",
        (Edit("rlm_graph/graph/replies.py", "re.MULTILINE | re.DOTALL)", "re.MULTILINE)"),),
        ("tests/graph/test_replies.py::test_final_outside_code_and_inside_code",),
    ),
    Break(
        "zygote-keys",
        "the sandbox processes start with no key-like environment variable",
        (
            Edit(
                "rlm_graph/repl/process.py",
                "os.environ.items() if not is_secret_name(name)}",
                "os.environ.items()}",
            ),
        ),
        (
            "tests/security/test_security_sandbox.py"
            "::test_the_sandbox_processes_start_without_key_like_variables",
        ),
    ),
    Break(
        "concurrency-cap",
        "a cell has at most max_concurrency sub-calls in flight, however they are started",
        (
            Edit(
                "rlm_graph/subcalls/broker.py",
                "self._gate = asyncio.Semaphore(settings.max_concurrency)",
                "self._gate = asyncio.Semaphore(settings.max_batch_size)",
            ),
        ),
        (
            "tests/subcalls/test_broker.py::test_a_batch_has_max_concurrency_calls_in_flight_at_once",
            "tests/subcalls/test_broker.py::test_gathered_queries_share_the_cells_concurrency_cap",
        ),
    ),
    Break(
        "memo-depth",
        "a follow-up at another depth never reuses remembered sub-call answers",
        (
            Edit(
                "rlm_graph/subcalls/scope.py",
                "answerer += [settings.model, settings.base_url, self.max_depth - self.depth]",
                "answerer += [settings.model, settings.base_url]",
            ),
        ),
        ("tests/subcalls/test_scope.py::test_the_memo_key_changes_with_whoever_answers",),
    ),
    Break(
        "memo-endpoint",
        "a follow-up with another sub endpoint never reuses remembered sub-call answers",
        (
            Edit(
                "rlm_graph/subcalls/scope.py",
                "[settings.effective_sub_model, settings.effective_sub_base_url]",
                "[settings.effective_sub_model]",
            ),
        ),
        ("tests/subcalls/test_scope.py::test_the_memo_key_changes_with_whoever_answers",),
    ),
    Break(
        "window-edge",
        "a prompt of exactly the sub model's window is sent; one character more is refused",
        (Edit("rlm_graph/subcalls/broker.py", "if estimate <= window:", "if estimate < window:"),),
        (
            "tests/security/test_security_subcalls.py"
            "::test_a_prompt_over_the_window_is_refused_with_the_chunk_size",
        ),
    ),
    Break(
        "batch-cost",
        "a cost limit reached inside an llm_batch refuses the calls not yet sent",
        (
            Edit(
                "rlm_graph/subcalls/broker.py",
                "return self._cost_stop()\n\n    def _batch_message",
                'return ""\n\n    def _batch_message',
            ),
        ),
        (
            "tests/models/test_costs.py"
            "::test_a_cost_limit_reached_inside_a_batch_refuses_the_calls_not_yet_sent",
        ),
    ),
    Break(
        "threads-status",
        "rlm threads tells a run waiting for approval from one cut off",
        (
            Edit(
                "rlm_graph/cli/threads.py",
                'if snapshot.interrupts:\n        status = "waiting for approval"\n    elif',
                "if",
            ),
        ),
        (
            "tests/cli/test_threads.py"
            "::test_threads_tells_a_cut_off_run_from_one_waiting_for_approval",
        ),
    ),
    Break(
        "registry-cap",
        "at most max_live sandboxes stay live, the least recently used closed first",
        (
            Edit(
                "rlm_graph/repl/registry.py",
                "len(self._entries) - self._max_live + 1)",
                "len(self._entries) - self._max_live)",
            ),
        ),
        (
            "tests/repl/test_session.py"
            "::test_registry_keeps_at_most_max_live_and_closes_the_least_recently_used",
        ),
    ),
    Break(
        "registry-lru",
        "the cap and memory pressure close the least recently used idle sandbox first",
        (
            Edit(
                "rlm_graph/repl/registry.py",
                "return [key for _, key in idle]",
                "return [key for _, key in reversed(idle)]",
            ),
        ),
        (
            "tests/repl/test_session.py"
            "::test_registry_keeps_at_most_max_live_and_closes_the_least_recently_used",
            "tests/repl/test_session.py"
            "::test_memory_pressure_closes_least_recently_used_idle_sandboxes",
        ),
    ),
    Break(
        "cell-threads",
        "the inline cell pool has RLM_CELL_THREADS threads (64 by default)",
        (
            Edit(
                "rlm_graph/repl/session.py",
                "ThreadPoolExecutor(env_number(os.environ, CELL_THREADS_ENV, CELL_THREADS, 1),",
                "ThreadPoolExecutor(CELL_THREADS,",
            ),
        ),
        ("tests/repl/test_session.py::test_the_inline_cell_pool_has_the_operator_s_size",),
    ),
    Break(
        "fork-memo",
        "a fork shares the sub-call memo of its parent branch",
        (  # the memo of each cell in memory only: nothing reaches another branch
            Edit(
                "rlm_graph/graph/execute.py",
                "memo=SubCallMemo(blobs, sandbox_id, memo_scope(scope, settings)),",
                "memo=SubCallMemo(None, sandbox_id, memo_scope(scope, settings)),",
            ),
        ),
        ("tests/storage/test_durability.py::test_a_fork_shares_the_memo_of_its_parent_branch",),
    ),
    Break(
        "collector-shape",
        "the host takes only {read, value} from the guest's collector; anything else is told",
        (
            Edit(
                "rlm_graph/repl/session.py",
                ' or not {"read"} <= found.keys() <= {"read", "value"}:',
                ":",  # any dict taken for the collector's
            ),
        ),
        (
            "tests/security/test_security_sandbox.py"
            "::test_a_redefined_collector_is_an_error_the_model_reads",
        ),
    ),
    Break(
        "final-nan",
        "FINAL of NaN or infinity is a FinalError saying why, never a silent miss",
        (
            Edit(
                "rlm_graph/repl/prelude.py",
                "default=repr, allow_nan=False))",
                "default=repr))",
            ),
        ),
        (
            "tests/security/test_security_sandbox.py"
            "::test_an_answer_that_cannot_leave_the_sandbox_is_an_error_not_a_crash",
            "tests/security/test_security_sandbox.py"
            "::test_an_answer_that_is_not_a_number_is_told_and_the_run_answers_after",
        ),
    ),
    Break(
        "memory-bound",
        "a worker holding more than its sandboxes' memory bound ends, as a crash of its cell",
        (  # a unit slip: each sandbox's share in GB, so no worker ever reaches its bound
            Edit(
                "rlm_graph/repl/process.py",
                "(limits.memory_mb + self.headroom_mb) << 20",
                "(limits.memory_mb + self.headroom_mb) << 30",
            ),
        ),
        (
            "tests/repl/test_process.py::test_a_worker_over_its_memory_bound_ends_as_a_crash_of_its_cell",
        ),
    ),
)


def scratch_copy(into: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) copied under ``into``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout
    copy = into / PROJECT.name
    for name in filter(None, listed.decode().split("\0")):
        source = PROJECT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def apply(brk: Break, root: Path) -> None:
    """Make the mistake in ``root``; each text it replaces must occur exactly once."""
    for edit in brk.edits:
        target = root / edit.path
        text = target.read_text()
        if text.count(edit.old) != 1:
            raise SystemExit(f"{brk.name}: {edit.path} no longer holds {edit.old!r} exactly once")
        target.write_text(text.replace(edit.old, edit.new))


def failing(brk: Break, copy: Path) -> list[str]:
    """The break's tests that fail against the broken copy."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    imported = subprocess.run(
        [sys.executable, "-c", "import rlm_graph; print(rlm_graph.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not imported.startswith(str(copy)):  # else the checkout, not the break, is tested
        raise SystemExit(f"the copy is not what is imported: {imported.strip()}")
    failed = []
    for test in brk.tests:
        returncode, output = run_test(test, copy, env)
        if returncode == 1:  # tests ran and failed (not 2-5: errors, nothing collected)
            failed.append(test)
        elif returncode is None:  # a test that hangs guards nothing either: missed
            print(f"        hung past {TEST_SECONDS} s: {test}")
        elif returncode != 0:
            raise SystemExit(f"{brk.name}: {test} did not run:\n{output[-2000:]}")
    return failed


def run_test(test: str, copy: Path, env: dict[str, str]) -> tuple[int | None, str]:
    """Pytest's exit code for one test in the copy (``None`` if it hung) and its output.

    The output goes to a file, not a pipe: a sandbox worker left running by a break
    holds a pipe open, and reading it to its end waited for ever. Pytest runs in a
    process group of its own, ended whole afterwards, so nothing it started outlives it.
    """
    with tempfile.TemporaryFile("w+") as output:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            cwd=copy,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode: int | None = run.wait(TEST_SECONDS)
        except subprocess.TimeoutExpired:
            returncode = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        output.seek(0)
        return returncode, output.read()


def bites(brk: Break) -> bool:
    """Whether every test named for the break fails once it is made; says so."""
    with tempfile.TemporaryDirectory(prefix="rlm-break-") as scratch:
        copy = scratch_copy(Path(scratch))
        apply(brk, copy)
        failed = failing(brk, copy)
    held = [t for t in brk.tests if t not in failed]
    print(f"{'bites' if not held else 'MISSED':6}  {brk.name}: {brk.guarantee}")
    for test in held:
        print(f"        still passes: {test}")
    return not held


def main(argv: list[str]) -> int:
    """Run the named breaks (all by default); exit 1 if any was missed."""
    if argv == ["--list"]:
        for brk in BREAKS:
            print(f"{brk.name:16} {brk.guarantee}")
        return 0
    chosen = [b for b in BREAKS if not argv or b.name in argv]
    if unknown := set(argv) - {b.name for b in BREAKS}:
        raise SystemExit(f"no such break: {', '.join(sorted(unknown))} (see --list)")
    return 0 if all([bites(brk) for brk in chosen]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
