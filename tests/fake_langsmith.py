"""A stand-in for the LangSmith API on loopback: it records the runs a client posts.

Only what the client needs to trace: ``/info`` (saying to use the JSON batch endpoint,
so the runs arrive readable), ``/runs/batch``, ``/runs`` and ``PATCH /runs/{id}``.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INFO = {
    "version": "0.10.0",
    "batch_ingest_config": {
        "use_multipart_endpoint": False,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
        "scale_up_nthreads_limit": 16,
        "scale_up_qsize_trigger": 1000,
        "scale_down_nempty_trigger": 4,
    },
}


class FakeLangSmith:
    """Records posted runs, merged by id (a run is posted once, then patched when it ends)."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeLangSmith:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, run: dict[str, Any]) -> None:
        with self._lock:
            self.runs.setdefault(str(run["id"]), {}).update(
                {k: v for k, v in run.items() if v is not None}
            )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                return json.loads(raw) if raw else {}

            def _reply(self, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.paths.append(f"GET {self.path}")
                self._reply(INFO if self.path.startswith("/info") else {})

            def do_POST(self) -> None:
                fake.paths.append(f"POST {self.path}")
                body = self._body()
                if self.path.startswith("/runs/batch"):
                    for run in [*body.get("post", []), *body.get("patch", [])]:
                        fake.record(run)
                elif self.path.rstrip("/") == "/runs":
                    fake.record(body)
                self._reply({})

            def do_PATCH(self) -> None:
                fake.paths.append(f"PATCH {self.path}")
                body = self._body()
                fake.record({**body, "id": self.path.rstrip("/").rsplit("/", 1)[-1]})
                self._reply({})

        return Handler
