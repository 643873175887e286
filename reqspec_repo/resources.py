"""Where the SQL files and migrations are, in a source checkout or an installed wheel.

The top-level ``sql/`` and ``migrations/`` folders are packaged as the data packages
``reqspec_repo._sql`` and ``reqspec_repo._migrations`` (see setup.cfg), so an installed
package finds them without the repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _locate(folder: str, package: str) -> Path:
    checkout = _SOURCE_ROOT / folder
    # A source checkout (or editable install) wins: the files there are the ones edited.
    if (_SOURCE_ROOT / "setup.cfg").is_file() and checkout.is_dir():
        return checkout
    try:
        installed = Path(str(resources.files(package)))
    except ModuleNotFoundError as exc:  # pragma: no cover - broken install
        raise FileNotFoundError(f"cannot find the packaged {folder}/ folder ({package})") from exc
    return installed


def sql_dir() -> Path:
    """The folder holding the named queries (``*.sql``)."""
    return _locate("sql", "reqspec_repo._sql")


def migrations_dir() -> Path:
    """The folder holding the yoyo migrations."""
    return _locate("migrations", "reqspec_repo._migrations")
