"""Request contexts: which database a call targets.

In the spirit of Nova's ``target_cell(context, cell)``: a context targets the API
database or one cell, and the repository picks the DSN from it. Nothing else chooses
the database.
"""

from __future__ import annotations

import uuid

import attrs

from .config import API


@attrs.frozen
class RequestContext:
    """Immutable; ``target_cell`` returns a new context for another database."""

    database: str = API
    request_id: str = attrs.field(factory=lambda: f"req-{uuid.uuid4()}")

    @property
    def is_api(self) -> bool:
        return self.database == API

    def target_cell(self, cell: str) -> RequestContext:
        """The same request, targeting ``cell`` (a cell name, or ``"api"``)."""
        return attrs.evolve(self, database=cell)

    def target_api(self) -> RequestContext:
        return attrs.evolve(self, database=API)


def api_context() -> RequestContext:
    """A new request context targeting the API database."""
    return RequestContext(API)


def cell_context(cell: str) -> RequestContext:
    """A new request context targeting one cell database."""
    return RequestContext(cell)


def target_cell(context: RequestContext, cell: str) -> RequestContext:
    """Nova-style spelling of ``context.target_cell(cell)``."""
    return context.target_cell(cell)
