"""The unprivileged system user PostgreSQL runs as when we are root (it refuses root)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

from .errors import LocalServerError

_OS_USER = "reqspec-pg"
_FALLBACK_OS_USER = "pgserver"


def server_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as, or None when not running as root.

    ``reqspec-pg``, created if missing; ``pgserver`` is reused if creation fails;
    ``REQSPEC_PG_OS_USER`` overrides.
    """
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("REQSPEC_PG_OS_USER") or _OS_USER
    try:
        return pwd.getpwnam(wanted)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", wanted],
        capture_output=True,
        check=False,
    )
    for name in (wanted, _FALLBACK_OS_USER):  # a concurrent useradd may have won the race
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise LocalServerError(
        f"running as root, and system user {wanted!r} could not be created (useradd failed); "
        "create it or set REQSPEC_PG_OS_USER to an existing unprivileged user"
    )


def ensure_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Let user pass through path and its ancestors: 'others' search (x) permission is added
    only where neither its owner nor its group bits already let the user through."""
    for part in [path, *path.parents]:
        try:
            st = part.stat()
        except OSError:
            continue
        if st.st_uid == user.pw_uid and st.st_mode & stat.S_IXUSR:
            continue
        if st.st_gid == user.pw_gid and st.st_mode & stat.S_IXGRP:
            continue
        if not st.st_mode & stat.S_IXOTH:
            part.chmod(st.st_mode | stat.S_IXOTH)
