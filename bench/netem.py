"""A loopback TCP relay that charges each new connection a handshake delay.

On loopback a new connection costs nothing, so a client that opens one per call (Paubox's SDK)
looks as cheap as one that keeps a connection alive. Across a network a new HTTPS connection
costs round trips before the request can leave (TCP, then TLS 1.3: two round trips). This relay,
run in its own process in front of the sandbox, holds each new connection's bytes for
``--connect-delay-ms`` before relaying them; the sandbox's own ``--latency-ms`` stays the
per-request round trip. Both sides of a comparison go through it alike.

    python -m bench.netem --upstream 127.0.0.1:8025 --connect-delay-ms 40   # prints "PORT <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(upstream: tuple[str, int], delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return
        for sock in (writer, up_writer):
            raw = sock.get_extra_info("socket")
            if raw is not None:
                import socket

                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.netem")
    parser.add_argument("--upstream", required=True, help="host:port to relay to (loopback)")
    parser.add_argument("--connect-delay-ms", type=float, default=40.0)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the relay only relays to loopback")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve((host, int(port)), args.connect_delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
