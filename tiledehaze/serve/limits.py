"""Refuse request bodies above a limit with 413, before they are read.

A declared ``Content-Length`` above the limit is refused at once. A body sent without one
(chunked) is counted as it arrives and refused as soon as it passes the limit, so the server
never stores more than the limit of any request. The answer closes the connection, so the
server stops reading there; Starlette's own ``RequestBodyLimitMiddleware`` answers 413 too but
keeps the connection and reads the rest of the body (in Starlette 1.10 a chunked 500 MB upload
is received whole).
"""

from __future__ import annotations


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def message(self) -> bytes:
        return f"upload too large: the limit is {self.limit / (1 << 20):g} MB (--max-upload-mb)\n".encode()

    async def refuse(self, send) -> None:
        body = self.message()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(send)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(send)
