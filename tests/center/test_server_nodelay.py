"""The center's listening socket lets asyncio turn Nagle off on every connection.

asyncio sets TCP_NODELAY on accepted sockets only when the listening socket says it is TCP
(`proto == IPPROTO_TCP`). Without it a response written in two pieces (headers, body) waited
for the client's delayed ACK: ~40 ms for every request on a kept-alive connection — most of
the time a push spent verifying through the checksum API.
"""

from __future__ import annotations

import asyncio
import socket

from kaic.center.listen import bind_loopback_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    listener = bind_loopback_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]

    async def accept_one() -> int:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[int] = loop.create_future()

        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(accepted, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accept_one()) != 0
