"""The journal: every settled call on local disk before its answer leaves.

Calls are appended to the active segment file of ``<data dir>/journal/``,
one line a call, each with ONE write(2) to a file opened O_APPEND. The line is
then in the kernel's page cache: it survives the process being killed
(SIGKILL, an OOM kill), and only a crash of the machine itself can lose what
the kernel had not yet written out. The ledger's writer task `rotate`s the
active segment (every flush interval or batch), writes the closed segment's
calls to the database, and `remove`s the segment only once the database has
committed them. On start, every segment left from before is read back and
written again; the database ignores calls it already has (the request id is
the key), so a replay counts nothing twice.

    journal = Journal(data_dir / "journal")
    left_over = journal.open()          # segments of the last run, oldest first
    journal.append(line)                # on the request path: one write(2)
    closed = journal.rotate()           # the writer: close the active segment
    lines = journal.read(closed)        # ... write them, commit, then
    journal.remove(closed)
"""

from __future__ import annotations

import os
from pathlib import Path

_PREFIX = "segment-"
_SUFFIX = ".jsonl"


class JournalError(OSError):
    """The journal could not be written (disk full, I/O error, permissions)."""


class Journal:
    """Append-only segment files in one directory, owned by one process."""

    __slots__ = ("_active", "_active_lines", "_directory", "_fd", "_next")

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_lines = 0
        self._next = 1

    @property
    def directory(self) -> Path:
        """Where the segments are."""
        return self._directory

    @property
    def active_lines(self) -> int:
        """Lines appended to the active segment so far."""
        return self._active_lines

    def open(self) -> list[Path]:
        """Create the directory if needed, start a fresh active segment, and return the
        segments left from before (oldest first) for replay."""
        self._directory.mkdir(parents=True, exist_ok=True)
        left = sorted(self._directory.glob(f"{_PREFIX}*{_SUFFIX}"))
        if left:
            self._next = int(left[-1].name[len(_PREFIX) : -len(_SUFFIX)]) + 1
        self._start_segment()
        return left

    def _start_segment(self) -> None:
        path = self._directory / f"{_PREFIX}{self._next:012d}{_SUFFIX}"
        self._next += 1
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as error:
            self._fd = None
            raise JournalError(
                error.errno, f"cannot open a journal segment: {error.strerror}"
            ) from None
        self._active = path
        self._active_lines = 0

    def append(self, line: bytes) -> None:
        """Write one line, whole, with one write(2); JournalError when it cannot be written."""
        if self._fd is None:
            self._start_segment()  # the last rotation could not open one: try again
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
            while written < len(line):  # a short write (a signal, a full disk): finish it
                written += os.write(self._fd, line[written:])
        except OSError as error:
            raise JournalError(error.errno, f"cannot write the journal: {error.strerror}") from None
        self._active_lines += 1

    def rotate(self) -> Path | None:
        """Close the active segment and start the next; the closed one (None if it was empty)."""
        if self._active_lines == 0:
            return None
        closed = self._active
        self._close_active()
        self._start_segment()
        return closed

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> Path | None:
        """Close the active segment (kept when it has lines, for the next start's replay)."""
        active, lines = self._active, self._active_lines
        self._close_active()
        if active is not None and lines == 0:
            active.unlink(missing_ok=True)
            return None
        return active

    @staticmethod
    def read(path: Path) -> list[bytes]:
        """The whole lines of a segment; a torn last line (a machine crash mid-write) is skipped."""
        data = path.read_bytes()
        lines = data.split(b"\n")
        lines.pop()  # what follows the last newline: empty, or a torn line
        return [line for line in lines if line]

    @staticmethod
    def remove(path: Path) -> None:
        """Delete a segment whose calls the database has committed."""
        path.unlink(missing_ok=True)
