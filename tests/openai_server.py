"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

Clients under test talk HTTP to it exactly as they would to a provider, so retries, timeouts,
concurrency and request encoding are exercised over the network instead of by patching a client.

Tell it how to answer with :meth:`OpenAIServer.script` (one behaviour per request, in order) and
:attr:`OpenAIServer.default` (after the script runs out), or set :attr:`OpenAIServer.responder` to a
function of the request body. A behaviour is:

- any text: a normal completion whose message content is that text (``"yes"``, ``"No."``, ``"maybe"``);
- ``429`` / ``500`` / any int >= 400: that HTTP status with an OpenAI-style error body;
- ``"hang"``: sleep :attr:`hang_seconds` before answering (makes the client time out).

Every request is recorded in :attr:`requests` (path, headers, parsed JSON body), so a test can
check what arrived: the prompt, sampling parameters, a base64 image, the authorization header.

Example::

    with OpenAIServer() as server:
        server.script(429, "yes")
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        assert len(server.requests) == 2
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = str | int
HANG = "hang"


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    """Header names lower-cased (HTTP headers are case-insensitive): ``headers["authorization"]``."""
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        """Text of the last user message (string content or the text parts of a content list)."""
        content = self.body.get("messages", [{}])[-1].get("content", "")
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")


class OpenAIServer:
    """Threaded HTTP server answering ``POST /v1/chat/completions`` as scripted."""

    def __init__(self, default: Behaviour = "yes", hang_seconds: float = 5.0):
        self.default: Behaviour = default
        self.hang_seconds = hang_seconds
        self.responder: Callable[[dict[str, Any]], Behaviour] | None = None
        self.requests: list[RecordedRequest] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._release.set()  # wake hanging handlers so shutdown does not wait for them
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- scripting ---------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in arrival order."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self, default: Behaviour | None = None) -> None:
        """Forget recorded requests and any queued behaviours."""
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self.responder = None
            if default is not None:
                self.default = default

    def _next_behaviour(self, body: dict[str, Any]) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return self.default

    # -- HTTP --------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with server._lock:
                    server.requests.append(
                        RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                behaviour = server._next_behaviour(body)
                if behaviour == HANG:
                    server._release.wait(server.hang_seconds)
                    behaviour = server.default
                if isinstance(behaviour, int):
                    self._send(behaviour, {"error": {"message": f"scripted {behaviour}", "type": "server"}})
                    return
                self._send(200, _completion(body.get("model", "test-model"), str(behaviour)))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

        return Handler


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
