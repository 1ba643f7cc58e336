"""Profile a target under load with py-spy, from outside, and summarise where CPU goes.

``python -m bench --profile switchyard`` adds, after the target's measured phases, one
unary and one streaming load phase during which ``py-spy record`` samples the target.
The raw collapsed stacks are kept (feed them to any flame-graph tool, or open them in
speedscope) and the top frames by own time and by module are printed, so a change on
the hot path starts from a profile rather than a guess. Profiled phases are never used
for the figures: sampling costs the target a little CPU.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
# py-spy's root frame with --subprocesses: `process 123:"/path/to/python -m server"`.
_PROCESS = re.compile(r'^process \d+:"(?P<command>[^"]*)"$')


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, output: Path) -> asyncio.subprocess.Process:
    """Start sampling a process tree for ``seconds``; await the result's ``wait()``."""
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (bench extra)")
    return await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "--subprocesses",
        "--full-filenames",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


_PREFIX = re.compile(r"^.*(?:site-packages/|/lib/python3\.\d+/)")
_ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def _short(file: str) -> str:
    """A path relative to site-packages, the stdlib or the project."""
    return _PREFIX.sub("", file).removeprefix(_ROOT)


def summarise(raw: Path, top: int = 12) -> dict[str, Any]:
    """Own-time frames and inclusive time per source file, as shares of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = telemetry = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[_label(frames[-1])] += count
        files = set()
        for frame in frames:
            match = _FRAME.match(frame)
            if match:
                files.add(_short(match.group("file")))
        for file in files:
            inclusive[file] += count
        if any(f.startswith("opentelemetry/") or f == "server/telemetry.py" for f in files):
            telemetry += count
    share = 1 / total if total else 0.0
    return {
        "samples": total,
        # Samples with any tracing or metrics frame: what telemetry costs the target.
        "telemetry": telemetry * share,
        "own": [(name, n * share) for name, n in own.most_common(top)],
        "files": [(name, n * share) for name, n in inclusive.most_common(top * 2)],
    }


def _label(frame: str) -> str:
    """`func (file)` with the file shortened; a process frame without its pid or the
    machine's paths (samples with no Python frame: the interpreter's own C code)."""
    process = _PROCESS.match(frame)
    if process:
        program, *args = process.group("command").split(" ")
        return " ".join(["process", Path(program).name, *args])
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match.group('func')} ({_short(match.group('file'))})"


def summary_text(name: str, summary: dict[str, Any]) -> str:
    """The summary as lines for the terminal."""
    lines = [
        f"{name}: {summary['samples']} samples; in telemetry code: {summary['telemetry']:.1%};"
        " top own time:"
    ]
    lines += [f"  {share:6.1%}  {label}" for label, share in summary["own"]]
    lines.append("  inclusive time by file:")
    lines += [f"  {share:6.1%}  {file}" for file, share in summary["files"]]
    return "\n".join(lines)
