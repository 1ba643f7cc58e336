"""CPU time and memory of a process tree, read from /proc from outside the process.

CPU is user+sys (``utime`` + ``stime`` of ``/proc/<pid>/stat``), which counts every
thread of a process and is immune to a noisy machine in a way wall time is not.
A tree is the process and its live descendants, so a gateway that forks workers is
measured whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of a tree, in bytes: now (VmRSS) and the high-water mark (VmHWM)."""

    rss: int
    hwm: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces; fields follow the last ')'.
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Direct children of a process (every thread's children, via /proc/<pid>/task)."""
    found: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """The process and all its live descendants."""
    pids = [pid]
    index = 0
    while index < len(pids):
        pids.extend(children(pids[index]))
        index += 1
    return pids


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of one process tree, all threads included."""
    total = 0
    for member in tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            # After the name: state(0) ... utime(11) stime(12) in clock ticks.
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM summed over a process tree."""
    rss = hwm = 0
    for member in tree(pid):
        try:
            lines = (_PROC / str(member) / "status").read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1]) * 1024
    return Memory(rss=rss, hwm=hwm)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat), to spot foreign load."""
    fields = (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS
