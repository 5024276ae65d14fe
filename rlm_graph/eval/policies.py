"""The scripted root model of offline evals: one policy per task family, as code cells.

Each policy plays what a good root model does in the paper's trajectories, reading
only what a model reads (the question, the system prompt and what its cells printed)
and writing code that runs in the real sandbox:

- S-NIAH: peek, grep for the key, ask sub-calls to read the passages around each hit;
- OOLONG: peek, cut the text into pieces that fit the sub model, label them with
  ``llm_batch`` and count per user and month in Python as the answers come, never
  holding the lines; a cell reads at most ``CELL_BYTES`` (or what ``cell_scan_mb``
  lets it) and says where the next one goes on;
- OOLONG-Pairs: the same labelling, then the users' counts and pairs in Python;
- multi-hop: grep the documents naming the current entity and ask a sub-call for the
  next hop, hop by hop; at depth 2 each sub-call is a sub-RLM.

A sub-RLM (depth >= 1) hands its whole context to a plain sub-call, so at depth 2 every
prompt travels parent cell -> sub-RLM context -> sub-RLM cell -> oracle and back.
Nothing here knows the gold answer: a policy that finishes wrong has met a framework
bug (or a bug of its own, which the tests would show just as loudly).
"""

from __future__ import annotations

import re
from typing import Any

from rlm_graph.eval import multihop, niah, oolong, oracle, trec
from rlm_graph.graph.prompts import CHILD_QUESTION, STATED_CHUNK, chunk_chars
from rlm_graph.models.usage import WINDOW_CHARS_PER_TOKEN
from rlm_graph.offline.stub_server import (
    StubReply,
    is_root_request,
    last_user_text,
    replies_so_far,
    tool_outputs,
    tool_reply,
)
from rlm_graph.settings import DEFAULT_WINDOW_TOKENS

POLICY_MODEL = "eval-policy"
CHUNK_SHARE = 0.8  # of the prompt size the system prompt states, leaving room for the instruction
# What a sub-RLM's parent chunks to: its prompt states no limit (a sub-RLM takes any
# prompt as its context), but the sub-RLM hands the chunk on to a plain sub-call, so
# the chunk of the default window. In chunks of 80,000 characters a 10m OOLONG at
# depth 2 made 500 sub-RLMs of 2 sub-calls each and ran out of its 1,000 sub-calls.
UNSTATED_CHUNK = chunk_chars(DEFAULT_WINDOW_TOKENS, WINDOW_CHARS_PER_TOKEN)
LINE_ROOM = 1_000  # of a labelling prompt, for the line a piece cut, carried to the next
# Bytes one labelling cell reads: a cell's default fuel (cell_cpu_instructions, 10^11)
# ran out after ~205 MB (~490 guest instructions a byte: copies, the prompts' JSON, the
# row regex), so a third of that; 1b tokens (4 GB) take 60 cells.
CELL_BYTES = 64 << 20
BATCH = 64  # labelling prompts per llm_batch: ~5 MB of them held at once
_GO_ON = re.compile(r"go on at byte (\d+)")
_QUESTION_PREFIX = "Question: "

PEEK = (
    "# peek: what is the context? (a handle, read on demand, when it is too large)\n"
    "folder = hasattr(context, 'keys')\n"
    "size = context.size if type(context).__name__ == 'LazyText' else len(context)\n"
    "print(type(context).__name__, f'{size:,}', 'files' if folder else 'characters')\n"
    "print(list(context.keys())[:5] if folder else context[:300])"
)
CHILD = "# a sub-RLM: hand the request to a sub-call as it is\nFINAL(await llm_query(context))"

NEEDLE_SEARCH = r"""
# search: find the key, let sub-calls read the passages around it
import re
if isinstance(context, str):
    spots = [(None, m.start()) for m in re.finditer(re.escape(KEY), context)]
elif isinstance(context, dict):  # a folder, loaded
    spots = [(p, m.start()) for p, t in context.items() for m in re.finditer(re.escape(KEY), t)]
else:  # a lazy handle, text or folder: the host searches it
    spots = [(hit.get('path'), hit['offset']) for hit in await context.search(re.escape(KEY))]
windows = [(context if p is None else context[p])[max(0, s - 2000): s + 2000] for p, s in spots]
if not windows and not folder:
    windows = [context[i:i + LIMIT] for i in range(0, size, LIMIT)]
print(len(spots), 'mentions of the key;', len(windows), 'passages to read')
replies = await llm_batch([f'{INSTRUCTION}\nKey: {KEY}\n<<<\n{w}\n>>>' for w in windows])
found = [r.strip() for r in replies if r.strip() != 'NONE']
print(found)
FINAL(found[0] if found else 'not found')
"""

