"""Upgrades of stored documents from older schema versions.

A document carries ``"schema_version": N``. An upgrade step turns a version-N document
dict into a version N+1 one; :func:`upgrade` applies the registered steps in order up to
:data:`SCHEMA_VERSION`. Steps must not mutate their input (they return a new dict; a
shallow copy plus replaced values is enough). A document newer than this code, or one for
which a step is missing, raises :class:`~reqspec_repo.SpecDecodeError`.

History:

* 1 -> 2: ``scheduler_hints`` values were a plain string or a list; they are now always a
  list of strings. ``is_bfv`` could be absent; it now defaults to false.
* 2 -> 3: the model keeps every field Nova 34 persists (flavor id/description/projects...,
  NUMA thread and emulator policies, CPU topology, reserved CPUs, negative page-size
  classes, PCI ``requester_id``/``is_new``, NUMA limits, group owner and timestamps,
  ``unknown_nova_fields``); absent keys take their defaults. ``user_id`` may now be
  unknown: the ``""`` that version 2 imports stored for a RequestSpec older than 1.9
  (which has no user_id) becomes null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

from .._errors import SpecDecodeError

__all__ = [
    "SCHEMA_VERSION",
    "UpgradeRegistry",
    "UpgradeStep",
    "document_version",
    "register",
    "upgrade",
]

#: The schema version written by this code.
SCHEMA_VERSION: Final = 3

VERSION_KEY: Final = "schema_version"

Document: TypeAlias = dict[str, Any]
UpgradeStep: TypeAlias = Callable[[Document], Document]


def _doc_uuid(doc: Mapping[str, Any]) -> str | None:
    value = doc.get("instance_uuid")
    return value[:64] if isinstance(value, str) else None


def document_version(
    doc: Mapping[str, Any], *, instance_uuid: str | None = None, database: str | None = None
) -> int:
    """Return the schema version of a document dict, or raise SpecDecodeError."""
    if not isinstance(doc, Mapping):
        raise SpecDecodeError(
            instance_uuid, [f"document must be a JSON object, got {type(doc).__name__} @ $"],
            database=database,
        )
    version = doc.get(VERSION_KEY)
    if type(version) is not int or version < 1:
        problem = (
            "required field missing"
            if VERSION_KEY not in doc
            else f"must be a positive integer, got {version!r}"
        )
        raise SpecDecodeError(
            instance_uuid or _doc_uuid(doc), [f"{problem} @ $.{VERSION_KEY}"], database=database
        )
    return version


class UpgradeRegistry:
    """Upgrade steps keyed by the version they upgrade from."""

    def __init__(self, latest: int) -> None:
        self.latest = latest
        self._steps: dict[int, UpgradeStep] = {}

    def register(self, from_version: int) -> Callable[[UpgradeStep], UpgradeStep]:
        """Decorator registering ``step`` as the upgrade from ``from_version``."""
        if not 1 <= from_version < self.latest:
            raise ValueError(f"cannot register a step from version {from_version}")

        def decorate(step: UpgradeStep) -> UpgradeStep:
            if from_version in self._steps:
                raise ValueError(f"a step from version {from_version} is already registered")
            self._steps[from_version] = step
            return step

        return decorate

    def upgrade(
        self,
        doc: Document,
        *,
        instance_uuid: str | None = None,
        database: str | None = None,
    ) -> Document:
        """Upgrade ``doc`` to the latest version.

        Returns ``doc`` itself when it is already current, else a new dict (``doc`` is
        never mutated).
        """
        uuid = instance_uuid or _doc_uuid(doc)
        version = document_version(doc, instance_uuid=uuid, database=database)
        if version > self.latest:
            raise SpecDecodeError(
                uuid,
                [
                    f"schema version {version} is newer than the newest this code "
                    f"understands ({self.latest}) @ $.{VERSION_KEY}"
                ],
                database=database,
            )
        while version < self.latest:
            step = self._steps.get(version)
            if step is None:
                raise SpecDecodeError(
                    uuid,
                    [f"no upgrade step from schema version {version} @ $.{VERSION_KEY}"],
                    database=database,
                )
            try:
                new = step(doc)
            except SpecDecodeError:
                raise
            except Exception as exc:  # a malformed old document
                raise SpecDecodeError(
                    uuid,
                    [f"upgrade from schema version {version} failed: {exc!r} @ $"],
                    database=database,
                ) from exc
            if new is doc:
                raise RuntimeError(f"upgrade step from version {version} returned its input")
            version += 1
            new[VERSION_KEY] = version
            doc = new
        return doc


REGISTRY: Final = UpgradeRegistry(SCHEMA_VERSION)
register: Final = REGISTRY.register


def upgrade(
    doc: Document, *, instance_uuid: str | None = None, database: str | None = None
) -> Document:
    """Upgrade a document dict to :data:`SCHEMA_VERSION` with the registered steps."""
    return REGISTRY.upgrade(doc, instance_uuid=instance_uuid, database=database)


# --- steps --------------------------------------------------------------------------------


@register(1)
def _v1_to_v2(doc: Document) -> Document:
    """Hint values become lists of strings; ``is_bfv`` defaults to false."""
    new = dict(doc)
    hints = doc.get("scheduler_hints")
    if isinstance(hints, dict):
        # A string becomes a one-element list; anything else is left for the decoder to
        # check (and report with its path).
        new["scheduler_hints"] = {
            key: [value] if isinstance(value, str) else value for key, value in hints.items()
        }
    new.setdefault("is_bfv", False)
    return new


@register(2)
def _v2_to_v3(doc: Document) -> Document:
    """``user_id: ""`` (version 2's stand-in for "not known") becomes null."""
    new = dict(doc)
    if new.get("user_id") == "":
        new["user_id"] = None
    return new
