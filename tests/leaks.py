"""The suite's scan for leaked key secrets: every log line and exported span, every secret.

Secrets are registered as the tests come by them (every secret the admin API
makes in this process, and those a gateway process printed through the CLI);
text is registered as it is produced (every log record of this process, the
log files of gateway processes, every OTLP export a test receiver got). At
the end of the session `findings` lists every secret found anywhere, and the
run fails if there is one (tests/conftest.py).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

_MIN_SECRET = 20  # shorter strings are not secrets this scan is about


@dataclass
class LeakScan:
    """What was seen, and the secrets it must not contain."""

    secrets: set[str] = field(default_factory=set)
    texts: list[tuple[str, bytes]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def secret(self, value: str) -> None:
        """A secret (or a whole key) that must appear nowhere."""
        if len(value) >= _MIN_SECRET:
            with self._lock:
                self.secrets.add(value)
                # the secret part of a whole key, as a log might cut it
                if value.startswith("sy-") and value.count("-") >= 2:
                    self.secrets.add(value.split("-", 2)[2])

    def seen(self, where: str, text: str | bytes) -> None:
        """Text something produced: a log line, a span export."""
        data = text.encode() if isinstance(text, str) else text
        with self._lock:
            self.texts.append((where, data))

    def watch(self, path: Path) -> None:
        """A log file to read at the end."""
        with self._lock:
            self.files.append(path)

    def sources(self) -> list[tuple[str, bytes]]:
        """Everything to scan."""
        found = list(self.texts)
        for path in self.files:
            if path.exists():
                found.append((f"file {path.name}", path.read_bytes()))
        return found

    def findings(self) -> list[str]:
        """Where each secret was found (empty: clean)."""
        hits = []
        needles = [(secret, secret.encode()) for secret in sorted(self.secrets)]
        for where, data in self.sources():
            for secret, needle in needles:
                if needle in data:
                    hits.append(f"{where}: contains the secret {secret[:6]}...")
        return hits


class ScanHandler(logging.Handler):
    """Feeds every log record of this process (its traceback included) to a scan."""

    def __init__(self, scan: LeakScan) -> None:
        super().__init__(logging.DEBUG)
        self._scan = scan
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._scan.seen(f"log {record.name}", self.format(record))
        except Exception:
            self.handleError(record)


SCAN = LeakScan()