LABEL_SETUP = r"""
# chunk + map: label every line with the sub model, counting (user, label) and
# (month, label); a piece of the context at a time, so a handle is never read whole
import json, re
from collections import Counter
ROW = re.compile(r'^Date: (\w+) \d+, (\d+) \|\| User: (\d+) \|\| Instance: ', re.M)
by_user, by_month, labelled, rest, pending = Counter(), Counter(), 0, '', []

def take(piece, last=False):
    # the whole lines of rest + piece become one prompt; a cut last line waits
    global rest
    text = rest + piece
    cut = len(text) if last else text.rfind('\n')
    rest = text[cut + 1:]
    if cut > 0:
        pending.append(text[:cut])

async def flush():
    global pending, labelled
    replies = await llm_batch([INSTRUCTION + '\n<<<\n' + p + '\n>>>' for p in pending])
    for text, reply in zip(pending, replies):
        labels, rows = json.loads(reply), ROW.findall(text)
        if len(labels) != len(rows):
            print('label count mismatch:', len(labels), 'labels for', len(rows), 'lines')
        by_user.update([(int(u), label) for (_, _, u), label in zip(rows, labels)])
        by_month.update([(m + ' ' + y, label) for (m, y, _), label in zip(rows, labels)])
        labelled += len(labels)
    pending = []

def pieces(start):
    if isinstance(context, str):
        return (context[i:i + PIECE] for i in range(start, size, PIECE))
    return context.chunks(PIECE, start)
"""
LABEL_RUN = r"""
# label from START until this cell's share is done; the next cell goes on from there
pos = START
try:
    for piece in pieces(START):
        pos += len(piece) if isinstance(context, str) else len(piece.encode())
        take(piece, last=pos >= size)
        if len(pending) >= BATCH:
            await flush()
        if pos - START >= CELL_BYTES:
            break
except ScanLimitError:  # cell_scan_mb is spent: the next cell has its own
    pass
await flush()
if pos < size:
    print(f'labelled {labelled:,} lines; go on at byte {pos}')
else:
    counts = Counter()
    for (_, label), n in by_month.items():
        counts[label] += n
    print(labelled, 'lines labelled:', dict(counts))
"""

_AGGREGATE: dict[str, str] = {
    "count": "FINAL(counts[LABEL])",
    "most": "FINAL(max(LABELS, key=lambda label: counts[label]))",
    "least": "FINAL(min(LABELS, key=lambda label: counts[label]))",
    "compare": (
        "a, b = counts[LABEL], counts[OTHER]\n"
        "FINAL('more common than' if a > b else 'less common than' if a < b "
        "else 'same frequency as')"
    ),
    "user": "FINAL(by_user[USER, LABEL])",
    "month": (
        "import datetime\n"
        "short = datetime.datetime.strptime(MONTH, '%B %Y').strftime('%b %Y')\n"
        "FINAL(by_month[short, LABEL])"
    ),
}
PAIRS = r"""
# pairs: per-user counts, then every pair meeting the conditions
users = {u for u, _ in by_user}
def qualifying(label, at_least):
    return {u for u in users if by_user[u, label] >= at_least}
first = qualifying(LABEL, AT_LEAST)
second = first if OTHER is None else qualifying(OTHER, OTHER_AT_LEAST)
pairs = sorted({(min(u, v), max(u, v)) for u in first for v in second if u != v})
print(len(first), len(second), len(pairs), 'pairs')
FINAL('\n'.join(f'({u}, {v})' for u, v in pairs) or 'NONE')
"""

