"""The README's Errors table, read as data: which gRPC statuses it documents."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_statuses(readme: Path = README) -> set[str]:
    """Every `STATUS_NAME` in the status column of the "## Errors" table."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    statuses: set[str] = set()
    for line in section.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) >= 3:
            statuses.update(re.findall(r"`([A-Z_]+)`", cells[1]))
    return statuses
