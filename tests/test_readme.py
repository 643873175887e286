"""The README's library example runs as written against a real topology."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_library_example_runs(fresh_topology, monkeypatch):
    topo = fresh_topology()
    monkeypatch.delenv("REQSPEC_CONFIG", raising=False)
    monkeypatch.setenv("REQSPEC_CONFIG", str(README.parent / "does-not-exist.toml"))
    monkeypatch.setenv("REQSPEC_API_DSN", topo.api.dsn)
    for name, db in topo.cells.items():
        monkeypatch.setenv(f"REQSPEC_CELL_{name.upper()}_DSN", db.dsn)
    section = README.read_text().split("## Library example", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["stored"].version == 1  # type: ignore[attr-defined]
