"""Free TCP ports on the loopback address."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

#: The only address any server started here listens on.
HOST = "127.0.0.1"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_free_port() -> int:
    """A free port below the ephemeral range (so client sockets never squat on it later)."""
    low, high = 15000, 32000
    with contextlib.suppress(OSError, ValueError):
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, eph_low)
    if high - low > 100:
        rng = random.SystemRandom()
        for _ in range(64):
            port = rng.randrange(low, high)
            if port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
