"""Where the SQL files and migrations are, in a source checkout or an installed wheel.

The top-level ``sql/`` and ``migrations/`` folders are packaged as the data folders
``reqspec_repo/_sql`` and ``reqspec_repo/_migrations`` (see setup.cfg), so an installed
package finds them without the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_PACKAGE = _PACKAGE.parent  # this module lives in reqspec_repo/_store/
_SOURCE_ROOT = _PACKAGE.parent


def _locate(folder: str, packaged: str) -> Path:
    checkout = _SOURCE_ROOT / folder
    # A source checkout (or editable install) wins: the files there are the ones edited.
    if (_SOURCE_ROOT / "setup.cfg").is_file() and checkout.is_dir():
        found = checkout
    else:
        found = _PACKAGE / packaged
    if not any(found.glob("*.sql")):
        raise FileNotFoundError(f"no .sql files in {found}: the reqspec_repo install is incomplete")
    return found


def sql_dir() -> Path:
    """The folder holding the named queries (``*.sql``)."""
    return _locate("sql", "_sql")


def migrations_dir() -> Path:
    """The folder holding the yoyo migrations."""
    return _locate("migrations", "_migrations")
