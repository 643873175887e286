"""The built wheel carries the SQL and the migrations, and works installed on its own:
``reqspec migrate`` and the repository from a clean virtualenv outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )
    [built] = out.glob("reqspec_repo-*.whl")
    return built


def test_wheel_contains_sql_migrations_and_type_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, prefix in (("sql", "reqspec_repo/_sql/"), ("migrations", "reqspec_repo/_migrations/")):
        for path in (ROOT / folder).glob("*.sql"):
            assert prefix + path.name in names
    assert "reqspec_repo/py.typed" in names


def test_installed_wheel_migrates_and_stores_without_the_repository(wheel, tmp_path, pg_server, make_database):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], check=True, capture_output=True)
    dsn = make_database(pg_server, "wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQSPEC_")}
    env.update(REQSPEC_API_DSN=dsn, PYTHONPATH="")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    migrate = subprocess.run(
        [str(venv / "bin" / "reqspec"), "migrate"], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    # Every migration the wheel carries is applied to the empty database, and it says so.
    expected = len([p for p in (ROOT / "migrations").glob("*.sql") if not p.name.endswith(".rollback.sql")])
    assert f": applied {expected} migration" in migrate.stdout, migrate.stdout
    script = (
        "import reqspec_repo as rs, pathlib;"
        "from reqspec_repo._cli.demo import sample_spec;"
        "assert 'site-packages' in rs.__file__, rs.__file__;"
        "repo = rs.RequestSpecRepository.from_topology(rs.load_topology());"
        "s = sample_spec(); repo.create(rs.api_context(), s);"
        "print(repo.get(rs.api_context(), s.instance_uuid).spec == s)"
    )
    run = subprocess.run([str(py), "-c", script], cwd=workdir, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"
