"""uvicorn's httptools protocol with the limits a public endpoint needs and uvicorn leaves out.

uvicorn 0.54 with httptools bounds neither the size of a request's headers (httptools keeps
accumulating a header that never ends) nor the time a request may take to arrive (its
keep-alive timer runs only between requests, so a client that opens a connection and sends
half a request holds it forever). h11 has a header limit but no request timeout either. This
subclass adds, per connection:

- a header limit: more than `max_header_bytes` of request line and headers gets 431 and the
  connection is closed, counted on the raw bytes so a header that never ends is cut off too;
- a request timeout: a request must arrive completely (headers and body) within
  `request_timeout` of its first byte, or of the connection opening; else 408 and close;
- a connection limit: a request arriving while more than `max_connections` connections are
  open gets 503 (uvicorn's own `limit_concurrency` answers in plain text and uncounted).

Every refusal is counted through `count(path, status)` (path None when no request line was
parsed), like the app's own answers.
"""

from __future__ import annotations

import http
from collections.abc import Callable

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlops_core.serving.limits import ServingLimits


def guarded_protocol(limits: ServingLimits, count: Callable[[str | None, int], None]) -> type[HttpToolsProtocol]:
    """The protocol class to pass as uvicorn's `http`, bound to these limits and counter."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": limits.max_header_bytes,
            "request_timeout": limits.request_timeout_seconds,
            "max_connections": limits.max_connections,
            "count": staticmethod(count),
        },
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes: int = ServingLimits.max_header_bytes
    request_timeout: float = ServingLimits.request_timeout_seconds
    max_connections: int = ServingLimits.max_connections
    count: Callable[[str | None, int], None] = staticmethod(lambda path, status: None)

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # bytes arriving now belong to a request line or headers
        self._raw_head = 0  # bytes received while in the head (an upper bound of its size)
        self._head = 0  # exact bytes of the request line and headers, from the parser
        self._timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def connection_lost(self, exc) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._raw_head += len(data)
        super().data_received(data)
        # Still in the head after parsing: refuse before httptools buffers any more of it.
        if self._in_head and self._raw_head > self.max_header_bytes and not self.transport.is_closing():
            self._refuse_raw(431, f"request line and headers exceed {self.max_header_bytes} bytes")

    # Parser callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0
        if self._timer is None:
            self._timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        refusal = None
        if self._head > self.max_header_bytes:
            refusal = _refusal(431, f"request line and headers exceed {self.max_header_bytes} bytes", self.count)
        elif len(self.connections) > self.max_connections:
            refusal = _refusal(503, f"more than {self.max_connections} connections are open; retry shortly", self.count)
        if refusal is None:
            return super().on_headers_complete()
        app, self.app = self.app, refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self._in_head, self._raw_head = True, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self.count(None, 400)
        super().send_400_response(msg)

    # Refusals.

    def _timed_out(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self._refuse_raw(408, f"the request did not arrive completely within {self.request_timeout:g} s")

    def _refuse_raw(self, status: int, detail: str) -> None:
        """Answer `status` outside the app (no request to hand it) and close the connection."""
        self._cancel_timer()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            body = _body(status, detail)
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, http.HTTPStatus(status).phrase.encode(), len(body), body)
            )
            in_request = cycle is not None and not cycle.response_complete
            self.count(cycle.scope.get("path") if in_request else None, status)
        if cycle is not None and not cycle.response_complete:
            # The app may be waiting for the rest of the body: it now reads a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _cancel_timer(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
            self._timer = None


def _body(status: int, detail: str) -> bytes:
    return orjson.dumps({"error": http.HTTPStatus(status).phrase.lower(), "detail": detail})


def _refusal(status: int, detail: str, count: Callable[[str | None, int], None]):
    """A tiny ASGI app answering `status` with a JSON body and closing the connection."""
    body = _body(status, detail)

    async def app(scope, receive, send):
        count(scope.get("path"), status)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app
