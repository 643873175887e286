"""Password authentication of the servers started here: the secret, its file, pg_hba.conf.

Every server requires the superuser's password (scram-sha-256) over TCP and over the Unix
socket. The password is random, made at initdb, and kept in a file only its owner can read
(mode 0600); DSNs built for the owner carry it. Nothing here prints or logs it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

#: The superuser every server here is initialised with.
SUPERUSER = "postgres"

#: pg_hba.conf of every server started here: the password, whoever and however one connects.
HBA_TEXT = (
    "# written by reqspec_repo._embedded: every connection must prove the superuser's\n"
    "# password (scram-sha-256); the server listens on 127.0.0.1 and a socket only its owner\n"
    "# can reach. Any rule letting a connection in without it is undone at the next start.\n"
    "local all all scram-sha-256\n"
    "host  all all 127.0.0.1/32 scram-sha-256\n"
)

_STRONG_METHODS = frozenset({"scram-sha-256", "reject"})
_SCRAM_ITERATIONS = 4096


def new_password() -> str:
    """A random password (43 URL-safe characters: no quoting needed in a DSN or pgpass)."""
    return secrets.token_urlsafe(32)


def write_secret_file(path: Path, text: str) -> None:
    """Write text to path atomically, readable by the current user only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_password(path: Path) -> str | None:
    """The password kept in path, or None when there is none."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def hba_is_strict(hba_path: Path) -> bool:
    """True when every rule of pg_hba.conf asks for a password (scram) or rejects."""
    try:
        lines = hba_path.read_text().splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0].startswith("include"):
            return False  # rules we cannot see
        method_at = 3 if fields[0] == "local" else 4
        if len(fields) <= method_at or fields[method_at] not in _STRONG_METHODS:
            return False
    return True


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for password (RFC 5802/7677).

    Setting a role's password from its verifier keeps the secret itself out of the statement,
    so out of any server log line that could quote it.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
