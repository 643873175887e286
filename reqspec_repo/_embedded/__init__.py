"""Internal: development servers (see reqspec_repo/__init__.py for the public API).

One module per job:

- :mod:`.binaries`: where initdb/pg_ctl/postgres come from and their major version;
- :mod:`.os_account`: the unprivileged system user the server runs as when we are root;
- :mod:`.auth`: the superuser's random password, its 0600 file, the password-only pg_hba.conf;
- :mod:`.server`: one cluster in a data directory (initdb, start, stop, kill, pause);
- :mod:`.default`: the persistent default under ``./.reqspec/`` (API + two cells);
- :mod:`.admin`: CREATE/DROP DATABASE through an admin DSN;
- :mod:`.processes`, :mod:`.ports`, :mod:`.dirlock`: /proc, free loopback ports, flock.
"""

from .admin import create_database, drop_database
from .binaries import find_bin_dir
from .default import (
    EMBEDDED_DATABASES,
    EmbeddedTopology,
    embedded_default,
    embedded_default_server,
    stop_embedded_default,
)
from .errors import LocalServerError
from .server import DEFAULT_SETTINGS, LocalServer

__all__ = [
    "DEFAULT_SETTINGS",
    "EMBEDDED_DATABASES",
    "EmbeddedTopology",
    "LocalServer",
    "LocalServerError",
    "create_database",
    "drop_database",
    "embedded_default",
    "embedded_default_server",
    "find_bin_dir",
    "stop_embedded_default",
]