HOPS = r"""
# hop by hop: grep the documents naming the entity, ask a sub-call for the next fact
import re
docs = re.split(r'\n\n(?=### Document )', context)
print(len(docs), 'documents')
entity = SUBJECT
for template in HOPS:
    question = template.replace('{subject}', entity)
    name = re.compile(r'(?<!\w)' + re.escape(entity) + r'(?!\w)')
    groups, current = [], ''
    for doc in (d for d in docs if name.search(d)):
        if current and len(current) + len(doc) + 2 > LIMIT:
            groups.append(current)
            current = ''
        current = current + '\n\n' + doc if current else doc
    if current:
        groups.append(current)
    prompts = [f'{INSTRUCTION}\nQuestion: {question}\n<<<\n{g}\n>>>' for g in groups]
    found = [r.strip() for r in await llm_batch(prompts) if r.strip() != 'NONE']
    print(question, '->', found)
    entity = found[0] if found else 'unknown'
FINAL(entity)
"""


def constants(**values: Any) -> str:
    """Assignments that put the policy's reading of the question into the cell."""
    return "\n".join(f"{name} = {value!r}" for name, value in values.items()) + "\n"


def window_chars(body: dict[str, Any]) -> int:
    """How many characters the system prompt says a sub-call prompt may hold."""
    system = str((body.get("messages") or [{}])[0].get("content", ""))
    match = STATED_CHUNK.search(system)
    return int(match.group(1).replace(",", "")) if match else UNSTATED_CHUNK


def question_of(body: dict[str, Any]) -> str:
    """The question, from the user message the graph opens with."""
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str) and content.startswith(_QUESTION_PREFIX):
            return content[len(_QUESTION_PREFIX) :]
    return ""


def oolong_steps(query: oolong.Query, limit: int) -> list[str]:
    """Label every line, then aggregate as the query asks."""
    setup = constants(
        PIECE=limit - LINE_ROOM,
        BATCH=BATCH,
        CELL_BYTES=CELL_BYTES,
        INSTRUCTION=oracle.LABEL_INSTRUCTION,
    )
    label = setup + LABEL_SETUP + constants(START=0) + LABEL_RUN
    fields = constants(
        LABELS=list(trec.LABEL_NAMES),
        LABEL=query.label,
        OTHER=query.other or None,
        USER=query.user,
        MONTH=query.month,
        AT_LEAST=query.at_least,
        OTHER_AT_LEAST=query.other_at_least,
    )
    aggregate = PAIRS if query.kind in oolong.PAIRS_ASKS else _AGGREGATE[query.kind]
    return [PEEK, label, fields + aggregate]


def steps_for(question: str, limit: int) -> list[str]:
    """The cells a policy runs for this question (none for a question it cannot read)."""
    if needle := niah.parse_question(question):
        setup = constants(KEY=needle.key, LIMIT=limit, INSTRUCTION=oracle.NEEDLE_INSTRUCTION)
        return [PEEK, setup + NEEDLE_SEARCH]
    if query := oolong.parse_question(question):
        return oolong_steps(query, limit)
    if chain := multihop.parse_question(question):
        setup = constants(
            SUBJECT=chain.subject,
            HOPS=[multihop.FACT_QUESTIONS[relation] for relation in chain.chain],
            LIMIT=limit,
            INSTRUCTION=oracle.FACT_INSTRUCTION,
        )
        return [PEEK, setup + HOPS]
    return []


def root_reply(body: dict[str, Any]) -> StubReply:
    """The next cell of the policy, by how many replies the conversation holds."""
    question = question_of(body)
    if question == CHILD_QUESTION:
        steps = [CHILD]
    else:
        steps = steps_for(question, int(window_chars(body) * CHUNK_SHARE))
    outputs = tool_outputs(body)
    if outputs and (go_on := _GO_ON.search(outputs[-1])):  # a cell left work to the next
        return tool_reply(constants(START=int(go_on.group(1))) + LABEL_RUN)
    step = replies_so_far(body) - sum(1 for output in outputs if _GO_ON.search(output))
    if step >= len(steps):
        return StubReply(f"FINAL(the scripted policy has no step {step + 1} for this question)")
    return tool_reply(steps[step])


def respond(body: dict[str, Any]) -> StubReply | str:
    """The stub server's responder: root requests get the policy, sub-calls the oracle."""
    if is_root_request(body):
        return root_reply(body)
    return oracle.reply(last_user_text(body))
