"""A spinner for the wait before the first token, drawn only on a terminal.

Example::

    with Spinner(sys.stdout, "waiting for the first token"):
        first = next(stream)  # the spinner is erased before anything is printed

On anything but a TTY (a pipe, a file, CI) it draws nothing, so output that
is captured stays exactly the answer.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TextIO

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_INTERVAL = 0.1  # seconds between frames
_ERASE = "\r\x1b[K"  # back to column 0, clear to the end of the line


class Spinner:
    """Animates `label` on `out` from `start()` until `stop()`, then erases it."""

    __slots__ = ("_label", "_lock", "_out", "_stopped", "_thread")

    def __init__(self, out: TextIO, label: str) -> None:
        self._out = out
        self._label = label
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # one writer at a time: a frame, or the erase
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Draw the first frame now and animate until stopped; a no-op off a TTY."""
        if not self._out.isatty():
            return
        self._draw(0)
        self._thread = threading.Thread(target=self._animate, name="spinner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and erase; safe to call more than once."""
        if self._thread is None:
            return
        self._stopped.set()
        self._thread.join()
        self._thread = None
        with self._lock:
            self._out.write(_ERASE)
            self._out.flush()

    def _animate(self) -> None:
        frame = 1
        while not self._stopped.wait(_INTERVAL):
            self._draw(frame)
            frame += 1

    def _draw(self, frame: int) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self._out.write(f"{_ERASE}{_FRAMES[frame % len(_FRAMES)]} {self._label}")
            self._out.flush()

    def __enter__(self) -> Spinner:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
