"""The scripted model behind ``rlm demo``: a synthetic log and a stand-in root and sub model.

The demo must show the whole stack working for someone without a key, so only the
model is fake. The stand-in plays the policy a good root model follows (peek, search,
chunk and map with ``llm_batch``, aggregate) and the sub-model stand-in really reads
the excerpt in its prompt, so the final answer is computed through the real graph,
sandbox and client, and can be checked against the generator's ground truth.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rlm_graph.offline.stub_server import StubReply, last_user_text, replies_so_far, tool_reply

ROOT_MODEL = "rlm-demo-root"
SUB_MODEL = "rlm-demo-sub"
SEED = 7
QUESTION = (
    "What is the magic number hidden in these logs, and how many ERROR lines are there "
    "per root cause (auth, disk, memory, network, timeout)?"
)
CLASSIFY_INSTRUCTION = (
    "Classify each ERROR line of this log excerpt by root cause: auth, disk, memory, "
    "network or timeout. Reply with one JSON object mapping each cause to its count."
)
LINES_PER_CHUNK = 2_500

# Several phrasings per cause, so finding the cause takes reading, not one fixed string.
_ERRORS: dict[str, tuple[str, ...]] = {
    "auth": (
        "token expired for user {user}",
        "invalid credentials presented by {user}",
        "permission denied for role reader on /admin",
    ),
    "disk": (
        "no space left on device /var/lib/{service}",
        "write failed: disk quota exceeded",
        "I/O error on /dev/sdb while flushing segment {n}",
    ),
    "memory": (
        "out of memory while building response",
        "OOM killer terminated worker pid {n}",
        "heap allocation of {n} bytes failed",
    ),
    "network": (
        "connection reset by peer {host}",
        "upstream {host} unreachable",
        "DNS lookup failed for {host}",
    ),
    "timeout": (
        "request timed out after {n} ms",
        "deadline exceeded calling {host}",
        "gave up waiting for lock after {n} ms",
    ),
}
# What the sub-model stand-in looks for in a message, per cause.
_CUES: dict[str, tuple[str, ...]] = {
    "auth": ("token expired", "invalid credentials", "permission denied"),
    "disk": ("no space left", "disk quota", "i/o error"),
    "memory": ("out of memory", "oom killer", "allocation"),
    "network": ("connection reset", "unreachable", "dns lookup"),
    "timeout": ("timed out", "deadline exceeded", "gave up waiting"),
}
_INFO = (
    "GET /api/v1/items/{n} 200 in {ms} ms",
    "user {user} logged in",
    "job {n} finished in {ms} ms",
    "cache hit ratio {pct}%",
)
_WARN = (
    "slow query took {ms} ms",
    "retrying request to {host} (attempt 2)",
    "disk usage at {pct}%",
)
_SERVICES = ("api", "auth", "billing", "search", "worker")
_USERS = ("alice", "bob", "carol", "dave", "erin")
_HOSTS = ("db-1", "cache-2", "queue-3", "payments.internal")


@dataclass(frozen=True)
class DemoContext:
    """The generated log and the answer it was built to have."""

    text: str
    lines: int
    magic_number: int
    errors_by_cause: dict[str, int]

    def expected(self) -> dict[str, Any]:
        """The answer a correct run returns, in the shape the scripted aggregation builds."""
        return {"magic_number": self.magic_number, "errors_by_cause": self.errors_by_cause}


def _fill(template: str, rng: random.Random, service: str) -> str:
    return template.format(
        n=rng.randint(1, 99_999),
        ms=rng.randint(5, 9_000),
        pct=rng.randint(1, 99),
        user=rng.choice(_USERS),
        host=rng.choice(_HOSTS),
        service=service,
    )


def _timestamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def make_context(size_mb: float, seed: int = SEED) -> DemoContext:
    """A seeded log of about ``size_mb`` MB with one needle and ERROR lines to classify."""
    rng = random.Random(seed)
    target = int(size_mb * 1_000_000)
    clock = 1_740_000_000
    lines: list[str] = []
    causes: Counter[str] = Counter()
    size = 0
    while size < target:
        clock += rng.randint(1, 5)
        service = rng.choice(_SERVICES)
        roll = rng.random()
        if roll < 0.06:
            level, cause = "ERROR", rng.choice(sorted(_ERRORS))
            causes[cause] += 1
            template = rng.choice(_ERRORS[cause])
        elif roll < 0.18:
            level, template = "WARN", rng.choice(_WARN)
        else:
            level, template = "INFO", rng.choice(_INFO)
        line = f"{_timestamp(clock)} {service:<7} {level:<5} {_fill(template, rng, service)}"
        lines.append(line)
        size += len(line) + 1
    magic = rng.randint(10_000_000, 99_999_999)
    spot = rng.randint(len(lines) // 3, 2 * len(lines) // 3)
    needle = f"{_timestamp(clock)} deploy  INFO  release notes: the magic number is {magic}"
    lines.insert(spot, needle)
    return DemoContext(
        text="\n".join(lines),
        lines=len(lines),
        magic_number=magic,
        errors_by_cause=dict(sorted(causes.items())),
    )


# -- the root model's policy ------------------------------------------------------------

# The code keeps no big list in the REPL's globals: the sandbox snapshots its globals
# before every cell, so a 300,000-line list would slow every later cell down.
_STEPS: tuple[tuple[str, str], ...] = (
    (
        "First, what is `context` and what does it look like?",
        "# peek: type, size and the first lines\n"
        "print(type(context).__name__, f'{len(context):,} characters, "
        "{context.count(chr(10)) + 1:,} lines')\n"
        "print(context[:240])",
    ),
    (
        "Log lines. A regex finds the magic number without any sub-call.",
        "# search: the needle by regex, no sub-call needed\n"
        "import re\n"
        "hits = re.findall(r'magic number is (\\d+)', context)\n"
        "print(hits)\n"
        "magic = int(hits[0])",
    ),
    (
        "Classifying the ERROR lines is reading work: chunk the log and map it over the "
        "sub model in one batch.",
        "# map: classify the ERROR lines chunk by chunk with the sub model\n"
        "def chunked(text, size):\n"
        "    lines = text.splitlines()\n"
        "    for i in range(0, len(lines), size):\n"
        "        yield '\\n'.join(lines[i:i + size])\n"
        "\n"
        f"instruction = {CLASSIFY_INSTRUCTION!r}\n"
        "replies = await llm_batch(\n"
        "    [f'{instruction}\\n<<<\\n{c}\\n>>>'\n"
        f"     for c in chunked(context, {LINES_PER_CHUNK})]\n"
        ")\n"
        "print(len(replies), 'chunks; first replies:', replies[:2])",
    ),
    (
        "Sum the per-chunk counts in Python and answer.",
        "# reduce: add up the per-chunk counts\n"
        "import json\n"
        "from collections import Counter\n"
        "totals = Counter()\n"
        "for reply in replies:\n"
        "    totals.update(json.loads(reply))\n"
        "result = {'magic_number': magic, 'errors_by_cause': dict(sorted(totals.items()))}\n"
        "print(result)\n"
        "FINAL_VAR('result')",
    ),
)


def _root_reply(body: dict[str, Any]) -> StubReply:
    """The next step, chosen by how many replies the conversation already holds."""
    step = replies_so_far(body)
    if step >= len(_STEPS) or not body.get("tools"):
        return StubReply(f"FINAL(The scripted demo model has no step {step + 1}.)")
    thought, code = _STEPS[step]
    return tool_reply(code, thought)


# -- the sub model ----------------------------------------------------------------------


def _classify(message: str) -> str | None:
    """The cause an ERROR message names, as the sub model would read it."""
    lowered = message.lower()
    for cause, cues in _CUES.items():
        if any(cue in lowered for cue in cues):
            return cause
    return None


def _sub_reply(prompt: str) -> str:
    """Count the ERROR lines of the excerpt in the prompt by cause, as JSON."""
    if CLASSIFY_INSTRUCTION not in prompt or "<<<\n" not in prompt:
        return "This demo sub model only classifies log excerpts given between <<< and >>>."
    excerpt = prompt.split("<<<\n", 1)[1].rsplit("\n>>>", 1)[0]
    counts: Counter[str] = Counter()
    for line in excerpt.splitlines():
        fields = line.split(maxsplit=3)
        if len(fields) == 4 and fields[2] == "ERROR" and (cause := _classify(fields[3])):
            counts[cause] += 1
    return json.dumps(dict(sorted(counts.items())))


def respond(body: dict[str, Any]) -> StubReply | str:
    """The stub server's responder: the root policy or the sub model, by model name."""
    if body.get("model") == SUB_MODEL:
        return _sub_reply(last_user_text(body))
    return _root_reply(body)
