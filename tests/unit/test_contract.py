"""The released contract cannot break by accident: `buf breaking` (WIRE_JSON) guards it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = str(Path(sys.executable).parent / "buf")
RELEASED = ROOT / "proto/released/switchyard-v1.binpb"
GATEWAY = "switchyard/v1/gateway.proto"


def breaking(module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUF, "breaking", str(module), "--against", str(RELEASED)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_the_contract_today_is_compatible_with_the_release():
    checked = subprocess.run(
        ["make", "-s", "breaking"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("change", "before", "after", "complaint"),
    [
        ("renumbered", "string prompt = 1;", "string prompt = 99;", 'field "1" with name "prompt"'),
        ("retyped", "uint32 max_tokens = 5;", "string max_tokens = 5;", "max_tokens"),
        ("removed", "bool disable_fallback = 9;", "reserved 9;", "disable_fallback"),
        ("renamed", "string model = 4;", "string model_name = 4;", "model"),
        ("enum value renamed", "TASK_FAST = 3;", "TASK_QUICK = 3;", "TASK_FAST"),
    ],
)
def test_a_wire_or_json_breaking_change_fails(tmp_path, change, before, after, complaint):
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("released"))
    source = tmp_path / "proto" / GATEWAY
    text = source.read_text()
    assert text.count(before) == 1, before
    source.write_text(text.replace(before, after))
    result = breaking(tmp_path)
    assert result.returncode != 0, f"a {change} field passed buf breaking"
    assert GATEWAY in result.stdout and complaint in result.stdout, result.stdout


def test_an_added_field_is_not_breaking(tmp_path):
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("released"))
    source = tmp_path / "proto" / GATEWAY
    text = source.read_text()
    anchor = "  CacheMode cache_mode = 11;\n"
    source.write_text(text.replace(anchor, anchor + "  // A new knob.\n  bool new_knob = 99;\n"))
    assert breaking(tmp_path).returncode == 0
