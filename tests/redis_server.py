"""A throwaway Redis server for tests and the benchmark: its own process, its own port.

`TempRedis` runs Debian's redis-server (``make redis-deps`` installs it) on a free
loopback port with its own temporary folder and no persistence, so a test can
freeze it (SIGSTOP: a server that accepts bytes but never answers), kill it (an
outage), bring it back on the same port, empty, and never touch a server the
machine happens to run.

    with TempRedis() as redis:
        url = redis.url             # redis://127.0.0.1:PORT/0
        redis.pause(); redis.resume()
        redis.kill(); redis.restart()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.postgres import free_port


def redis_server_bin() -> str | None:
    """The path of redis-server, or None when not installed."""
    return shutil.which("redis-server")


class TempRedis:
    """One redis-server on 127.0.0.1, no persistence, in a temporary folder."""

    def __init__(self, port: int | None = None) -> None:
        binary = redis_server_bin()
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make redis-deps`")
        self.binary = binary
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="switchyard-redis-"))
        self.log = self.root / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """Where to connect (database 0, no password)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive (a paused server is alive)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        assert self._process is not None
        return self._process.pid

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.root),
            "--logfile", str(self.log),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, cwd=self.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self._paused = False
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING: {self._tail()}")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _signal(self, signum: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self._process is not None
        os.kill(self._process.pid, signum)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT): it answers what was sent meanwhile."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """Kill the server (SIGKILL): an outage; connections are reset."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()  # SIGKILL is delivered to a stopped process too
        process.wait(10)
        self._process = None
        self._paused = False

    def restart(self) -> None:
        """Kill the server if it runs, and start it again on the same port, empty."""
        self.kill()
        self.start()

    def flushall(self) -> None:
        """Empty every database (synchronously, over a short-lived connection)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL SYNC\r\n")
            answer = sock.recv(64)
        if not answer.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL answered {answer!r}")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            if self._paused:
                with contextlib.suppress(RuntimeError, ProcessLookupError):
                    self.resume()
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
