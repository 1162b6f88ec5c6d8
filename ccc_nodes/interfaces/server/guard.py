"""The guard in front of every route: the optional bearer token, loopback and listed host
names only (DNS rebinding), no cross-origin requests, capped request bodies, and nosniff and a
CSP on every response (the rules are :mod:`.safety`'s)."""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from ccc_nodes.interfaces.server.graph import error_answer
from ccc_nodes.interfaces.server.safety import CSP, host_allowed

__all__ = ["Guard"]

UPLOAD_ROUTES = frozenset({"/upload/image", "/api/upload/image"})  # the only routes with the upload cap


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: bearer token, same-origin check and body size caps, for HTTP and
    websockets alike (placed outside every route, so nothing reaches a handler unchecked)."""

    def __init__(self, app, token: str | None, max_body: int, max_upload: int, allowed_hosts: tuple[str, ...] = ()):
        self.app, self.token, self.max_body, self.max_upload = app, token, max_body, max_upload
        self.allowed_hosts = tuple(allowed_hosts)

    def _authorized(self, headers: dict[bytes, bytes], query: dict) -> tuple[bool, bool]:
        """(allowed, came through the query string)."""
        if not self.token:
            return True, False
        want = self.token.encode()
        auth = headers.get(b"authorization", b"")
        if auth.lower().startswith(b"bearer ") and hmac.compare_digest(auth[7:].strip(), want):
            return True, False
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        if "ccc_token" in cookie and hmac.compare_digest(cookie["ccc_token"].value.encode(), want):
            return True, False
        given = query.get("token", [""])[0].encode()
        if given and hmac.compare_digest(given, want):
            return True, True
        return False, False

    async def _refuse(self, scope, send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4000 + status if status < 1000 else 1008})
            return
        body = json.dumps(error_answer("refused", message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *_safety_headers([])]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.token and not host_allowed(host, self.allowed_hosts):  # DNS rebinding
            return await self._refuse(scope, send, 403, f"host {host[:100]!r} refused: without a token this server "
                                      "answers only to loopback names and the names given with --allow-host")
        if origin and urlsplit(origin).netloc != host:
            return await self._refuse(scope, send, 403, f"cross-origin request from {origin} refused")
        ok, by_query = self._authorized(headers, query)
        if not ok:
            return await self._refuse(scope, send, 401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope["path"] in UPLOAD_ROUTES else self.max_body
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(scope, send, 413, f"request body over the limit of {limit} bytes")
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def marked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": _safety_headers(list(message.get("headers", [])))}
                if by_query:  # let the browser carry the token from now on
                    cookie = f"ccc_token={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        try:
            await self.app(scope, counted_receive, marked_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, 413, f"request body over the limit of {limit} bytes")


def _safety_headers(headers: list) -> list:
    """``headers`` with nosniff and, unless the route set a stricter one, the server's CSP."""
    names = {k.lower() for k, _ in headers}
    if b"x-content-type-options" not in names:
        headers.append((b"x-content-type-options", b"nosniff"))
    if b"content-security-policy" not in names:
        headers.append((b"content-security-policy", CSP.encode()))
    return headers
