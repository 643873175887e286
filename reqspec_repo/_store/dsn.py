"""DSN parsing and masking: a password never leaves this module in clear."""

from __future__ import annotations

import re

from psycopg import conninfo

from .._errors import ConfigError

MASK = "***"
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.I)


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (works on malformed DSNs too)."""
    masked = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, dsn)
    masked = _QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, masked)
    return _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, masked)


def mask_text(text: str, secrets: list[str]) -> str:
    """Remove known secrets (passwords) and DSN passwords from free text, e.g. a driver error."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return mask_dsn(text)


def password_of(dsn: str) -> str | None:
    try:
        return conninfo.conninfo_to_dict(dsn).get("password")  # type: ignore[return-value]
    except Exception:
        return None


def validate_dsn(dsn: str, database: str) -> str:
    """Check that a DSN parses; the error names the database, never the password."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError(f"database {database!r}: empty DSN")
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception:
        raise ConfigError(f"database {database!r}: malformed DSN {mask_dsn(dsn)!r}") from None
    port = str(params.get("port") or "")
    if port and not all(p.strip().isdigit() for p in port.split(",")):
        raise ConfigError(f"database {database!r}: malformed DSN {mask_dsn(dsn)!r} (port {port!r})")
    return dsn
