"""Free TCP ports on the loopback interface for services the harness starts.

A port is free when the kernel hands it out for a bind to 127.0.0.1:0. The socket is closed
before the service binds it, so another process could take it in between; on a test machine
that race is rare, and a service that fails to bind fails its start-up with its log shown.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def pick_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def is_accepting(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Tell whether a TCP connection to `host:port` is accepted right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
