"""Python source that runs inside every sandbox before the model's first cell.

It is baked into the sandbox factory snapshot, so each session starts with these
helpers already defined. The host callbacks ``_rlm_query`` / ``_rlm_batch`` are injected
per session; they take keyword arguments only (eryx maps positional arguments in
alphabetical order) and answer ``{"ok": bool, "value" | "error": str}`` so a failure is a
clean message, never a host traceback.
"""

PRELUDE = r'''
import builtins as _rlm_builtins
import json as _rlm_json
import random as _rlm_random


class SubCallError(str):
    """A failed item of llm_batch: still text (so joins work), but detectable."""


class SubCallFailed(RuntimeError):
    """Raised by llm_query when the sub-call could not be answered."""


_rlm_final = []
answer = {"content": None, "ready": False}


def FINAL(value):
    """End the run with this value as the answer."""
    _rlm_final[:] = [value]
    return value


def FINAL_VAR(name):
    """End the run with the value of the variable called ``name`` (or the object given)."""
    if isinstance(name, str):
        key = name.strip().strip("'\"")
        scope = globals()
        if key in scope:
            value = scope[key]
        elif hasattr(_rlm_builtins, key) and key == "context":
            value = getattr(_rlm_builtins, key)
        else:
            raise NameError(f"FINAL_VAR: no variable named {key!r}; assign it first")
    else:
        value = name
    _rlm_final[:] = [value]
    return value


async def llm_query(prompt):
    """Ask the sub model one prompt; returns its answer as text."""
    reply = await _rlm_query(prompt=str(prompt))
    if reply["ok"]:
        return reply["value"]
    raise SubCallFailed(reply["error"])


async def llm_batch(prompts):
    """Ask the sub model many prompts concurrently; answers come back in order.

    A failed item is a SubCallError (a str starting with "Error:"), the others are
    answers: one bad prompt never loses the rest of the batch.
    """
    replies = await _rlm_batch(prompts=[str(p) for p in prompts])
    if isinstance(replies, dict):
        raise SubCallFailed(replies["error"])
    return [r["value"] if r["ok"] else SubCallError("Error: " + r["error"]) for r in replies]


def _rlm_jsonable(value):
    return _rlm_json.loads(_rlm_json.dumps(value, default=repr))


def _rlm_seal_streams():
    """Close the interpreter's real stdin/stdout/stderr, leaving only captured output.

    eryx captures print() through sys.stdout, but os.write(1, ...), sys.__stdout__ and
    io.FileIO(1) reach the host's own terminal (or a server's log) uncapped. With the
    descriptors closed, such writes fail with EBADF inside the sandbox instead, and
    sys.__stdout__ / sys.__stderr__ point at the captured streams.
    """
    import os
    import sys

    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr


def _rlm_bind_context(path, kind):
    _rlm_seal_streams()
    with open(path, encoding="utf-8", errors="replace") as handle:
        data = handle.read()
    _rlm_builtins.context = _rlm_json.loads(data) if kind != "text" else data
    globals()["_rlm_alive"] = True


def _rlm_collect():
    """Report (and clear) a final answer given by FINAL, FINAL_VAR or the answer dict."""
    global _rlm_result
    _rlm_result = None
    if _rlm_final:
        value = _rlm_final.pop()  # cleared first: an answer that fails to convert
    elif isinstance(answer, dict) and answer.get("ready"):
        answer["ready"] = False  # must not fail again at every later cell
        value = answer.get("content")
    else:
        return
    _rlm_result = {"value": _rlm_jsonable(value)}
'''
