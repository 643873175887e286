"""The one error type of the embedded server modules."""

from __future__ import annotations

from .._errors import ReqSpecError


class LocalServerError(ReqSpecError, RuntimeError):
    """A local PostgreSQL server could not be initialised, started, stopped or reached."""
