"""``python -m bench --quick`` runs end to end and prints every row (no timing checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("msgspec")

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_every_row() -> None:
    from bench.run import ROWS

    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for row in ROWS:
        assert row in out, f"row {row!r} missing from:\n{out}"
    assert "fsync=on" in out and "synchronous_commit=on" in out
    assert "targets NOT enforced" in out
    assert "Stable figures (client CPU per call" in out
    assert (ROOT / "bench" / "out" / "bench-quick.png").stat().st_size > 10_000
    for target in ("single create", "single get", "CAS save", "batch create", "batch get", "codec encode",
                   "codec decode", "get p50", "peak RSS", "batch move", "mixed 1x16: repo throughput",
                   "mixed 4x8: repo p99", "mixed 4x8: zero errors", "whole-database move",
                   "mover peak RSS", "nothing in flight", "interrupted moves", "verify at"):
        assert any(target in line and ("met" in line or "pending" in line) for line in out.splitlines()), target
