"""The middle step of ``make nova-compat``: import the rows Nova built, export them back.

Skipped unless ``REQSPEC_NOVA_COMPAT_DIR`` names the folder the generator wrote (the
Makefile sets it); it writes ``import_report.json`` and ``exported.jsonl`` there for
``tests/fixtures/nova/compare.py``, which loads them with Nova.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reqspec_repo._nova.exporting import export_specs
from reqspec_repo._nova.importing import import_file
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository

FOLDER = os.environ.get("REQSPEC_NOVA_COMPAT_DIR")

pytestmark = pytest.mark.skipif(not FOLDER, reason="run by `make nova-compat` (needs Nova's output)")


def test_every_generated_row_imports_and_exports(fresh_topology):
    folder = Path(FOLDER or ".")
    with RequestSpecRepository.from_topology(fresh_topology()) as repo:
        store = SpecStore(repo)
        report = import_file(store, folder / "cases.jsonl")
        (folder / "import_report.json").write_text(json.dumps(report.as_dict(), indent=1))
        assert report.rejected == 0, [r for r in report.rows if r.status == "rejected"]
        rows = list(export_specs(store))
    (folder / "exported.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(rows) == report.imported
