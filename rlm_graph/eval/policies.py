"""The scripted root model of offline evals: one policy per task family, as code cells.

Each policy plays what a good root model does in the paper's trajectories, reading
only what a model reads (the question and the system prompt) and writing code that
runs in the real sandbox:

- S-NIAH: peek, grep for the key, ask sub-calls to read the passages around each hit;
- OOLONG: peek, chunk the lines to fit the sub model, label them with ``llm_batch``,
  count in Python;
- OOLONG-Pairs: the same labelling, then per-user counts and pairs in Python;
- multi-hop: grep the documents naming the current entity and ask a sub-call for the
  next hop, hop by hop; at depth 2 each sub-call is a sub-RLM.

A sub-RLM (depth >= 1) hands its whole context to a plain sub-call, so at depth 2 every
prompt travels parent cell -> sub-RLM context -> sub-RLM cell -> oracle and back.
Nothing here knows the gold answer: a policy that finishes wrong has met a framework
bug (or a bug of its own, which the tests would show just as loudly).
"""

from __future__ import annotations

from typing import Any

from rlm_graph.eval import multihop, niah, oolong, oracle, trec
from rlm_graph.graph.prompts import CHILD_QUESTION, STATED_CHUNK, chunk_chars
from rlm_graph.models.usage import WINDOW_CHARS_PER_TOKEN
from rlm_graph.offline.stub_server import (
    StubReply,
    is_root_request,
    last_user_text,
    replies_so_far,
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

LABEL_LINES = r"""
# chunk + map: label every line with the sub model, keep (date, user, label)
import json, re
from collections import Counter
chunks, current, size = [], [], 0
for line in context.split('\n'):
    if current and size + len(line) + 1 > LIMIT:
        chunks.append(current)
        current, size = [], 0
    current.append(line)
    size += len(line) + 1
if current:
    chunks.append(current)
replies = await llm_batch([INSTRUCTION + '\n<<<\n' + '\n'.join(c) + '\n>>>' for c in chunks])
ROW = re.compile(r'^Date: (.+?) \|\| User: (\d+) \|\| Instance: ')
records = []
for chunk, reply in zip(chunks, replies):
    labels = json.loads(reply)
    if len(labels) != len(chunk):
        print('label count mismatch:', len(labels), 'labels for', len(chunk), 'lines')
    for row, label in zip(chunk, labels):
        date, user = ROW.match(row).groups()
        records.append((date, int(user), label))
counts = Counter(label for _, _, label in records)
print(len(chunks), 'chunks,', len(records), 'records:', dict(counts))
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
    "user": "FINAL(sum(1 for _, u, l in records if u == USER and l == LABEL))",
    "month": (
        "import datetime\n"
        "def month_of(date):\n"
        "    return datetime.datetime.strptime(date, '%b %d, %Y').strftime('%B %Y')\n"
        "FINAL(sum(1 for d, _, l in records if l == LABEL and month_of(d) == MONTH))"
    ),
}
PAIRS = r"""
# pairs: per-user counts, then every pair meeting the conditions
def qualifying(label, at_least):
    per_user = Counter(u for _, u, l in records if l == label)
    return {u for u in {u for _, u, _ in records} if per_user[u] >= at_least}
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
    label = constants(LIMIT=limit, INSTRUCTION=oracle.LABEL_INSTRUCTION) + LABEL_LINES
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
    step = replies_so_far(body)
    if step >= len(steps):
        return StubReply(f"FINAL(the scripted policy has no step {step + 1} for this question)")
    return tool_reply(steps[step])


def respond(body: dict[str, Any]) -> StubReply | str:
    """The stub server's responder: root requests get the policy, sub-calls the oracle."""
    if is_root_request(body):
        return root_reply(body)
    return oracle.reply(last_user_text(body))
