"""A small async client for any OpenAI-compatible ``/v1/chat/completions`` endpoint.

Used by the ``openai`` simulated-user backend and the ``openai`` policy backend (GPT-4o, or
Qwen3-32B behind vLLM)::

    async with ChatClient(OpenAIConfig(base_url="http://localhost:8000/v1", model="m")) as c:
        text, raw = await c.complete([{"role": "user", "content": "hi"}], temperature=0.0)

Failure policy. Retried with exponential backoff and jitter (``Retry-After`` honoured, capped at
``backoff_max_s``): HTTP 408, 429, 5xx, timeouts, connection errors and a 200 whose body is not
JSON (a truncated proxy reply). Any other 4xx, and a JSON body without ``choices[0].message``
content, fail at once with ``transient=False`` and the server's own message; a 404 on a
``base_url`` without ``/v1`` says to add it. A wrong model name is not retried either (waiting
does not fix it): a 5xx whose message names the model, or a 5xx before this client's first
success while ``GET {base_url}/models`` answers without listing the model (``transformers
serve`` answers a bare "Internal Server Error" for a model it cannot load, and lists only loaded
models). Retries exhausted raise ``transient=True``.
Errors are raised as the ``error_cls`` the caller names (``UserError``, ``PolicyError``), so they
land on the right boundary of the :mod:`userrl.errors` tree; an error the server answered without
retry has a :class:`Rejected` as its ``__cause__`` (the status and the server's message), for a
caller that can do without an optional request field (:func:`rejects_structured_output`).

Structured output: :func:`json_schema_format` is the ``response_format`` that asks for JSON of a
given schema (OpenAI's strict structured outputs; vLLM compiles it into a grammar).

Connections. ``concurrency`` requests go out at once over HTTP/1.1 keep-alive connections held
in several small httpx pools of :data:`POOL_CONNECTIONS` each, every request taking the pool with
the fewest in flight: httpx scans every connection of its pool (and polls each idle socket) for
each request, so one pool of 64 connections cost 3.8-7.2 ms of CPU per request against 0.8-1.1 ms
in pools of 4 (measured with an instant local server), which made the user worker, not the model
server, the bottleneck at 16 and 64 dialogues (``benchmarks/users.py``).

The API key is read from the environment variable named by ``api_key_env`` at open time and is
never stored in a config; with the variable unset no ``Authorization`` header is sent (local
vLLM servers need none).
"""

from __future__ import annotations

import email.utils
import enum
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import httpx
import structlog

from userrl.errors import ConfigError, RolloutError

__all__ = ["ChatClient", "ClientState", "OpenAIConfig", "Rejected", "json_schema_format", "rejects_structured_output"]

log = structlog.get_logger(__name__)

#: connections per httpx pool (module docstring: larger pools cost CPU per request)
POOL_CONNECTIONS = 4


