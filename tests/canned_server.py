"""A tiny HTTP server that answers with queued canned responses, for error shapes the sandbox
does not produce. Real sockets, so the client's real HTTP path is what is tested."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CannedServer:
    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, str], bytes, float]] = []
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, payload, delay = (
                    outer.responses.pop(0)
                    if outer.responses
                    else (500, {}, b"no canned answer", 0.0)
                )
                time.sleep(delay)  # a Paubox that takes its time (or hangs)
                head = f"HTTP/1.1 {status} {self.responses.get(status, ('X',))[0]}\r\n"
                headers = {"Content-Length": str(len(payload)), **headers}
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                self.wfile.write(head.encode() + payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/"

    def add(
        self,
        status: int,
        body: bytes | str,
        content_type: str = "application/json",
        *,
        delay: float = 0.0,
        **headers: str,
    ) -> None:
        payload = body.encode() if isinstance(body, str) else body
        self.responses.append((status, {"Content-Type": content_type, **headers}, payload, delay))

    def __enter__(self) -> CannedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
