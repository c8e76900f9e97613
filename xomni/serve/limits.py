"""Request-level guards that run before FastAPI sees a request, and the one JSON error shape of the API.

`BodyGuard` reads a request body completely before the app runs: more than `max_bytes` -> 413, a body that does
not arrive within `read_timeout` seconds (a slow or stalled client) -> 408. The app then gets the body in one piece,
so no handler waits on a slow client while holding anything.
"""
from __future__ import annotations

import asyncio
import json


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The OpenAI error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": data})


class BodyGuard:
    def __init__(self, app, max_bytes: int, read_timeout: float):
        self.app, self.max_bytes, self.read_timeout = app, max_bytes, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                return await send_json(send, 400, error_body("the Content-Length header is not a number",
                                                             code="bad_content_length"))
            if n > self.max_bytes:
                return await send_json(send, 413, error_body(
                    f"the request body is {n} bytes; this server takes at most {self.max_bytes}",
                    code="body_too_large"))
        body = bytearray()
        more = True
        while more:
            try:
                msg = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                return await send_json(send, 408, error_body(
                    f"the request body did not arrive within {self.read_timeout:g} s ({len(body)} bytes received)",
                    code="body_timeout"))
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await send_json(send, 413, error_body(
                    f"the request body is over {self.max_bytes} bytes, the most this server takes",
                    code="body_too_large"))
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()   # later reads wait for the client's disconnect, as usual

        return await self.app(scope, replay, send)
