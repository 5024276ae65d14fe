"""Property-based tests of what reads untrusted text: reply parsing and output cutting."""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage

from rlm_graph.graph.replies import TOOL_NAME, is_code, parse_reply
from rlm_graph.repl.session import _Capture
from rlm_graph.text import truncate

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Anything but a surrogate (those cannot be encoded, so no model or program sends them).
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=400)
CODE = TEXT.filter(lambda code: "```" not in code and code.strip("\n").strip())
MARKER = re.compile(
    r"\n\[\.\.\. ([\d,]+) characters cut; print a narrower slice to see them \.\.\.\]\n"
)


def reply(content: str = "", code: str | None = None) -> AIMessage:
    calls = [] if code is None else [{"name": TOOL_NAME, "args": {"code": code}, "id": "c1"}]
    return AIMessage(
        content=content,
        tool_calls=calls,
        response_metadata={"model_provider": "openai", "finish_reason": "stop"},
    )


# -- code-block extraction ----------------------------------------------------------------


@FUZZ
@given(code=CODE, before=TEXT, after=TEXT, lang=st.sampled_from(["repl", "python", "py", ""]))
def test_a_fenced_block_yields_exactly_its_code(
    code: str, before: str, after: str, lang: str
) -> None:
    before, after = before.replace("`", ""), after.replace("`", "")
    assume(is_code(code))  # a fence of JSON or one word is not run (issue 18)
    parsed = parse_reply(reply(f"{before}\n```{lang}\n{code}\n```\n{after}"))
    assert parsed.code == code.strip("\n")


@FUZZ
@given(code=TEXT, text=TEXT)
def test_a_tool_call_yields_its_code_whatever_the_text_says(code: str, text: str) -> None:
    parsed = parse_reply(reply(text.replace("`", ""), code=code))
    assert parsed.code == code.strip("\n") or not code.strip()


@FUZZ
@given(content=TEXT)
def test_any_reply_parses_into_code_an_answer_or_a_problem(content: str) -> None:
    parsed = parse_reply(reply(content))
    assert parsed.code or parsed.final_text is not None or parsed.final_var or parsed.problem


# -- FINAL / FINAL_VAR detection -------------------------------------------------------------

ANSWER = st.text(
    st.characters(
        blacklist_categories=["Cs"],
        blacklist_characters="\n\r`\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
    ),
    min_size=1,
    max_size=80,
).filter(lambda s: s.strip() and not s.strip().startswith(("'", '"')))
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


@FUZZ
@given(value=ANSWER, lead=TEXT)
def test_final_outside_code_is_the_answer_verbatim(value: str, lead: str) -> None:
    lead = lead.replace("`", "").replace("FINAL", "")
    parsed = parse_reply(reply(f"{lead}\nFINAL({value})"))
    assert parsed.final_text == value.strip()
    assert parsed.code == "" and parsed.problem == ""


@FUZZ
@given(name=NAME, quote=st.sampled_from(["", "'", '"']))
def test_final_var_names_the_variable(name: str, quote: str) -> None:
    parsed = parse_reply(reply(f"Done.\nFINAL_VAR({quote}{name}{quote})"))
    assert parsed.final_var == name
    assert parsed.final_text is None


@FUZZ
@given(value=ANSWER)
def test_final_inside_a_code_block_is_code_not_a_claim(value: str) -> None:
    parsed = parse_reply(reply(f"```repl\nFINAL({value})\n```"))
    assert parsed.final_text is None and parsed.final_var is None
    assert parsed.code == f"FINAL({value})".strip("\n")


# -- cutting output -----------------------------------------------------------------------------


# Mostly longer than the limit: plain st.text rarely draws hundreds of characters.
LONG_TEXT = st.builds(
    lambda piece, times, extra: piece * times + extra,
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30),
    st.integers(0, 400),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=30),
)


@FUZZ
@given(text=LONG_TEXT, limit=st.integers(200, 2_000))
def test_truncate_stays_within_the_limit_and_says_exactly_what_it_cut(
    text: str, limit: int
) -> None:
    out = truncate(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
        return
    markers = list(MARKER.finditer(out))
    match = next(m for m in markers if out[: m.start()] == text[: m.start()])
    kept_tail = out[match.end() :]
    assert text.endswith(kept_tail)
    assert int(match.group(1).replace(",", "")) == len(text) - match.start() - len(kept_tail)
    out.encode("utf-8")  # no half characters: it encodes


@st.composite
def byte_chunks(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    """Text as UTF-8, split at arbitrary byte offsets (a print may end mid-character)."""
    text = draw(
        st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\ufffd"), max_size=600
        )
    )
    data = text.encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return text, [data[a:b] for a, b in itertools.pairwise(bounds)]


@FUZZ
@given(sample=byte_chunks(), limit=st.integers(8, 400))
def test_captured_output_is_bounded_counted_and_never_splits_a_character(
    sample: tuple[str, list[bytes]], limit: int
) -> None:
    text, chunks = sample
    capture = _Capture(limit)
    for chunk in chunks:
        capture.write(chunk)
    out = capture.take()
    assert "\ufffd" not in out  # no character was split into replacement marks
    data = text.encode()
    match = re.search(r"\n\[\.\.\. ([\d,]+) bytes of output dropped \.\.\.\]\n", out)
    if len(data) <= limit:
        assert out == text
        return
    assert match is not None
    head, tail = out[: match.start()].encode(), out[match.end() :].encode()
    assert len(head) + len(tail) <= limit
    assert data.startswith(head) and data.endswith(tail)
    assert int(match.group(1).replace(",", "")) == len(data) - len(head) - len(tail)
    assert capture.take() == ""  # taking starts over
