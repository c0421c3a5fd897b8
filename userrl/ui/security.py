"""Who may use the web view: a token check and headers that keep model text inert.

The token travels as ``Authorization: Bearer``, an ``X-UserRL-Token`` header, a ``?token=``
query parameter (a browser's first visit) or the cookie that such a visit sets, so the pages'
own ``fetch`` and ``EventSource`` calls (which cannot set headers) carry it without help.
The Content-Security-Policy allows scripts from this server only: even text that escaped the
pages' escaping could not run.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from userrl.errors import ConfigError

COOKIE = "userrl_ui_token"
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} is reachable from other machines: pass --token TOKEN or set "
            "USERRL_UI_TOKEN (or bind 127.0.0.1 and use an SSH tunnel)"
        )


def _supplied(scope: Scope) -> tuple[str, bool]:
    """The token the request carries, and whether it came in the query string."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if "x-userrl-token" in headers:
        return headers["x-userrl-token"], False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    if query:
        return query[0], True
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no token
        return "", False
    return (cookie[COOKIE].value if COOKIE in cookie else ""), False


class Guard:
    """ASGI middleware: security headers on every response; with a token, 401 without it."""

    def __init__(self, app: ASGIApp, token: str = "") -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        set_cookie = False
        if self.token:
            given, from_query = _supplied(scope)
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                await self._unauthorized(send)
                return
            if from_query and not scope["path"].startswith(("/api/", "/static/")):
                await self._drop_token_from_url(scope, send)
                return
            set_cookie = from_query

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
                if set_cookie:
                    message["headers"].append(self._cookie())
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cookie(self) -> tuple[bytes, bytes]:
        return b"set-cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()

    async def _drop_token_from_url(self, scope: Scope, send: Send) -> None:
        """A page opened with ?token=: set the cookie and redirect to the URL without the token,
        so it stays out of the address bar, the history and bookmarks."""
        query = [
            (k, v)
            for k, vs in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()
            for v in vs
            if k != "token"
        ]
        location = scope["path"] + ("?" + urlencode(query) if query else "")
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"content-length", b"0"),
                    self._cookie(),
                    *HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _unauthorized(send: Send) -> None:
        body = b"401 unauthorized: open the page with ?token=YOUR_TOKEN (or send Authorization: Bearer)\n"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode()),
                    *HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
