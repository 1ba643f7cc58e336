"""`switchyard report`: exact per-model costs, AUTO against one model, with the saving."""

import argparse
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from server import report
from server.catalog import default_catalog
from server.domain import Task
from server.pipeline.router import Router
from server.settings import RoutingSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "clients" / "examples" / "workload.jsonl"

SMALL = """\
# two kinds of request
{"prompt": "What is the capital of France?", "expected_output_tokens": 20, "count": 10}
{"prompt": "Classify: spam or not?", "task": "batch", "expected_output_tokens": 5}

{"prompt": "Turn this into a list", "max_tokens": 100, "model": "gpt-4.1"}
"""


def args(tmp_path, text=SMALL, *extra):
    path = tmp_path / "workload.jsonl"
    path.write_text(text, encoding="utf-8")
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return parser.parse_args([str(path), *extra])


def rows_of(out: str) -> tuple[dict, dict]:
    """The two tables of the report: model -> its figures."""
    tables: list[dict] = []
    for line in out.splitlines():
        if line.startswith("  model"):
            tables.append({})
        elif line.startswith("  ") and tables:
            name, *figures = line.split()
            tables[-1][name] = [f.replace(",", "") for f in figures]
    auto, single = tables
    return auto, single


def test_costs_per_model_by_hand(tmp_path, capsys):
    assert report.run(args(tmp_path, SMALL, "--model", "claude-sonnet-4-20250514")) == 0
    out = capsys.readouterr().out
    # Row 1, AUTO -> gemini-2.5-flash: 30 bytes = 8 + 4 = 12 input tokens, 20 output
    #   10 x (12 * 2,500 + 20 * 10,000) = 10 x 230,000 = 2,300,000
    # Row 2, BATCH -> deepseek-v3.2: 22 bytes = 6 + 4 = 10 input, 5 output
    #   10 * 420 + 5 * 420 = 6,300
    # Row 3, gpt-4.1 by name: 21 bytes = 6 + 4 = 10 input, 400 output capped at max_tokens 100
    #   10 * 8,000 + 100 * 32,000 = 3,280,000
    # AUTO: 2,300,000 + 6,300 + 3,280,000 = 5,586,300 nano-dollars
    auto, single = rows_of(out)
    assert auto == {
        "gemini-2.5-flash": ["10", "120", "200", "0.0023"],
        "deepseek-v3.2": ["1", "10", "5", "0.0000063"],
        "gpt-4.1": ["1", "10", "100", "0.00328"],
        "total": ["12", "0.0055863"],
    }
    # On claude-sonnet-4: 10 x (12 * 15,000 + 20 * 75,000) = 16,800,000
    #   + (10 * 15,000 + 5 * 75,000) = 525,000 + (10 * 15,000 + 100 * 75,000) = 7,650,000
    #   = 24,975,000; saving 24,975,000 - 5,586,300 = 19,388,700 = 77.63...% -> 77.6%
    assert single == {
        "claude-sonnet-4-20250514": ["12", "140", "305", "0.024975"],  # 120+10+10, 200+5+100
        "total": ["12", "0.024975"],
    }
    assert (
        "AUTO routing saves $0.0193887 (77.6%) against sending everything to claude-sonnet-4-20250514."
        in out
    )


def test_comparison_is_exact():
    rows = report.load_workload(EXAMPLE)
    router = Router(default_catalog(), RoutingSettings())
    comparison = report.compare(rows, router, "gpt-4.1", 400)
    assert comparison.single.cost - comparison.auto.cost == comparison.saving
    assert comparison.auto.requests == comparison.single.requests == sum(r.count for r in rows)
    exact = Decimal(comparison.saving * 100) / Decimal(comparison.single.cost)
    assert abs(comparison.saving_percent - exact) <= Decimal("0.05")


def test_the_example_workload_runs_and_is_varied(capsys):
    rows = report.load_workload(EXAMPLE)
    assert len(rows) >= 30
    assert any(not row.request.messages[-1].text.isascii() for row in rows)  # Korean
    assert {row.request.task for row in rows} >= {None, *Task}
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.run(parser.parse_args([str(EXAMPLE)])) == 0
    out = capsys.readouterr().out
    assert "everything on claude-sonnet-4-20250514" in out and "AUTO routing saves $" in out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json\n", "workload.jsonl:1: not a JSON object"),
        ('{"prompt": "hi"}\n{"task": "fast"}\n', ":2: needs a prompt or a user message"),
        ('{"prompt": "hi", "task": "poetry"}\n', "task 'poetry' is not one of"),
        ('{"prompt": "hi", "count": 0}\n', "count must be a whole number of at least 1"),
        ('{"prompt": "hi", "colour": "red"}\n', "unknown key 'colour'"),
        ('{"prompt": "hi", "model": "gpt-9"}\n', "'gpt-9' is not served"),
        ("# nothing\n", "no requests in it"),
    ],
)
def test_bad_workloads_name_the_line_and_exit_2(tmp_path, capsys, text, needle):
    assert report.run(args(tmp_path, text)) == 2
    assert needle in capsys.readouterr().err


def test_unknown_baseline_model_exits_2(tmp_path, capsys):
    assert report.run(args(tmp_path, SMALL, "--model", "gpt-9")) == 2
    assert "--model" in capsys.readouterr().err


def test_png_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "chart.png"
    assert report.run(args(tmp_path, SMALL, "--png", str(png))) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Chart written to {png}" in capsys.readouterr().out


def test_python_dash_m_server_report():
    done = subprocess.run(
        [sys.executable, "-m", "server.report", str(EXAMPLE), "--model", "gpt-4.1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sending everything to gpt-4.1." in done.stdout
