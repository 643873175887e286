"""Topology configuration: TOML file, environment overrides, masking, clear errors."""

from __future__ import annotations

import pytest

from reqspec_repo._errors import ConfigError
from reqspec_repo._store.config import Settings, Topology, load_topology
from reqspec_repo._store.context import api_context
from reqspec_repo._store.dsn import mask_dsn

TOML = """
[api]
dsn = "postgresql://app:hunter2@api-db:5432/nova_api"

[cells.cell1]
dsn = "host=cell1-db user=app password=hunter2 dbname=nova_cell1"

[settings]
statement_timeout_ms = 1500
"""


def test_toml_file_and_environment_overrides(tmp_path):
    path = tmp_path / "reqspec.toml"
    path.write_text(TOML)
    env = {
        "REQSPEC_CONFIG": str(path),
        "REQSPEC_CELL_CELL2_DSN": "postgresql://app@cell2-db/nova_cell2",
        "REQSPEC_LOCK_TIMEOUT_MS": "900",
    }
    topo = load_topology(env=env)
    assert topo.database_names == ["api", "cell1", "cell2"]
    assert topo.settings.statement_timeout_ms == 1500 and topo.settings.lock_timeout_ms == 900
    env["REQSPEC_API_DSN"] = "postgresql://other-api/db"
    assert load_topology(env=env).api.dsn == "postgresql://other-api/db"


def test_passwords_are_masked_in_repr_and_str(tmp_path):
    path = tmp_path / "reqspec.toml"
    path.write_text(TOML)
    topo = load_topology(path, env={})
    for text in (repr(topo), str(topo.api), repr(topo.cells["cell1"])):
        assert "hunter2" not in text
    assert mask_dsn("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert "hunter2" not in mask_dsn("host=h password='hunter2' dbname=x")


def test_unknown_cell_names_the_cell_and_the_known_ones():
    topo = Topology.from_dsns("postgresql://h/api", {"cell1": "postgresql://h/c1"})
    with pytest.raises(ConfigError, match=r"unknown cell 'cell7'.*cell1"):
        topo.database(api_context().target_cell("cell7").database)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[api]\ndsn = 1\n", "database .api.: malformed DSN"),
        ("[cells.c1]\ndsn = 'postgresql://h/c'\n", "no API database configured"),
        ("[api]\ndsn='postgresql://h/a'\n[cells.c1]\nnodsn=1\n", "cell 'c1' needs a dsn"),
        ("[api]\ndsn='postgresql://h/a'\n[settings]\nbogus=1\n", "unknown setting 'bogus'"),
        ("[api\n", "cannot read config file"),
        ("[api]\ndsn='postgresql://h/a'\n[cells.API]\ndsn='postgresql://h/b'\n", "invalid cell name"),
    ],
)
def test_bad_config_files_give_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_topology(path, env={})


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="pool_max_size"):
        Settings(pool_max_size=0)