@dataclass(slots=True)
class OpenAIConfig:
    """Where and how to call an OpenAI-compatible chat endpoint."""

    base_url: str
    """API root including the version, e.g. ``https://api.openai.com/v1`` or
    ``http://localhost:8000/v1``; ``/chat/completions`` is appended."""
    model: str
    """Model name sent in every request (``gpt-4o``, ``Qwen/Qwen3-32B``)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; ``""`` for servers without auth."""
    temperature: float = 0.0
    """Default sampling temperature (0 = greedy); per-call overrides win."""
    max_tokens: int = 512
    """Default cap on generated tokens; per-call overrides win."""
    timeout_s: float = 60.0
    """Deadline for one HTTP attempt (connect + send + full response)."""
    concurrency: int = 8
    """Most requests in flight at once from this client (backoff sleeps do not count)."""
    max_retries: int = 4
    """Retries after the first attempt for transient failures (0 = try once)."""
    backoff_base_s: float = 0.5
    """First backoff delay; doubles each retry, with jitter."""
    backoff_max_s: float = 30.0
    """Cap on any single backoff delay, ``Retry-After`` included."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Extra request fields merged into every request body (server-specific knobs, e.g.
    ``{"chat_template_kwargs": {"enable_thinking": false}}`` for vLLM serving Qwen3)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ConfigError("model must name the model to call, got ''")
        checks: list[tuple[str, bool, str]] = [
            ("temperature", self.temperature >= 0, ">= 0"),
            ("max_tokens", self.max_tokens >= 1, ">= 1"),
            ("timeout_s", self.timeout_s > 0, "> 0"),
            ("concurrency", self.concurrency >= 1, ">= 1"),
            ("max_retries", self.max_retries >= 0, ">= 0"),
            ("backoff_base_s", self.backoff_base_s >= 0, ">= 0"),
            ("backoff_max_s", self.backoff_max_s >= self.backoff_base_s, ">= backoff_base_s"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")


class ClientState(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class Rejected(Exception):
    """What the server said when it refused a request (the ``__cause__`` of the raised error)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` asking for a JSON reply that follows ``schema`` exactly (strict)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


#: words of a refusal that is about the response format (vLLM: "Failed to transform json schema
#: into a grammar"; OpenAI: "Invalid schema for response_format ..."; servers without it: "response_format")
_FORMAT_WORDS = re.compile(r"response_format|json[_ ]?schema|grammar|structured|guided", re.IGNORECASE)


def rejects_structured_output(exc: BaseException) -> bool:
    """Whether ``exc`` is a server's 400/422 refusal of the request's ``response_format``."""
    cause = exc.__cause__
    return isinstance(cause, Rejected) and cause.status in (400, 422) and bool(_FORMAT_WORDS.search(cause.detail))


class _Transient(Exception):
    """One failed attempt that may be retried; ``retry_after`` is the server's hint."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChatClient:
    """Async chat-completions client with bounded concurrency and retries (see module doc).

    Opens its HTTP session on first use or on ``async with``; :meth:`aclose` closes it, after
    which calls raise ``RuntimeError``. One client belongs to one event loop.
    """

    def __init__(self, config: OpenAIConfig, *, error_cls: type[RolloutError] = RolloutError) -> None:
        self.config = config
        self.error_cls = error_cls
        self.state = ClientState.UNOPENED
        self._pools: list[httpx.AsyncClient] = []
        self._busy: list[int] = []  #: requests in flight per pool
        self._limiter = anyio.CapacityLimiter(config.concurrency)
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._succeeded = False  #: a 5xx before any success may mean a model the server lacks

    async def __aenter__(self) -> ChatClient:
        self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        pools, self._pools, self._busy = self._pools, [], []
        for pool in pools:
            await pool.aclose()
        self.state = ClientState.CLOSED

    def _open(self) -> list[httpx.AsyncClient]:
        if self.state is ClientState.CLOSED:
            raise RuntimeError("ChatClient is closed; create a new one")
        if not self._pools:
            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
            if key:
                headers["Authorization"] = f"Bearer {key}"
            left = self.config.concurrency
            while left > 0:  # small pools: see the module docstring
                n = min(POOL_CONNECTIONS, left)
                left -= n
                limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
                self._pools.append(
                    httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.config.timeout_s), limits=limits)
                )
            self._busy = [0] * len(self._pools)
            self.state = ClientState.OPENED
        return self._pools

    async def complete(self, messages: list[dict[str, Any]], **overrides: Any) -> tuple[str, dict[str, Any]]:
        """Send one chat request; return ``(assistant text, raw response JSON)``.

        ``overrides`` are merged into the request body (``temperature``, ``max_tokens``,
        ``tools``, ``seed``...). The text is ``""`` when the model answered only with
        ``tool_calls``; read those from the raw response.
        """
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            **self.config.extra_body,
            **overrides,
        }
        raw = await self._post_with_retries(body)
        return _extract_text(raw, self.error_cls), raw

    async def _post_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                return await self._post_once(body)
            except _Transient as exc:
                last = str(exc)
                if attempt + 1 == attempts:
                    break
                delay = self._backoff(attempt, exc.retry_after)
                log.warning("openai.retry", url=self._url, attempt=attempt + 1, error=last, delay_s=round(delay, 3))
                await anyio.sleep(delay)
        raise self.error_cls(f"{self._url}: gave up after {attempts} attempts: {last}", transient=True)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.config.backoff_max_s
        if retry_after is not None:
            return min(max(retry_after, 0.0), cap)
        d = min(cap, self.config.backoff_base_s * 2**attempt)
        return d / 2 + random.uniform(0, d / 2)  # "equal jitter": spreads clients, keeps a floor

    async def _post_once(self, body: dict[str, Any]) -> dict[str, Any]:
        pools = self._open()
        async with self._limiter:
            i = min(range(len(pools)), key=self._busy.__getitem__)  # the pool with a free connection
            self._busy[i] += 1
            try:
                with anyio.fail_after(self.config.timeout_s):
                    resp = await pools[i].post(self._url, json=body)
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise _Transient(f"timed out after {self.config.timeout_s}s") from exc
            except httpx.TransportError as exc:
                raise _Transient(f"connection error: {type(exc).__name__}: {exc}") from exc
            finally:
                if i < len(self._busy):  # (closed meanwhile: nothing to count)
                    self._busy[i] -= 1
        if resp.status_code >= 400:
            await self._raise_for_status(resp)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _Transient(f"response body is not JSON: {resp.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise self.error_cls(f"{self._url}: response JSON is not an object: {data!r:.200}")
        self._succeeded = True
        return data

    async def _raise_for_status(self, resp: httpx.Response) -> None:
        """Transient statuses raise :class:`_Transient`; the rest fail at once with a hint."""
        status, detail = resp.status_code, _error_detail(resp)
        model_named = _names(detail, self.config.model)
        if status >= 500 and not model_named and not self._succeeded:
            served = await self._served_models()
            if served is not None and self.config.model not in served:
                raise self.error_cls(
                    f"{self._url}: HTTP {status} for model {self.config.model!r}, which the server "
                    f"does not list (served: {served[:5]}): is the model name right? "
                    f"Server said: {detail}",
                    transient=False,
                )
        if status in (408, 429) or (status >= 500 and not model_named):
            raise _Transient(f"HTTP {status}: {detail}", _retry_after(resp.headers))
        hint = ""
        if status in (401, 403):
            hint = f" (is ${self.config.api_key_env} set?)"
        elif status == 404 and not _has_version(self.config.base_url):
            hint = (
                f" (base_url {self.config.base_url!r} has no version path: try {self.config.base_url.rstrip('/')}/v1)"
            )
        elif model_named:
            hint = f" (is the model name {self.config.model!r} right for this server?)"
        raise self.error_cls(f"{self._url}: HTTP {status}{hint}: {detail}", transient=False) from Rejected(
            status, detail
        )

    async def _served_models(self) -> list[str] | None:
        """Model ids from ``GET {base_url}/models``; None when that does not answer a list."""
        url = self.config.base_url.rstrip("/") + "/models"
        for attempt in range(2):
            try:
                with anyio.fail_after(min(self.config.timeout_s, 15.0)):  # a loaded server answers slowly
                    resp = await self._open()[0].get(url)
                data = resp.json().get("data") if resp.status_code == 200 else None
                break
            except httpx.TransportError:
                # the pooled connection of the 500 just answered is often closed by the server
                # (transformers serve does): one more try opens a fresh one
                if attempt:
                    return None
            except (TimeoutError, httpx.HTTPError, ValueError, AttributeError):
                return None
        if not isinstance(data, list):
            return None
        return [str(m.get("id")) for m in data if isinstance(m, dict)]


def _names(text: str, model: str) -> bool:
    """Whether ``text`` mentions ``model`` as a whole token (not inside a longer word)."""
    return re.search(rf"(?<![\w./-]){re.escape(model)}(?![\w./-])", text) is not None


def _has_version(base_url: str) -> bool:
    """Whether the URL path has a ``/v1``-style segment (OpenAI-compatible roots all do)."""
    path = httpx.URL(base_url).path
    return any(len(seg) > 1 and seg[0] == "v" and seg[1:].isdigit() for seg in path.split("/"))


def _extract_text(raw: dict[str, Any], error_cls: type[RolloutError]) -> str:
    """The first choice's content; ``""`` if it only carries tool calls."""
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise error_cls(f"response has no choices: {json.dumps(raw)[:300]}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise error_cls(f"response choices[0] has no message: {json.dumps(choices[0])[:300]}")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("tool_calls"):
        return ""
    raise error_cls(f"response message has no text content: {json.dumps(message)[:300]}")


def _error_detail(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return resp.text[:300]


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
