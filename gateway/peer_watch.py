"""Notice at once when the process at the other end of a ZeroMQ connection goes away.

A runner or node that dies cannot say so; its socket closing is the signal. Each client watches
its socket's monitor for disconnects (and reconnects, when a restarted node binds again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


def watch_peer(sock: zmq.asyncio.Socket, on_disconnect: Callable[[], None],
               on_connect: Callable[[], None] | None = None) -> asyncio.Task[None]:
    monitor = sock.get_monitor_socket(_EVENTS)

    async def watch() -> None:
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    on_disconnect()
                elif event == zmq.EVENT_CONNECTED and on_connect is not None:
                    on_connect()
        finally:
            monitor.close(linger=0)

    return asyncio.create_task(watch())
