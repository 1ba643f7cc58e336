"""The secret scan itself: it must find what it is looking for, wherever it hides."""

import logging
from pathlib import Path

from tests.leaks import LeakScan, ScanHandler

KEY = "sy-0123456789ab-" + "Q" * 43


def test_a_secret_in_a_log_record_its_traceback_a_file_or_a_span_is_found(tmp_path: Path):
    scan = LeakScan()
    scan.secret(KEY)
    logger = logging.getLogger("leak-test")
    handler = ScanHandler(scan)
    logger.addHandler(handler)
    try:
        logger.warning("clean line for sy-0123456789ab-...")
        assert scan.findings() == []
        try:
            raise ValueError("Q" * 43)  # the secret part alone
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    (tmp_path / "gateway.log").write_text(f"authorization: Bearer {KEY}\n")
    scan.watch(tmp_path / "gateway.log")
    scan.seen("otlp", b"\x0a\x10" + KEY.encode())
    found = scan.findings()
    assert len([f for f in found if f.startswith("log leak-test")]) == 1
    assert any(f.startswith("file gateway.log") for f in found)
    assert any(f.startswith("otlp") for f in found)


def test_short_strings_are_not_taken_for_secrets():
    scan = LeakScan()
    scan.secret("search")
    scan.seen("log", "tenant search")
    assert scan.secrets == set() and scan.findings() == []
