"""What ``sona serve`` checks before anything slow starts, so that a parent
process or a supervisor learns at once why it cannot serve (B3): the data
directory must be writable and the port free. Both raise ``StartupFailed``
with the code the error line carries."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from sona.errors import StartupFailed


def check_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise StartupFailed(
            "data_dir_unwritable",
            f"data directory {data_dir} is not writable: {exc.strerror or exc}",
        ) from exc


def bind_tcp(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (before the model loads) so a taken port
    fails in milliseconds. ``port`` 0 picks a free one."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupFailed("bad_address", f"cannot resolve bind address {host!r}: {exc}") from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # restart at once after a stop (TIME_WAIT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupFailed("port_in_use", f"port {port} on {host} is already in use") from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise StartupFailed("port_denied", f"not allowed to bind {host}:{port}") from exc
        raise StartupFailed("bind_failed", f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock
