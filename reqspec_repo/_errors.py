"""Typed errors of the library.

Every error a caller can meet derives from :class:`ReqSpecError`. Messages name what was
wrong (instance uuid, field path, database) and never contain a DSN password: callers pass
database *names* ("api", "cell1"), never DSNs, into these constructors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ReqSpecError(Exception):
    """Base class of every error raised by reqspec_repo."""


# --- model and codec ------------------------------------------------------------------


class SpecValidationError(ReqSpecError, ValueError):
    """A RequestSpec (or a part of it) was built with an invalid value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"invalid value for {field}: {message}")


class SpecDecodeError(ReqSpecError, ValueError):
    """A stored document could not be turned back into a RequestSpec."""

    def __init__(
        self, instance_uuid: str | None, problems: Sequence[str], *, database: str | None = None
    ) -> None:
        self.instance_uuid = instance_uuid
        self.problems = list(problems)
        self.database = database
        where = f" in database {database!r}" if database else ""
        super().__init__(
            f"cannot decode request spec of instance {instance_uuid}{where}: "
            + "; ".join(self.problems)
        )


class SpecEncodeError(ReqSpecError, ValueError):
    """A RequestSpec could not be turned into a document (bad value, or too large)."""

    def __init__(self, instance_uuid: str | None, message: str) -> None:
        self.instance_uuid = instance_uuid
        self.message = message
        super().__init__(f"cannot encode request spec of instance {instance_uuid}: {message}")


class DocumentTooLargeError(SpecEncodeError):
    """The encoded document is larger than the configured maximum."""

    def __init__(self, instance_uuid: str | None, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            instance_uuid, f"document is {size} bytes, over the maximum of {limit} bytes"
        )


# --- repository -------------------------------------------------------------------------


class SpecNotFoundError(ReqSpecError, LookupError):
    """No live spec for this instance in the targeted database."""

    def __init__(self, instance_uuid: str, database: str) -> None:
        self.instance_uuid = instance_uuid
        self.database = database
        super().__init__(f"no request spec for instance {instance_uuid} in database {database!r}")


class SpecExistsError(ReqSpecError):
    """create() for an instance that already has a spec in that database."""

    def __init__(self, instance_uuid: str, database: str) -> None:
        self.instance_uuid = instance_uuid
        self.database = database
        super().__init__(
            f"instance {instance_uuid} already has a request spec in database {database!r}"
        )


class ConflictError(ReqSpecError):
    """A compare-and-swap save lost against a concurrent writer."""

    def __init__(
        self,
        instance_uuid: str,
        database: str,
        expected_version: int,
        actual_version: int | None,
    ) -> None:
        self.instance_uuid = instance_uuid
        self.database = database
        self.expected_version = expected_version
        self.actual_version = actual_version
        now = "is gone" if actual_version is None else f"is now at version {actual_version}"
        super().__init__(
            f"conflict saving request spec of instance {instance_uuid} in database {database!r}: "
            f"expected version {expected_version}, but the stored spec {now}"
        )


class SpecMovingError(ReqSpecError):
    """The spec is sealed by a move in progress; writes must wait (retryable)."""

    retryable = True

    def __init__(self, instance_uuid: str, database: str) -> None:
        self.instance_uuid = instance_uuid
        self.database = database
        super().__init__(
            f"request spec of instance {instance_uuid} in database {database!r} is being moved; "
            "retry after the move (or recover()) finishes"
        )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def summarize(items: Mapping[str, object], shown: int = 3) -> str:
    """``"a: why, b: why, c: why (and N more)"``: the first few items of a failure map."""
    first = ", ".join(f"{k}: {v}" for k, v in list(items.items())[:shown])
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return first + more


class BatchError(ReqSpecError):
    """A batch write was refused as a whole because of one or more invalid items."""

    def __init__(self, failures: dict[str, Exception]) -> None:
        self.failures = failures
        super().__init__(f"batch refused, nothing written; invalid: {summarize(failures)}")


# --- configuration and connections ------------------------------------------------------


class ConfigError(ReqSpecError):
    """The topology configuration is wrong (unknown cell, malformed DSN, bad file)."""


class DatabaseUnavailableError(ReqSpecError):
    """A database could not be reached or the connection broke (retryable)."""

    retryable = True

    def __init__(self, database: str, message: str) -> None:
        self.database = database
        super().__init__(f"database {database!r} is unavailable: {message}")


class ReadOnlyDatabaseError(ReqSpecError):
    """A write was sent to a database that only accepts reads (e.g. a standby)."""

    def __init__(self, database: str) -> None:
        self.database = database
        super().__init__(f"database {database!r} is read-only; nothing was written")


class SchemaError(ReqSpecError):
    """The database schema is missing, or newer than this code knows."""

    def __init__(self, database: str, message: str) -> None:
        self.database = database
        super().__init__(f"database {database!r}: {message}")


# --- moves ------------------------------------------------------------------------------


class MoveError(ReqSpecError):
    """A move could not be done; nothing was lost (the spec stays where it was)."""

    def __init__(self, instance_uuid: str, message: str) -> None:
        self.instance_uuid = instance_uuid
        super().__init__(f"cannot move request spec of instance {instance_uuid}: {message}")


class MoveInProgressError(MoveError):
    """Another mover (or recover) holds this instance."""

    retryable = True

    def __init__(self, instance_uuid: str) -> None:
        super().__init__(instance_uuid, "another move or recovery of it is in progress")


class LocationNotFoundError(ReqSpecError, LookupError):
    """The API database has no location record for this instance."""

    def __init__(self, instance_uuid: str) -> None:
        self.instance_uuid = instance_uuid
        super().__init__(f"no location record for instance {instance_uuid} in the API database")
