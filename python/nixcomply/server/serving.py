"""Serving the app with uvicorn on a socket bound here (port 0: any free one, and the
caller learns which): in the foreground for ``nixcomply-server serve``, or in a thread for
the demo and the tests, which stop it."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def make_server(app: Any) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=10)
    )


@dataclass
class Running:
    """A server in a thread of this process."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError("the server thread did not stop")


def in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Running:
    sock = bind(host, port)
    server = make_server(app)
    # uvicorn leaves signal handling alone outside the main thread
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="nixcomply-server"
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread ended before it started")
        time.sleep(0.01)
    return Running(f"http://{host}:{sock.getsockname()[1]}", server, thread)
