"""bench.instructions reads a callgrind dump's total (the run itself needs valgrind)."""

import pytest

from bench.instructions import instructions

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
desc: Trigger: dump
events: Ir
summary: 392286529

fn=(1) main
1 5
totals: 5
"""


def test_the_summary_line_is_the_total():
    assert instructions(DUMP) == 392_286_529


def test_a_dump_with_only_totals_uses_them():
    assert instructions("events: Ir\ntotals: 1234\n") == 1234


def test_anything_else_is_refused():
    with pytest.raises(ValueError, match="not a callgrind dump"):
        instructions("events: Ir\n")
