"""Sub-calls run concurrently up to ``max_concurrency``, on the broker's own threads."""

from __future__ import annotations

import threading
from typing import Any

from support import Script, fast_settings, tool

from rlm_graph import answer


def test_a_batch_has_max_concurrency_calls_in_flight_at_once(stub: Any) -> None:
    # Each sub-call waits until 8 are in the stub together: fewer at once would
    # break the barrier and turn the answers into errors.
    together = threading.Barrier(8, timeout=10)

    def sub(prompt: str) -> str:
        together.wait()
        return prompt.upper()

    code = "r = await llm_batch([f'p{i}' for i in range(16)])\nFINAL(r)"
    server = stub(Script([tool(code)], sub=sub))
    result = answer("q", "ctx", **fast_settings(server, max_concurrency=8))
    assert result.answer == [f"P{i}" for i in range(16)]
    assert result.tokens["stub-sub"]["calls"] == 16
