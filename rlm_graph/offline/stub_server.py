"""An offline, OpenAI-compatible chat-completions stub server.

The test-suite, the offline demo and the benchmarks all need to drive the *real*
``langchain_openai.ChatOpenAI`` client (so retries, streaming assembly, tool-call
parsing and usage accounting are exercised exactly as in production) without
touching a real model API. This module serves ``/v1/chat/completions`` and
``/v1/models`` from a Python callable, using only the standard library.

Latency matters because benchmarks measure the agent, not the stub: a keep-alive
HTTP/1.1 server that writes headers and body in two writes pays ~40 ms per request
(Nagle's algorithm holding the second write until the client's delayed ACK). We
therefore set ``TCP_NODELAY`` and emit each non-streaming response in a single
write, which brings a round trip down to a few milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from rlm_graph.offline.local_server import STUB_CHARS_PER_TOKEN, LocalServer

if TYPE_CHECKING:
    import httpx

__all__ = [
    "LocalServer",
    "RecordedRequest",
    "Responder",
    "ScriptedResponder",
    "StubModel",
    "StubReply",
    "StubServer",
    "all_text",
    "last_user_text",
]


@dataclass
class StubReply:
    """What the stub answers to one request.

    One object describes success, tool calls, HTTP errors and transport faults so
    that a test can script any failure mode the real client must survive.
    """

    content: str | None = ""
    """Assistant text (``None`` is sent as JSON ``null``, as OpenAI does for tool-only turns)."""
    tool_calls: list[dict[str, Any]] | None = None
    """Each ``{"name": str, "arguments": dict | str, "id": str (optional)}``. Dict arguments
    are JSON-encoded; a str is sent verbatim so tests can send invalid JSON."""
    status: int = 200
    """Non-200 produces an OpenAI-style error body instead of a completion."""
    error: str = ""
    """Error message for non-200 replies."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"retry-after": "0"}``."""
    delay: float = 0.0
    """Seconds to wait before answering (simulated latency), added to the server-wide delay."""
    prompt_tokens: int | None = None
    """Reported usage; ``None`` estimates ceil(total message characters / 4)."""
    completion_tokens: int | None = None
    """Reported usage; ``None`` estimates ceil(len(content + tool arguments) / 4), at least 1."""
    cached_tokens: int = 0
    """Prompt tokens reported as served from the provider's cache (``prompt_tokens_details``)."""
    truncate_stream: bool = False
    """For SSE: send about half the chunks, then close the connection without ``[DONE]``."""
    drop_connection: bool = False
    """Reset the connection without sending any response."""
    finish_reason: str = ""
    """Override the finish reason, e.g. ``"length"`` for a reply cut at the token limit."""


Responder = Callable[[dict[str, Any]], StubReply | str]
"""Maps the parsed JSON request body to a reply; a plain str means ``StubReply(content=str)``."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stub saw it, so tests can assert on what the client sent."""

    path: str
    body: dict[str, Any]
    """Parsed JSON body (empty for bodiless or unparsable requests)."""
    raw_size: int
    """Bytes of the request body as received."""
    timestamp: float
    """``time.monotonic()`` on arrival."""
    reply: StubReply
    """What was answered."""
    headers: dict[str, str] = field(default_factory=dict)
    """The request's headers, names lower-cased (what credentials a client sent)."""


class ScriptedResponder:
    """Answers requests from an ordered script, for tests and the demo.

    A script makes a multi-turn agent run deterministic: the n-th model call gets
    the n-th reply regardless of what the agent sent. When the script runs out the
    ``fallback`` answers, or a 500 makes the over-long run visible instead of hanging.
    """

    def __init__(
        self, replies: Iterable[StubReply | str], *, fallback: Responder | None = None
    ) -> None:
        self._replies: deque[StubReply | str] = deque(replies)
        self._fallback = fallback
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        """Pop the next scripted reply (thread-safe: the server answers concurrently)."""
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self._fallback is not None:
            return self._fallback(body)
        return StubReply(status=500, error="stub script exhausted")


