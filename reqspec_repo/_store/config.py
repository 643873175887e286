"""The topology: which DSN serves the API database and each cell, plus connection settings.

Read from a TOML file (``REQSPEC_CONFIG``, default ``reqspec.toml``)::

    [api]
    dsn = "postgresql://reqspec@api-db/nova_api"

    [cells.cell1]
    dsn = "postgresql://reqspec@cell1-db/nova_cell1"

    [settings]
    statement_timeout_ms = 5000

and overridden by environment variables: ``REQSPEC_API_DSN``, ``REQSPEC_CELL_<NAME>_DSN``
(adds or replaces cell ``<name>``, lower-cased), ``REQSPEC_<SETTING>`` for each setting.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ConfigError
from .dsn import mask_dsn, validate_dsn

API = "api"
"""The name of the API database in contexts, locations and messages."""

DEFAULT_CONFIG_FILE = "reqspec.toml"
_CELL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CELL_ENV = re.compile(r"^REQSPEC_CELL_(?P<name>[A-Za-z0-9_-]+)_DSN$")


@attrs.frozen
class Settings:
    """Connection and document settings applied to every database."""

    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    idle_in_transaction_timeout_ms: int = 30000
    connect_timeout_s: int = 5
    pool_min_size: int = 1
    pool_max_size: int = 10
    max_document_bytes: int = 1 << 20

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Settings):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"setting {field.name} must be a non-negative integer, got {value!r}")
        if self.pool_max_size < 1 or self.pool_min_size > self.pool_max_size:
            raise ConfigError("settings: need 1 <= pool_max_size and pool_min_size <= pool_max_size")


@attrs.frozen
class Database:
    """One database of the topology. ``repr`` and ``str`` mask the password."""

    name: str
    dsn: str = attrs.field(repr=False)

    @property
    def masked_dsn(self) -> str:
        return mask_dsn(self.dsn)

    def __repr__(self) -> str:
        return f"Database(name={self.name!r}, dsn={self.masked_dsn!r})"

    __str__ = __repr__


@attrs.frozen
class Topology:
    """The API database and the cells, by name."""

    api: Database
    cells: Mapping[str, Database] = attrs.field(factory=dict)
    settings: Settings = attrs.field(factory=Settings)

    @classmethod
    def from_dsns(
        cls, api_dsn: str, cells: Mapping[str, str], settings: Settings | None = None
    ) -> Topology:
        validate_dsn(api_dsn, API)
        built: dict[str, Database] = {}
        for name, dsn in cells.items():
            _check_cell_name(name)
            built[name] = Database(name, validate_dsn(dsn, name))
        return cls(Database(API, api_dsn), built, settings or Settings())

    def database(self, name: str) -> Database:
        """The API database (``"api"``) or a cell, by name; unknown names are a ConfigError."""
        if name == API:
            return self.api
        try:
            return self.cells[name]
        except KeyError:
            known = ", ".join(sorted(self.cells)) or "none"
            raise ConfigError(f"unknown cell {name!r} (configured cells: {known})") from None

    @property
    def database_names(self) -> list[str]:
        return [API, *sorted(self.cells)]

    def all_databases(self) -> list[Database]:
        return [self.database(n) for n in self.database_names]


def _check_cell_name(name: str) -> None:
    if name == API or not _CELL_NAME.match(name):
        raise ConfigError(
            f"invalid cell name {name!r}: use lower-case letters, digits, '_' or '-', not {API!r}"
        )


def _settings_from(raw: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    names = {f.name for f in attrs.fields(Settings)}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown setting {key!r} (known: {', '.join(sorted(names))})")
        values[key] = value
    for name in names:
        env_value = env.get(f"REQSPEC_{name.upper()}")
        if env_value is not None:
            try:
                values[name] = int(env_value)
            except ValueError:
                raise ConfigError(f"REQSPEC_{name.upper()} must be an integer") from None
    return Settings(**values)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("REQSPEC_CONFIG", DEFAULT_CONFIG_FILE))


def is_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when a config file or an API DSN variable says where the databases are."""
    env = os.environ if env is None else env
    return config_path(env).is_file() or "REQSPEC_API_DSN" in env


def load_topology(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Topology:
    """Read the topology from the TOML file and the environment (the environment wins)."""
    env = os.environ if env is None else env
    file = Path(path) if path is not None else config_path(env)
    raw: dict[str, Any] = {}
    if file.is_file():
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from None
    elif path is not None:
        raise ConfigError(f"config file {file} does not exist")
    unknown = set(raw) - {"api", "cells", "settings"}
    if unknown:
        raise ConfigError(f"{file}: unknown section(s) {', '.join(sorted(unknown))}")

    api_dsn = env.get("REQSPEC_API_DSN") or _table(raw, "api", file).get("dsn")
    if not api_dsn:
        raise ConfigError(
            f"no API database configured: set [api] dsn in {file} or REQSPEC_API_DSN"
        )
    cells: dict[str, str] = {}
    for name, table in _table(raw, "cells", file).items():
        if not isinstance(table, dict) or not isinstance(table.get("dsn"), str):
            raise ConfigError(f"{file}: cell {name!r} needs a dsn string")
        cells[name] = table["dsn"]
    for key, value in env.items():
        match = _CELL_ENV.match(key)
        if match:
            cells[match.group("name").lower()] = value
    settings = _settings_from(_table(raw, "settings", file), env)
    return Topology.from_dsns(str(api_dsn), cells, settings)


def _table(raw: Mapping[str, Any], key: str, file: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: [{key}] must be a table")
    return value
