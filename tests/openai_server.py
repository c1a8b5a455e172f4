"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

Clients under test talk HTTP to it exactly as they would to a provider, so retries, timeouts,
concurrency and request encoding are exercised over the network instead of by patching a client.

Tell it how to answer with :meth:`OpenAIServer.script` (one behaviour per request, in order) and
:attr:`OpenAIServer.default` (after the script runs out), or set :attr:`OpenAIServer.responder` to a
function of the request body. A behaviour is:

- any text: a normal completion whose message content is that text (``"yes"``, ``"No."``, ``"maybe"``);
- ``429`` / ``500`` / any int >= 400: that HTTP status with an OpenAI-style error body;
- ``"hang"``: sleep :attr:`hang_seconds` before answering (makes the client time out);
- a fault mode (a malformed HTTP 200, see :data:`FAULTS`): ``"empty_choices"``, ``"truncated_json"``,
  ``"html"``, ``"no_message"``, ``"null_content"``, ``"not_an_object"``, ``"drop"`` (close the
  connection without answering);
- a :class:`Reply` for anything else: any status, body, headers (``Retry-After``) and delay.

Every request is recorded in :attr:`requests` (path, headers, parsed JSON body, arrival time), so a
test can check what arrived: the prompt, sampling parameters, a base64 image, the authorization header.

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = "hang"
FAULTS = ("empty_choices", "truncated_json", "html", "no_message", "null_content", "not_an_object", "drop")
"""Replies a real provider or proxy has been seen to send with HTTP 200 (or no reply at all)."""


@dataclass
class Reply:
    """A fully specified answer: status, body (bytes, or a JSON-able value), headers, delay before it."""

    status: int = 200
    body: bytes | dict[str, Any] | list[Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    then: Behaviour | None = None
    """With a delay: what to answer after it (default: the server's default)."""


Behaviour = str | int | Reply


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    """Header names lower-cased (HTTP headers are case-insensitive): ``headers["authorization"]``."""
    body: dict[str, Any]
    time: float = 0.0
    """``time.monotonic()`` when the request arrived (for backoff and Retry-After checks)."""

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
                arrived = time.monotonic()
                with server._lock:
                    server.requests.append(
                        RecordedRequest(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, arrived
                        )
                    )
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                behaviour = server._next_behaviour(body)
                if behaviour == HANG:
                    server._release.wait(server.hang_seconds)
                    behaviour = server.default
                model = body.get("model", "test-model")
                if isinstance(behaviour, Reply):
                    if behaviour.delay:
                        server._release.wait(behaviour.delay)
                    if behaviour.then is not None:
                        behaviour = behaviour.then
                    elif behaviour.body is None and behaviour.status == 200:
                        behaviour = server.default
                if isinstance(behaviour, Reply):
                    self._send(behaviour.status, behaviour.body, behaviour.headers)
                elif isinstance(behaviour, int):
                    self._send(behaviour, {"error": {"message": f"scripted {behaviour}", "type": "server"}})
                elif behaviour in FAULTS:
                    self._fault(behaviour, model)
                else:
                    self._send(200, _completion(model, str(behaviour)))

            def _fault(self, fault: str, model: str) -> None:
                completion = _completion(model, "yes")
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line at all
                elif fault == "empty_choices":
                    self._send(200, {**completion, "choices": []})
                elif fault == "truncated_json":
                    text = json.dumps(completion).encode()
                    self._send(200, text[: len(text) // 2])
                elif fault == "html":
                    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                    self._send(200, page, {"Content-Type": "text/html"})
                elif fault == "no_message":
                    self._send(200, {**completion, "choices": [{"index": 0, "finish_reason": "stop"}]})
                elif fault == "null_content":
                    choice = {"index": 0, "message": {"role": "assistant", "content": None}}
                    self._send(200, {**completion, "choices": [choice]})
                elif fault == "not_an_object":
                    self._send(200, ["yes"])

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
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
