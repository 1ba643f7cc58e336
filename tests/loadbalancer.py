"""A throwaway gRPC load balancer for tests: nginx's grpc_pass on a free loopback port.

`TempNginx` runs Debian's nginx (``make lb-deps`` installs it) in the foreground
(``daemon off``), with its master and one worker, every file it writes (pid, logs,
temp folders) in a temporary folder of its own and no system configuration read,
so it needs no root and never touches an nginx the machine happens to run.

    with TempNginx(["127.0.0.1:50061", "127.0.0.1:50062"]) as lb:
        channel = grpc.aio.insecure_channel(lb.address)   # round robin over both

What the configuration does, and why (nginx 1.22, Debian 12; see `config`):

* HTTP/2 in clear text with prior knowledge on the listening side, which is what
  an insecure gRPC channel speaks. nginx before 1.25.1 spells it as a parameter of
  `listen` (``listen ADDR http2``); 1.25.1 and later want ``http2 on;`` and warn
  about the parameter, so the spelling follows the installed version.
* Round robin (nginx's default) over `upstream backends`. nginx's gRPC proxy does
  not multiplex: each call is one upstream connection, so `keepalive` caches idle
  ones to the backends (and `keepalive_requests`/`keepalive_timeout` there keep
  them long), instead of a TCP handshake per call.
* Streams: `grpc_read_timeout` / `grpc_send_timeout` bound the silence between two
  messages of a call (not the call), and `client_body_timeout` the silence of a
  client-streaming request; all STREAM_TIMEOUT_S (5 minutes), not nginx's 60 s, so a
  slow generation is not cut by the balancer. `client_max_body_size 0`: a stream's
  body is unbounded (gRPC has its own message limits). `keepalive_requests` and
  `keepalive_timeout` on the listening side are raised too: nginx otherwise sends
  GOAWAY after 1000 calls on one client connection, and drops it idle after 75 s.
* Retries: ``grpc_next_upstream error timeout`` (nginx's default, written down) with
  one try per backend. nginx treats every gRPC call as non-idempotent (a POST), so
  it moves a call to the next backend only while the request was not yet sent to
  one (connection refused or reset, or the connect timing out): that is how a
  stopped backend is skipped with no error to the caller. It never replays a call
  a backend may have started (that would need `non_idempotent`, deliberately not
  set: a gateway call spends money), and never once a byte went back to the client.
  nginx has no way to retry on a gRPC status (UNAVAILABLE travels in an HTTP 200's
  trailers; `http_503` would only see HTTP-level 503s), so there is no
  "unavailable" condition to add. A failed backend is left out for FAIL_TIMEOUT_S.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.postgres import free_port

STREAM_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 2
FAIL_TIMEOUT_S = 10
UPSTREAM_KEEPALIVE = 32


def nginx_bin() -> str | None:
    """The path of nginx, or None when not installed."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"  # Debian's, off a non-root user's PATH
    return found


def nginx_version(binary: str) -> tuple[int, ...]:
    """nginx's version (`nginx -v` prints ``nginx version: nginx/1.22.1`` on stderr)."""
    shown = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", shown)
    if found is None:
        raise RuntimeError(f"cannot read nginx's version from {shown!r}")
    return tuple(int(part) for part in found.groups())


class TempNginx:
    """One nginx balancing gRPC over `backends` (``host:port`` each) on 127.0.0.1."""

    def __init__(self, backends: Sequence[str], port: int | None = None) -> None:
        if not backends:
            raise ValueError("TempNginx needs at least one backend")
        binary = nginx_bin()
        if binary is None:
            raise RuntimeError("nginx is not installed: run `make lb-deps`")
        self.binary = binary
        self.version = nginx_version(binary)
        self.backends = list(backends)
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="switchyard-nginx-"))
        self.conf = self.root / "nginx.conf"
        self.error_log = self.root / "error.log"
        self.access_log = self.root / "access.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Where gRPC clients connect (an insecure channel)."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config(self) -> str:
        """The nginx.conf this balancer runs with (see the module docstring)."""
        root = self.root
        servers = "\n".join(
            f"        server {backend} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;"
            for backend in self.backends
        )
        if self.version >= (1, 25, 1):
            listen = f"listen 127.0.0.1:{self.port};\n        http2 on;"
        else:
            listen = f"listen 127.0.0.1:{self.port} http2;"
        # As root, the workers would switch to `nobody`, who cannot write in our folder.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {root}/tmp/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""# written by tests/loadbalancer.py
{user}daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {self.error_log} notice;

events {{
    worker_connections 1024;
}}

http {{
    log_format grpc '$remote_addr "$request" $status grpc-status=$sent_trailer_grpc_status '
                    'upstream=$upstream_addr upstream_status=$upstream_status '
                    'time=$request_time';
    access_log {self.access_log} grpc;
{temp}

    upstream backends {{
{servers}
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}

    server {{
        {listen}
        keepalive_requests 1000000;
        keepalive_timeout 3600s;
        client_max_body_size 0;
        client_body_timeout {STREAM_TIMEOUT_S}s;

        location / {{
            grpc_pass grpc://backends;
            grpc_connect_timeout {CONNECT_TIMEOUT_S}s;
            grpc_read_timeout {STREAM_TIMEOUT_S}s;
            grpc_send_timeout {STREAM_TIMEOUT_S}s;
            grpc_socket_keepalive on;
            grpc_next_upstream error timeout;
            grpc_next_upstream_tries {len(self.backends)};
        }}
    }}
}}
"""

    def _command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.root), "-c", str(self.conf), "-e",
                str(self.error_log), *extra]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, check it (`nginx -t`), start nginx and wait for its port."""
        if self.running:
            return
        (self.root / "tmp").mkdir(exist_ok=True)
        self.conf.write_text(self.config())
        checked = subprocess.run(
            self._command("-t", "-q"), capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise RuntimeError(f"nginx rejects its configuration: {checked.stderr.strip()}")
        self._process = subprocess.Popen(
            self._command(),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its worker shares this group: stop() can end both
        )
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not listen on {self.address}: {self._tail()}")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _tail(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def access_lines(self) -> list[str]:
        """The access log so far, one line per call (upstream address and gRPC status)."""
        try:
            return self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx: fast shutdown (SIGTERM to the master), SIGKILL to its group if it hangs."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        self._process = None

    def close(self) -> None:
        """Stop nginx and remove its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempNginx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
