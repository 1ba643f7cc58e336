"""The fuzzer's gateway: `python -m server` as its own process, on its embedded simulator.

Its own process, so that its memory can be read from /proc and its log read
as an operator reads it; the embedded relay simulator answers at once
(SWITCHYARD_SIM_LATENCY_SCALE=0), so the run's time goes into generated calls.
The summary line of each fuzz run is printed at the end of the session.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import start_gateway_process
from tests.leaks import SCAN

SUMMARIES = pytest.StashKey[list[str]]()


@dataclass
class FuzzedGateway:
    """The gateway process under fuzz: its address, admin key, log and memory."""

    process: asyncio.subprocess.Process
    port: int
    log: Path
    admin_key: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_kb(self) -> int:
        """The process's resident set size (VmRSS), in kB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/<pid>/status")

    async def log_text(self) -> str:
        return await asyncio.to_thread(self.log.read_text, errors="replace")

    async def stop(self) -> int:
        """Stop it as an operator does (SIGTERM); its exit code."""
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)


@pytest.fixture
async def fuzzed_gateway() -> AsyncIterator[FuzzedGateway]:
    """A gateway with an admin key (so the admin API is fuzzed past authentication)."""
    admin_key = "fuzz-admin-" + secrets.token_hex(16)
    SCAN.secret(admin_key)  # the session's scan fails the run if any log holds it
    log = Path(tempfile.mkdtemp(prefix="switchyard-fuzz-")) / "gateway.log"
    SCAN.watch(log)
    env = {
        "SWITCHYARD_SIM_LATENCY_SCALE": "0",
        "SWITCHYARD_ADMIN_KEY": admin_key,
    }
    with log.open("wb") as stderr:
        process, port = await start_gateway_process("", env=env, stderr=stderr)
    gateway = FuzzedGateway(process, port, log, admin_key)
    try:
        yield gateway
    finally:
        await gateway.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each fuzz run's summary line, whether it passed or not."""
    for line in terminalreporter.config.stash.get(SUMMARIES, []):
        terminalreporter.write_line(line)
