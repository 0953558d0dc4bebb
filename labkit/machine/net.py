"""Networking helpers for processes the course starts on this machine."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (ask the kernel for port 0).

    Another process can take it before you bind it; callers that start a server retry or
    pass the port straight to the child that binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
