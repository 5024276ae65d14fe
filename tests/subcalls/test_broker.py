"""Sub-calls run concurrently up to ``max_concurrency``, on the broker's own threads."""

from __future__ import annotations

import threading
import time
from typing import Any

from support import Recorder, Script, fast_settings, tool

from rlm_graph import answer
from rlm_graph.offline.stub_server import LocalServer, StubReply, all_text


def test_a_batch_has_max_concurrency_calls_in_flight_at_once(stub: Any) -> None:
    # Each sub-call waits until 8 are in the stub together: fewer at once would
    # break the barrier and turn the answers into errors.
    together = threading.Barrier(8, timeout=10)

    def sub(prompt: str) -> str:
        together.wait()
        return prompt.upper()

    code = "r = await llm_batch([f'p{i}' for i in range(16)])\nFINAL(r)"
    server = stub(Script([tool(code)], sub=sub))
    recorder = Recorder()
    result = answer("q", "ctx", progress=recorder, **fast_settings(server, max_concurrency=8))
    assert result.answer == [f"P{i}" for i in range(16)]
    assert result.tokens["stub-sub"]["calls"] == 16
    # Never more: without the gate all 16 start before any reply can be read (they
    # are started in one turn of the sub-call loop), so this is no race.
    started = [e["in_flight"] for e in recorder.events if e["event"] == "sub_call_start"]
    assert len(started) == 16 and max(started) == 8


def test_gathered_queries_share_the_cells_concurrency_cap(stub: Any) -> None:
    # 64 llm_query calls gathered, and a batch beside them: one cap for all (issue 13:
    # the cap was per llm_batch, and these 64 were all in the stub at once).
    together = threading.Barrier(2, timeout=10)  # at least 2 at once, or errors
    lock, inside, most = threading.Lock(), [0], [0]

    def sub(prompt: str) -> str:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        together.wait()
        time.sleep(0.01)  # room for a third to arrive, if one could
        with lock:
            inside[0] -= 1
        return prompt.upper()

    code = (
        "import asyncio\n"
        "calls = [llm_query(f'q{i}') for i in range(64)] + [llm_batch(['b0', 'b1'])]\n"
        "r = await asyncio.gather(*calls)\n"
        "FINAL(r)"
    )
    server = stub(Script([tool(code)], sub=sub))
    result = answer("q", "ctx", **fast_settings(server, max_concurrency=2))
    assert result.answer == [f"Q{i}" for i in range(64)] + [["B0", "B1"]]
    assert most[0] == 2


def test_failed_sub_calls_are_summed_up_whatever_the_code_printed(stub: Any) -> None:
    # The code drops the failures, as a small model's filter did (issue 18); the line
    # after the output still tells the model that two of three calls hit the window.
    code = (
        "r = await llm_batch(['short', 'x' * 8000, 'y' * 8000])\n"
        "print([a for a in r if not a.startswith('Error')])"
    )
    server = stub(Script([tool(code), "FINAL(done)"]), local=LocalServer(window_tokens=1500))
    # a window the server does not say (an Ollama without num_ctx): the server refuses
    answer("q", "ctx", **fast_settings(server, sub_model_window_tokens=100_000))

    seen = all_text(server.requests[-1].body)
    assert "['echo:short']" in seen
    assert "[2 of 3 sub-calls in this cell failed" in seen
    assert "a prompt was too long for the sub model: send smaller chunks" in seen
    assert "maximum context length is 1500 tokens" in seen


def test_the_failure_line_says_not_to_retry_what_a_limit_refused(stub: Any) -> None:
    # It advised a retry after any failure, a refusal by the sub-call budget included.
    code = "r = await llm_batch(['a', 'b'])\nr2 = await llm_batch(['c', 'd'])\nprint(r + r2)"
    server = stub(Script([tool(code), "FINAL(done)"]))
    answer("q", "ctx", **fast_settings(server, max_sub_calls=3))

    seen = all_text(server.requests[-1].body)
    assert "do not retry them: no more sub-calls can be made" in seen
    assert "retry them." not in seen


def test_a_timed_out_sub_call_names_the_setting_and_the_queue(stub: Any) -> None:
    # One slot, each sub-call 0.4 s: the third of three sent together waits 0.8 s in the
    # server's queue before it is even computed, past a 0.6 s timeout.
    code = "r = await llm_batch(['a', 'b', 'c'])\nprint(r)"
    slow = Script([tool(code), "FINAL(done)"], sub=lambda p: StubReply(p, delay=0.4))
    server = stub(slow, local=LocalServer(slots=1))
    answer("q", "ctx", **fast_settings(server, max_concurrency=3, model_timeout=0.6))

    seen = all_text(server.requests[-1].body)
    assert "they timed out waiting for the model server: send fewer prompts at once" in seen
    assert "Request timed out. No reply within model_timeout=0.6 s" in seen
    assert "queued at the server" in seen and "max_concurrency=3 calls last" in seen
