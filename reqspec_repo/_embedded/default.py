"""The embedded default: one persistent server under <working dir>/.reqspec/ with the
databases of a small topology (API + two cells), used when nothing is configured."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from .._store.dsn import mask_dsn
from .os_account import server_os_user
from .server import LocalServer

#: Logical name -> database name of the embedded default topology.
EMBEDDED_DATABASES: Mapping[str, str] = {
    "api": "reqspec_api",
    "cell1": "reqspec_cell1",
    "cell2": "reqspec_cell2",
}

#: The folder, relative to the working directory, that holds the default's server.
DEFAULT_FOLDER = ".reqspec"


@attrs.frozen(repr=False)
class EmbeddedTopology:
    """DSNs of the embedded default: one API database and two cell databases.

    The DSNs carry the server's password: the repr masks them.
    """

    api_dsn: str
    cells: dict[str, str]

    def __repr__(self) -> str:
        cells = {name: mask_dsn(dsn) for name, dsn in self.cells.items()}
        return f"EmbeddedTopology(api_dsn={mask_dsn(self.api_dsn)!r}, cells={cells!r})"


def _folder(workdir: Path | None) -> Path:
    return (Path.cwd() if workdir is None else Path(workdir)).absolute() / DEFAULT_FOLDER


def restrict_folder(folder: Path) -> None:
    """Create folder (if missing) so only its owner may enter it (0700); when we are root and
    the server runs as another system user, that user's group may pass through it (0710)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    user = server_os_user()
    if user is None:
        os.chmod(folder, 0o700)
    else:
        os.chown(folder, os.geteuid(), user.pw_gid)
        os.chmod(folder, 0o710)


def embedded_default_server(workdir: Path | None = None) -> LocalServer:
    """The (not necessarily running) LocalServer of the embedded default in workdir (or cwd)."""
    return LocalServer(_folder(workdir) / "pg")


def embedded_default(workdir: Path | None = None) -> EmbeddedTopology:
    """Start (if needed) the persistent server under <workdir or cwd>/.reqspec/pg, create the
    databases reqspec_api, reqspec_cell1 and reqspec_cell2 if missing, and return their DSNs.

    The server is left running; stop it with :func:`stop_embedded_default`.
    """
    restrict_folder(_folder(workdir))
    server = embedded_default_server(workdir)
    with server.locked():
        server.start()
        for name in EMBEDDED_DATABASES.values():
            server.create_database(name, exist_ok=True)
    return EmbeddedTopology(
        api_dsn=server.dsn(EMBEDDED_DATABASES["api"]),
        cells={cell: server.dsn(EMBEDDED_DATABASES[cell]) for cell in ("cell1", "cell2")},
    )


def stop_embedded_default(workdir: Path | None = None) -> None:
    """Stop the embedded default server of workdir (or cwd), if it is running; data is kept."""
    directory = _folder(workdir) / "pg"
    if directory.exists():
        LocalServer(directory).stop()
