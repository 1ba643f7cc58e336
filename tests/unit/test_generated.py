"""gen/ must be exactly what `make proto` produces from proto/ today."""

import filecmp
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_not_stale(tmp_path):
    subprocess.run(
        ["make", "-s", "proto", f"GEN={tmp_path}"], cwd=ROOT, check=True, capture_output=True
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(ROOT / "gen")
        for p in (ROOT / "gen").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "run `make proto`: generated files were added or removed"
    stale = [
        str(p) for p in fresh if not filecmp.cmp(tmp_path / p, ROOT / "gen" / p, shallow=False)
    ]
    assert not stale, f"run `make proto`: these files are stale: {stale}"
