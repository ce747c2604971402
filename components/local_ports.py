"""A free TCP port on 127.0.0.1 for a server this process starts and stops (the MLflow UI, the streaming
server, Chromium's DevTools endpoint)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