def _content_text(content: Any) -> str:
    """Text of one message ``content``, which OpenAI allows as str, list of parts or null."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return ""


def _message_texts(body: dict[str, Any]) -> Iterator[str]:
    """Yield the text of every message in a chat-completions request body."""
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            yield _content_text(message.get("content"))


def last_user_text(body: dict[str, Any]) -> str:
    """Return the text of the last user message ("" if none).

    Responders usually branch on the latest question; this hides the str vs
    list-of-parts shapes that different client versions send.
    """
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def all_text(body: dict[str, Any]) -> str:
    """Return the text of all messages joined by newlines.

    Useful for responders that look for a marker anywhere in the conversation,
    e.g. a tool result the agent should have fed back.
    """
    return "\n".join(_message_texts(body))


# -- scripting an RLM's models --------------------------------------------------------
# The tests, the demo and the benchmarks all play a root model and a sub model through
# this stub; these read a request and build a reply the way the graph expects.


def is_root_request(body: dict[str, Any]) -> bool:
    """Root-model requests open with the system prompt; plain sub-calls do not."""
    messages = body.get("messages") or []
    return bool(messages) and messages[0].get("role") in ("system", "developer")


def replies_so_far(body: dict[str, Any]) -> int:
    """Assistant replies already in the conversation: the index of the reply wanted now.

    Reading the step off the request, not a counter, keeps a script right when a
    request is retried or the server is reused.
    """
    return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")


def tool_outputs(body: dict[str, Any]) -> list[str]:
    """What the cells run so far printed: the texts of the tool messages, in order."""
    messages = body.get("messages") or []
    return [_content_text(m.get("content")) for m in messages if m.get("role") == "tool"]


def tool_reply(code: str, text: str = "") -> StubReply:
    """A root reply that runs ``code`` through the ``execute_python`` tool."""
    return StubReply(
        content=text, tool_calls=[{"name": "execute_python", "arguments": {"code": code}}]
    )


def fenced_reply(code: str, text: str = "") -> StubReply:
    """A root reply with a ```repl block, as models without tool calling write."""
    return StubReply(content=f"```repl\n{code}\n```\n{text}")


_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str) -> dict[str, Any]:
    """Build the ``{"error": {...}}`` body that the openai client turns into typed errors."""
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _finish_reason(reply: StubReply, calls: list[dict[str, Any]]) -> str:
    return reply.finish_reason or ("tool_calls" if calls else "stop")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _split(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` non-empty pieces, so streams have several deltas."""
    if not text:
        return []
    size = math.ceil(len(text) / parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


class _HTTPServer(ThreadingHTTPServer):
    """Threaded server that remembers its live connections so ``stop()`` can cut them."""

    daemon_threads = True
    request_queue_size = 1024  # bursts of hundreds of concurrent clients must not be refused

    def __init__(self, address: tuple[str, int], stub: StubServer) -> None:
        self.stub = stub
        slots = stub.local.slots
        self.slots: contextlib.AbstractContextManager[Any] = (
            threading.Semaphore(slots) if slots else contextlib.nullcontext()
        )
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up (timeouts, stop()); report real bugs as usual."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: see the module docstring

    @property
    def _server(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        with self._server.connections_lock:
            self._server.connections.add(self.connection)

    def finish(self) -> None:
        with self._server.connections_lock:
            self._server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: per-request lines would drown test and benchmark output."""

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Write status line, headers and body in ONE write (avoids the Nagle stall)."""
        lines = [
            f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            f"Connection: {'close' if self.close_connection else 'keep-alive'}",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    @property
    def _route(self) -> str:
        """Request path without query string or trailing slash, for endpoint matching."""
        return urlsplit(self.path).path.rstrip("/")

    def _record(
        self, body: dict[str, Any], raw_size: int, arrived: float, reply: StubReply
    ) -> None:
        # raw_items, not items: items() runs every header through the email policy
        # (~100 calls a request), which the overhead bench counted as the framework's
        headers = {name.lower(): value for name, value in self.headers.raw_items()}
        self._server.stub._record(
            RecordedRequest(self.path, body, raw_size, arrived, reply, headers)
        )

    def do_GET(self) -> None:
        """Serve the model list and a local server's /props, which clients probe."""
        stub = self._server.stub
        stub._probed(self._route)
        if self._route in ("/v1/models", "/models"):
            self._send(200, _dumps({"object": "list", "data": stub.listed_models()}))
        else:
            self._send_probe(stub.local.probe(self._route))

    def _send_probe(self, answer: dict[str, Any] | None) -> None:
        if answer is None:
            self._send(404, _dumps(_error_body(404, f"unknown path {self.path}")))
        else:
            self._send(200, _dumps(answer))

    def do_POST(self) -> None:
        """Serve chat completions: parse, ask the responder, wait, then answer."""
        arrived = time.monotonic()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self._route not in ("/v1/chat/completions", "/chat/completions"):
            self._server.stub._probed(self._route)
            self._send_probe(self._server.stub.local.probe(self._route))
            return
        with self._server.slots:  # a local server computes one request per slot
            self._complete(raw, arrived)

    def _complete(self, raw: bytes, arrived: float) -> None:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            parsed = exc
        if not isinstance(parsed, dict):
            reply = StubReply(status=400, error=f"request body is not a JSON object: {parsed}")
            body: dict[str, Any] = {}
        else:
            body = parsed
            reply = self._server.stub._reply_for(body)
        self._record(body, len(raw), arrived, reply)

        wait = self._server.stub.delay + reply.delay
        if (wait > 0 and self._server.stopping.wait(wait)) or reply.drop_connection:
            self.close_connection = True  # hang up without a byte; the client sees a reset
            return
        if reply.status != 200:
            self._send(reply.status, _dumps(_error_body(reply.status, reply.error)), reply.headers)
        elif body.get("stream"):
            self._stream(body, reply)
        else:
            self._send(200, _dumps(self._server.stub._completion(body, reply)), reply.headers)

    def _stream(self, body: dict[str, Any], reply: StubReply) -> None:
        """Answer as SSE; ``Connection: close`` delimits the body, so no length is needed."""
        self.close_connection = True
        events = [_dumps(chunk) for chunk in self._server.stub._chunks(body, reply)]
        if reply.truncate_stream:
            events = events[: max(1, len(events) // 2)]
        else:
            events.append(b"[DONE]")
        head = [
            f"{self.protocol_version} 200 OK",
            "Content-Type: text/event-stream",
            "Cache-Control: no-cache",
            "Connection: close",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for event in events:  # one write per event: TCP_NODELAY sends each immediately
            self.wfile.write(b"data: " + event + b"\n\n")


class StubModel:
    """Answers chat-completion requests from a ``Responder``, and records them.

    The HTTP server (:class:`StubServer`) serves it on a socket; :meth:`chat_model`
    answers in this process instead, through the real ``ChatOpenAI`` client on an
    in-memory transport: the same requests, replies and parsing, no socket, no thread.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        model_name: str = "stub-model",
        local: LocalServer | None = None,
        models: Sequence[str] = (),
        keep: int | None = None,
    ) -> None:
        self.responder = responder
        self.model_name = model_name
        self.local = local or LocalServer()
        self.models = tuple(models)
        # ``keep``: how many of the latest requests ``requests`` holds (None: all)
        self._log: deque[RecordedRequest] = deque(maxlen=keep)
        self._probes: list[str] = []
        self._log_lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot copy of the chat-completion requests (safe to read while they arrive)."""
        with self._log_lock:
            return list(self._log)

    @property
    def probes(self) -> list[str]:
        """Paths of the other requests (model list, window probes, unknown paths), in order.

        Apart from :attr:`requests`, so a client that asks a server its window first
        leaves the log of model calls as it was.
        """
        with self._log_lock:
            return list(self._probes)

    def listed_models(self) -> list[dict[str, Any]]:
        """What ``/v1/models`` lists: ``models``, or none, like a server that does not list.

        Listing none by default lets ``rlm run``'s check of the model name pass any name;
        a stub playing a server with a window lists ``model_name`` with vLLM's
        ``max_model_len``, where clients look for the window.
        """
        fields = self.local.model_fields()
        names = self.models or ((self.model_name,) if fields else ())
        return [
            {"id": name, "object": "model", "created": 0, "owned_by": "stub", **fields}
            for name in names
        ]

    def reset_log(self) -> None:
        """Forget recorded requests, e.g. between phases of one test."""
        with self._log_lock:
            self._log.clear()
            self._probes.clear()

    def chat_model(self, model: str = "stub-model") -> Any:
        """A ``ChatOpenAI`` client whose requests this object answers in-process.

        Replies' ``delay`` and transport faults are HTTP matters and are ignored here;
        status codes, tool calls, usage and SSE streams are served as by the server.
        """
        import httpx  # the OpenAI client's own transport library
        from langchain_openai import ChatOpenAI

        def handle(request: httpx.Request) -> httpx.Response:
            return self._answer_in_process(request)

        return ChatOpenAI(
            model=model,
            api_key="not-needed",  # type: ignore[arg-type]
            base_url="http://stub.invalid/v1",
            max_retries=0,
            stream_usage=True,
            http_client=httpx.Client(transport=httpx.MockTransport(handle)),
        )

    def _answer_in_process(self, request: httpx.Request) -> httpx.Response:
        import httpx

        body = json.loads(request.content or b"{}")
        reply = self._reply_for(body)
        arrived, size = time.monotonic(), len(request.content)
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._record(RecordedRequest(request.url.path, body, size, arrived, reply, headers))
        if reply.status != 200:
            return httpx.Response(reply.status, json=_error_body(reply.status, reply.error))
        if body.get("stream"):
            events = [b"data: " + _dumps(c) + b"\n\n" for c in self._chunks(body, reply)]
            stream = b"".join(events) + b"data: [DONE]\n\n"
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(200, content=stream, headers=headers)
        return httpx.Response(200, json=self._completion(body, reply))

    def _record(self, entry: RecordedRequest) -> None:
        with self._log_lock:
            self._log.append(entry)

    def _probed(self, path: str) -> None:
        with self._log_lock:
            self._probes.append(path)

    def _reply_for(self, body: dict[str, Any]) -> StubReply:
        """Ask the responder; a raising responder becomes a 500 so the test sees the message.

        A request past a local server's window is refused before the responder sees it.
        """
        prompt_chars = sum(len(text) for text in _message_texts(body))
        if refused := self.local.refusal(body, prompt_chars):
            return StubReply(status=400, error=refused)
        try:
            reply = self.responder(body)
        except Exception as exc:
            return StubReply(status=500, error=f"stub responder raised {type(exc).__name__}: {exc}")
        return self.local.reshape(
            body, StubReply(content=reply) if isinstance(reply, str) else reply
        )

    def _tool_calls(self, reply: StubReply) -> list[dict[str, Any]]:
        """Normalise scripted tool calls to the OpenAI wire shape (ids unique per server)."""
        calls = []
        for call in reply.tool_calls or []:
            args = call.get("arguments", {})
            calls.append(
                {
                    "id": call.get("id") or f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
            )
        return calls

    @staticmethod
    def _usage(
        body: dict[str, Any], reply: StubReply, calls: list[dict[str, Any]]
    ) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = math.ceil(
                sum(len(text) for text in _message_texts(body)) / STUB_CHARS_PER_TOKEN
            )
        completion = reply.completion_tokens
        if completion is None:
            out = (reply.content or "") + "".join(c["function"]["arguments"] for c in calls)
            completion = max(1, math.ceil(len(out) / STUB_CHARS_PER_TOKEN))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        }

    def _envelope(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-stub-{next(self._ids)}",
            "object": kind,
            "created": int(time.time()),
            "model": body.get("model") or self.model_name,
        }

    def _completion(self, body: dict[str, Any], reply: StubReply) -> dict[str, Any]:
        """Build a non-streaming ``chat.completion`` object."""
        calls = self._tool_calls(reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if calls:
            message["tool_calls"] = calls
        return {
            **self._envelope(body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": _finish_reason(reply, calls),
                    "logprobs": None,
                }
            ],
            **self.local.usage_fields(self._usage(body, reply, calls)),
        }

    def _chunks(self, body: dict[str, Any], reply: StubReply) -> list[dict[str, Any]]:
        """Build the ``chat.completion.chunk`` sequence (without the ``[DONE]`` sentinel).

        Content and arguments are split into several deltas so the client's
        assembly logic is exercised, as it would be against a real model.
        """
        calls = self._tool_calls(reply)
        envelope = self._envelope(body, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return {**envelope, "choices": [choice]}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in _split(reply.content or "", 3)]
        for index, call in enumerate(calls):
            function = call["function"]
            head = {"index": index, "id": call["id"], "type": "function"}
            head["function"] = {"name": function["name"], "arguments": ""}
            chunks.append(chunk({"tool_calls": [head]}))
            chunks += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _split(function["arguments"], 2)
            ]
        chunks.append(chunk({}, _finish_reason(reply, calls)))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self.local.usage_fields(self._usage(body, reply, calls))
            chunks.append({**envelope, "choices": [], **usage})
        return chunks


class StubServer(StubModel):
    """OpenAI-compatible HTTP server answering from a ``Responder``.

    The socket is bound at construction so ``base_url`` is known before
    ``start()``; each connection gets a daemon thread so slow (delayed) replies
    never block other requests.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str = "stub-model",
        local: LocalServer | None = None,
        models: Sequence[str] = (),
        keep: int | None = None,
    ) -> None:
        super().__init__(responder, model_name=model_name, local=local, models=models, keep=keep)
        self.delay = delay
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Base URL to pass to ``ChatOpenAI(base_url=...)``, e.g. ``http://127.0.0.1:PORT/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> StubServer:
        """Serve in a daemon thread (so a forgotten stop() never hangs interpreter exit)."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # bounds how long stop() waits for the loop
            name=f"stub-server:{self._httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed replies and cut open connections, then close the socket.

        Keep-alive connections would otherwise keep being answered by their
        handler threads after stop(); shutting them down makes stop() final.
        """
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._httpd.connections_lock:
            for conn in self._httpd.connections:
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
