"""Field rules: the one statement of what each model field accepts.

A :class:`Rule` is attached to every field of the model as attrs metadata (key
:data:`RULE`). The model's validators and converters are built from it here, and the codec
generates its fast decoding paths from the same rules (see ``codec._generate_fast_paths``),
so tightening a rule changes both at once.

Type checks use exact classes (``type(v) is int``) so that bools are not taken for integers.
"""

from __future__ import annotations

import math
import re
import uuid as _uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias

import attrs

from .._errors import SpecValidationError

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_JSON_DEPTH",
    "RULE",
    "Kind",
    "Rule",
    "canonical_uuid",
    "json_problem",
    "rule",
    "rule_of",
    "type_name",
]

#: Largest integer accepted anywhere (PostgreSQL bigint / orjson signed 64-bit range).
INT_MAX: Final = (1 << 63) - 1
INT_MIN: Final = -(1 << 63)
#: Deepest nesting accepted inside a JSON value (image properties, kept Nova fields).
MAX_JSON_DEPTH: Final = 64
_FLOAT_EXACT_LIMIT: Final = float(2**53)

#: The attrs metadata key holding a field's Rule.
RULE: Final = "reqspec_rule"

#: What a field holds, as stored in a document:
#:
#: * ``str``, ``int``, ``float``, ``bool``: a scalar (``int``/``float`` bounded below by
#:   ``minimum``, ints also by the 64-bit range; floats finite, ints accepted and widened);
#: * ``uuid``: a uuid string, canonicalised; ``datetime``: timezone-aware, kept in UTC;
#: * ``strmap``: str -> str; ``intmap``: str -> int (64-bit); ``jsonmap``: str -> any JSON value; ``hints``: str -> tuple of str;
#: * ``strtuple``: tuple of str; ``strset``: frozenset of str; ``intset``: frozenset of
#:   ints >= ``minimum``; ``maptuple``: tuple of str -> (str or None) mappings;
#: * ``obj``: an instance of ``of``; ``objs``: a tuple of them.
Kind: TypeAlias = Literal[
    "str", "int", "float", "bool", "uuid", "datetime", "strmap", "intmap", "jsonmap", "hints",
    "strtuple", "strset", "intset", "maptuple", "obj", "objs",
]

_CANONICAL_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@attrs.frozen
class Rule:
    """What one field accepts; ``path`` names the field in errors (``[]`` = an element of)."""

    kind: Kind
    path: str
    optional: bool = False
    minimum: int | None = None
    of: type | None = None

    @property
    def floor(self) -> int:
        """The smallest accepted number (0 unless the rule says otherwise)."""
        return 0 if self.minimum is None else self.minimum


def rule_of(attribute: attrs.Attribute[Any]) -> Rule | None:
    """The rule of a model field, or None for a field without one (per-operation data)."""
    found = attribute.metadata.get(RULE)
    return found if isinstance(found, Rule) else None


def type_name(value: object) -> str:
    """The class name of ``value``, for error messages."""
    return type(value).__name__


# --- checks -----------------------------------------------------------------------------


