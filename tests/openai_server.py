"""A real local OpenAI-compatible HTTP server for tests.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` from a ``ThreadingHTTPServer`` on a
free localhost port, in a background thread. Replies come from a pluggable ``reply(body)``
function (a ``str`` is the assistant content; a ``dict`` is the whole assistant message, e.g.
with ``tool_calls``). Faults are queued and consumed one per request, in arrival order::

    with FakeOpenAIServer(reply) as srv:
        srv.fail_next(2, status=429, retry_after=0.1)
        srv.hang_next()            # holds the request until the server stops (client times out)
        srv.bad_json_next()        # 200 with a truncated JSON body
        srv.drop_next()            # closes the connection without answering
        srv.content_next("oops")   # 200 whose assistant content is "oops"
        ...
        srv.requests, srv.max_in_flight

Use the ``openai_server`` fixture (import it, or list this module in ``pytest_plugins``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ReplyFn = Callable[[dict[str, Any]], "str | dict[str, Any]"]


def echo_reply(body: dict[str, Any]) -> str:
    """Default reply: echoes the last message's content."""
    return f"echo: {body['messages'][-1].get('content', '')}"


@dataclass(slots=True)
class Fault:
    kind: str  # status | hang | bad_json | drop | content
    status: int = 500
    retry_after: float | None = None
    text: str = ""


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    fault: str | None


class FakeOpenAIServer:
    def __init__(self, reply: ReplyFn = echo_reply, *, delay_s: float = 0.0, model: str = "fake-model") -> None:
        self.reply = reply
        self.delay_s = delay_s  #: per-request service time, to make overlap observable
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # ---- fault injection ---------------------------------------------------------------------
    def _queue(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend(Fault(fault.kind, fault.status, fault.retry_after, fault.text) for _ in range(n))

    def fail_next(self, n: int = 1, *, status: int = 500, retry_after: float | None = None, message: str = "") -> None:
        """``message`` is the error message in the body (default ``injected <status>``)."""
        self._queue(n, Fault("status", status=status, retry_after=retry_after, text=message))

    def hang_next(self, n: int = 1) -> None:
        self._queue(n, Fault("hang"))

    def bad_json_next(self, n: int = 1) -> None:
        self._queue(n, Fault("bad_json"))

    def drop_next(self, n: int = 1) -> None:
        self._queue(n, Fault("drop"))

    def content_next(self, text: str, n: int = 1) -> None:
        self._queue(n, Fault("content", text=text))

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # ---- request handling (handler threads) ----------------------------------------------------
    def _begin(self, rec: RecordedRequest, is_chat: bool) -> Fault | None:
        with self._lock:
            fault = self._faults.popleft() if is_chat and self._faults else None
            rec.fault = fault.kind if fault else None
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return fault

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def completion(self, body: dict[str, Any], override: str | None) -> dict[str, Any]:
        out = override if override is not None else self.reply(body)
        message = {"role": "assistant", "content": out} if isinstance(out, str) else out
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


def _make_handler(srv: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # idle keep-alive connections end on their own

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            rec = RecordedRequest("GET", self.path, dict(self.headers), None, None)
            srv._begin(rec, is_chat=False)
            try:
                if self.path.rstrip("/") == "/v1/models":
                    data = {"object": "list", "data": [{"id": srv.model, "object": "model"}]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')
            finally:
                srv._end()

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            rec = RecordedRequest("POST", self.path, dict(self.headers), body, None)
            fault = srv._begin(rec, is_chat=self.path == "/v1/chat/completions")
            try:
                self._answer(body, fault)
            except OSError:  # the client went away (timeouts): nothing left to answer
                self.close_connection = True
            finally:
                srv._end()

        def _answer(self, body: dict[str, Any] | None, fault: Fault | None) -> None:
            if self.path != "/v1/chat/completions":
                return self._send(404, b'{"error": {"message": "not found"}}')
            if body is None:
                return self._send(400, b'{"error": {"message": "body is not JSON"}}')
            if srv.delay_s:
                time.sleep(srv.delay_s)
            kind = fault.kind if fault else None
            if fault is not None and kind == "status":
                msg = fault.text or f"injected {fault.status}"
                err = json.dumps({"error": {"message": msg}}).encode()
                hdrs = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                return self._send(fault.status, err, hdrs)
            if kind in ("hang", "drop"):
                if kind == "hang":
                    srv._stopping.wait(30)
                self.close_connection = True
                return None
            if kind == "bad_json":
                return self._send(200, b'{"choices": [{"message": ')
            override = fault.text if fault is not None and kind == "content" else None
            return self._send(200, json.dumps(srv.completion(body, override)).encode())

    return Handler


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started :class:`FakeOpenAIServer` with the echo reply; set ``.reply`` to change it."""
    with FakeOpenAIServer() as srv:
        yield srv
