"""An HTTP proxy on 127.0.0.1 in front of a real server, to make it unreachable on cue.

`down()` closes the listening socket (clients get connection refused, as from a dead
server) and `up()` listens again on the same port; `fail(method, path_part)` answers 503 to
matching requests only; `lose_answer(method, path_part)` lets the next matching request
reach the server and drops its answer; everything else passes through. The server behind keeps its state,
so what happened during the outage can be checked afterwards.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port: int | None = None
        self.failing: tuple[str, str] | None = None
        self.refused: list[str] = []
        self.losing: tuple[str, str] | None = None
        self.lost: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                if proxy._server is None:
                    # A keep-alive connection opened before down(): drop it unanswered.
                    self.close_connection = True
                    return
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if proxy.failing and self.command == proxy.failing[0] and proxy.failing[1] in self.path:
                    proxy.refused.append(f"{self.command} {self.path}")
                    payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected outage"}'
                    self.send_response(503)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                if proxy.losing and self.command == proxy.losing[0] and proxy.losing[1] in self.path:
                    # The server did the work; its answer never arrives (once).
                    proxy.losing = None
                    proxy.lost.append(f"{self.command} {self.path}")
                    self.close_connection = True
                    upstream.close()
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def lose_answer(self, method: str, path_part: str) -> None:
        """Forward the next matching request, then drop the connection instead of answering."""
        self.losing = (method, path_part)

    def fail(self, method: str | None, path_part: str = "") -> None:
        """Answer 503 to `method` requests whose path contains `path_part`; None stops failing."""
        self.failing = None if method is None else (method, path_part)