def json_problem(value: object, where: str, depth: int) -> str | None:
    """Describe why ``value`` is not a storable JSON value, or return None if it is."""
    cls = type(value)
    if cls is str or cls is bool or value is None:
        return None
    if cls is int:
        return None if INT_MIN <= value <= INT_MAX else f"{where}: integer out of 64-bit range"  # type: ignore[operator]
    if cls is float:
        assert isinstance(value, float)
        if not math.isfinite(value):
            return f"{where}: non-finite float"
        # jsonb stores numbers as numeric and prints large ones without an exponent; past
        # 2**53 such a float would come back as a different (or unparseable) integer.
        if abs(value) >= _FLOAT_EXACT_LIMIT:
            return f"{where}: float {value!r} is too large to store exactly (use a string)"
        return None
    if depth >= MAX_JSON_DEPTH:
        return f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"
    if cls is list:
        assert isinstance(value, list)
        for i, item in enumerate(value):
            problem = json_problem(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if cls is dict:
        assert isinstance(value, dict)
        for key, item in value.items():
            if type(key) is not str:
                return f"{where}: object key {key!r} is not a string"
            problem = json_problem(item, f"{where}[{key!r}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{where}: {cls.__name__} is not a JSON value (use str, int, float, bool, None, list, dict)"


def _check_str_map(path: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise SpecValidationError(path, f"must be a mapping, got {type_name(value)}")
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            raise SpecValidationError(path, f"must map strings to strings, got {key!r}: {item!r}")


def _check(r: Rule, value: object) -> None:
    """Raise SpecValidationError unless ``value`` (not None) satisfies ``r``."""
    path, kind = r.path, r.kind
    if kind == "str":
        if type(value) is not str:
            raise SpecValidationError(path, f"must be a string, got {type_name(value)}")
    elif kind == "int":
        if type(value) is not int:
            raise SpecValidationError(path, f"must be an integer, got {type_name(value)}")
        if value < r.floor:
            raise SpecValidationError(path, f"must be >= {r.floor}, got {value}")
        if value > INT_MAX:
            raise SpecValidationError(path, f"must be <= {INT_MAX}, got {value}")
    elif kind == "bool":
        if type(value) is not bool:
            raise SpecValidationError(path, f"must be a bool, got {type_name(value)}")
    elif kind == "strmap":
        _check_str_map(path, value)
    elif kind == "intmap":
        if not isinstance(value, Mapping):
            raise SpecValidationError(path, f"must be a mapping, got {type_name(value)}")
        for key, item in value.items():
            if type(key) is not str or type(item) is not int or not INT_MIN <= item <= INT_MAX:
                raise SpecValidationError(path, f"must map strings to integers, got {key!r}: {item!r}")
    elif kind == "jsonmap":
        if not isinstance(value, Mapping):
            raise SpecValidationError(path, f"must be a mapping, got {type_name(value)}")
        for key, item in value.items():
            if type(key) is not str:
                raise SpecValidationError(path, f"keys must be strings, got {key!r}")
            problem = json_problem(item, f"[{key!r}]", 1)
            if problem:
                raise SpecValidationError(path, problem)
    elif kind == "hints":
        if not isinstance(value, Mapping):
            raise SpecValidationError(path, f"must be a mapping, got {type_name(value)}")
        for key, hint in value.items():
            if type(key) is not str:
                raise SpecValidationError(path, f"keys must be strings, got {key!r}")
            if type(hint) is not tuple or any(type(h) is not str for h in hint):
                raise SpecValidationError(path, f"value of {key!r} must be a tuple of strings")
    elif kind == "strtuple":
        if type(value) is not tuple:
            raise SpecValidationError(path, f"must be a tuple of strings, got {type_name(value)}")
        for item in value:
            if type(item) is not str:
                raise SpecValidationError(path, f"must contain only strings, got {type_name(item)}")
    elif kind == "strset":
        if type(value) is not frozenset or any(type(i) is not str for i in value):
            raise SpecValidationError(path, "must be a frozenset of strings")
    elif kind == "intset":
        if type(value) is not frozenset:
            raise SpecValidationError(path, f"must be a frozenset of integers, got {type_name(value)}")
        for item in value:
            if type(item) is not int or not r.floor <= item <= INT_MAX:
                raise SpecValidationError(path, f"must contain integers >= {r.floor}, got {item!r}")
    elif kind == "maptuple":
        if type(value) is not tuple:
            raise SpecValidationError(path, f"must be a tuple, got {type_name(value)}")
        for item in value:
            if not isinstance(item, Mapping):
                raise SpecValidationError(path, f"must contain mappings, got {type_name(item)}")
            for key, text in item.items():
                if type(key) is not str or (text is not None and type(text) is not str):
                    raise SpecValidationError(
                        path, f"must map strings to strings or None, got {key!r}: {text!r}"
                    )
    elif kind == "obj":
        assert r.of is not None
        if not isinstance(value, r.of):
            raise SpecValidationError(path, f"must be a {r.of.__name__}, got {type_name(value)}")
    elif kind == "objs":
        assert r.of is not None
        if type(value) is not tuple:
            raise SpecValidationError(path, f"must be a tuple, got {type_name(value)}")
        for item in value:
            if not isinstance(item, r.of):
                raise SpecValidationError(
                    path, f"must contain only {r.of.__name__} objects, got {type_name(item)}"
                )
    else:  # pragma: no cover - converter kinds never reach here
        raise AssertionError(kind)


# --- converters ---------------------------------------------------------------------------


def _canonical_uuid(path: str, value: object) -> str:
    if type(value) is str and _CANONICAL_UUID.match(value):
        return value
    if isinstance(value, _uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise SpecValidationError(path, f"must be a UUID string, got {type_name(value)}")
    try:
        return str(_uuid.UUID(value))
    except ValueError:
        raise SpecValidationError(path, f"{value!r} is not a uuid") from None


def canonical_uuid(value: str | _uuid.UUID, field: str = "uuid") -> str:
    """Return ``value`` as a canonical lowercase UUID string, or raise SpecValidationError."""
    return _canonical_uuid(field, value)


def _aware_utc(path: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise SpecValidationError(path, f"must be a datetime or None, got {type_name(value)}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise SpecValidationError(path, "must be timezone-aware")
    return value.astimezone(UTC)


def _finite_float(r: Rule, value: object) -> float:
    if type(value) is int:
        value = float(value)  # so that a decoded document re-encodes byte for byte
    if type(value) is not float:
        raise SpecValidationError(r.path, f"must be a number, got {type_name(value)}")
    if not math.isfinite(value) or value < r.floor:
        raise SpecValidationError(r.path, f"must be a finite number >= {r.floor}, got {value}")
    return value


def convert(r: Rule, value: Any) -> Any:
    """The stored form of ``value`` under a converting rule (uuid, datetime, float)."""
    if value is None and r.optional:
        return None
    if r.kind == "uuid":
        return _canonical_uuid(r.path, value)
    if r.kind == "datetime":
        return _aware_utc(r.path, value)
    return _finite_float(r, value)


_CONVERTING: Final = frozenset({"uuid", "datetime", "float"})


def _as_tuple(value: Any) -> Any:
    return tuple(value) if type(value) is list else value


def _as_frozenset(value: Any) -> Any:
    return frozenset(value) if type(value) in (set, list, tuple) else value


def _hint_tuples(value: Any) -> Any:
    if isinstance(value, Mapping) and any(type(v) is list for v in value.values()):
        return {k: tuple(v) if type(v) is list else v for k, v in value.items()}
    return value


#: Callers may pass the obvious Python containers (a list where a tuple is stored, a set
#: where a frozenset is); they are converted before the rule is checked on the stored form.
_CONTAINER_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "strtuple": _as_tuple, "objs": _as_tuple, "maptuple": _as_tuple,
    "strset": _as_frozenset, "intset": _as_frozenset, "hints": _hint_tuples,
}


def rule(
    kind: Kind,
    path: str,
    *,
    optional: bool = False,
    minimum: int | None = None,
    of: type | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``attrs.field``: the rule as metadata plus the validator or
    converter built from it. Use as ``attrs.field(default=..., **rule("int", "a.b"))``."""
    r = Rule(kind, path, optional, minimum, of)
    if kind in _CONVERTING:
        conv: Callable[[Any], Any] = lambda value: convert(r, value)  # noqa: E731
        return {"converter": conv, "metadata": {RULE: r}}

    def validate(_inst: object, _attr: object, value: object) -> None:
        if value is None and r.optional:
            return
        _check(r, value)

    container = _CONTAINER_CONVERTERS.get(kind)
    if container is not None:
        return {"converter": container, "validator": validate, "metadata": {RULE: r}}
    return {"validator": validate, "metadata": {RULE: r}}
