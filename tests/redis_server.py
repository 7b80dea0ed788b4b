"""A real, throwaway Redis server for tests (Debian's ``redis-server``): no persistence, loopback
only, a free port; stopped (SIGTERM, then SIGKILL) and its directory removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import free_port


class RedisServerError(RuntimeError):
    """redis-server cannot be found or started here."""


@contextlib.contextmanager
def throwaway_redis(start_timeout_s: float = 10.0) -> Iterator[str]:
    """Yields the server's URL (``redis://127.0.0.1:PORT/0``)."""
    program = shutil.which("redis-server")
    if program is None:
        raise RedisServerError(
            "redis-server is not installed (Debian: apt-get install redis-server)"
        )
    root = Path(tempfile.mkdtemp(prefix="voxgate-redis-"))
    port = free_port()
    command = [
        program,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)),
        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
    ]
    log = (root / "redis.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server did not start: {(root / 'redis.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
