"""The profile summary names frames by project-relative files and never keeps a machine path."""

from pathlib import Path

from bench.profile import summarise

ROOT = str(Path(__file__).resolve().parents[2])


def test_the_summary_keeps_no_machine_path(tmp_path: Path):
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        f'process 29683:"{ROOT}/.venv/bin/python -m server";'
        f"serve ({ROOT}/server/__main__.py:40);"
        f"query_response ({ROOT}/server/convert.py:12) 3\n"
        f'process 29683:"{ROOT}/.venv/bin/python -m server" 1\n'
    )
    summary = summarise(raw)
    assert summary["samples"] == 4
    assert summary["own"] == [
        ("query_response (server/convert.py)", 0.75),
        ("process python -m server", 0.25),
    ]
    assert ("server/convert.py", 0.75) in summary["files"]
    assert ROOT not in repr(summary)
