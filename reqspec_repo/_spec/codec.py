"""Encoding of RequestSpecs to JSON documents and back.

The document is a JSON object holding the durable fields of
:class:`~reqspec_repo.RequestSpec` (nested objects for flavor, image, limits...,
arrays for tuples and sets, RFC 3339 strings for datetimes, sorted arrays for cpusets) plus
``"schema_version": SCHEMA_VERSION``. Per-operation fields never appear in it.

The one cattrs converter of the library, :data:`CONVERTER`, is built here once. It is
strict: no coercion of JSON types (``"1"`` is not an int, a string is not a list), unknown
keys are refused, and errors carry paths such as ``$.flavor.vcpus``.
"""

from __future__ import annotations

import re
import uuid as _uuid
from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any, Final, NoReturn, Union, get_args, get_origin

import attrs
import orjson
from cattrs import transform_error
from cattrs.cols import homogenous_tuple_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.v import format_exception

from .._errors import (
    DocumentTooLargeError,
    SpecDecodeError,
    SpecEncodeError,
    SpecValidationError,
)
from . import model, rules
from .model import PER_OPERATION_FIELDS, RequestSpec
from .rules import Rule
from .upgrades import SCHEMA_VERSION, VERSION_KEY, document_version, upgrade

__all__ = [
    "CONVERTER",
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "SCHEMA_VERSION",
    "decode",
    "document_version",
    "encode",
    "to_document",
]

#: Default upper bound of an encoded document, in bytes.
DEFAULT_MAX_DOCUMENT_BYTES: Final = 1 << 20


def _document_classes() -> list[type]:
    """The classes reachable from RequestSpec through obj/objs rules, leaves first."""
    order: list[type] = []

    def visit(cls: type) -> None:
        if cls in order:
            return
        for field in attrs.fields(cls):
            r = rules.rule_of(field)
            if cls is RequestSpec and field.name in PER_OPERATION_FIELDS:
                continue
            if r is not None and r.of is not None:
                visit(r.of)
        order.append(cls)

    visit(RequestSpec)
    return order


class _WrongJsonType(TypeError):
    """A JSON value of the wrong type (message is shown as is)."""


def _json_type(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _wrong(expected: str, value: object) -> _WrongJsonType:
    return _WrongJsonType(f"expected {expected}, got {_json_type(value)}")


# --- strict hooks ----------------------------------------------------------------------


def _structure_str(value: Any, _: Any) -> str:
    if value.__class__ is str:
        return value
    raise _wrong("a string", value)


def _structure_int(value: Any, _: Any) -> int:
    if value.__class__ is int:
        return value
    raise _wrong("an integer", value)


def _structure_float(value: Any, _: Any) -> float:
    cls = value.__class__
    if cls is float:
        return value  # type: ignore[no-any-return]
    if cls is int:
        return float(value)
    raise _wrong("a number", value)


def _structure_bool(value: Any, _: Any) -> bool:
    if value.__class__ is bool:
        return value
    raise _wrong("a boolean", value)


def _structure_optional_str(value: Any, _: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value
    raise _wrong("a string or null", value)


def _structure_optional_int(value: Any, _: Any) -> int | None:
    if value is None or value.__class__ is int:
        return value
    raise _wrong("an integer or null", value)


def _structure_int_set(value: Any, _: Any) -> frozenset[int]:
    if value.__class__ is not list:
        raise _wrong("an array of integers", value)
    for item in value:
        if item.__class__ is not int:
            raise _wrong("an array of integers", item)
    return frozenset(value)


def _unstructure_int_set(value: frozenset[int]) -> list[int]:
    return sorted(value)


def _structure_str_set(value: Any, _: Any) -> frozenset[str]:
    if value.__class__ is not list:
        raise _wrong("an array of strings", value)
    for item in value:
        if item.__class__ is not str:
            raise _wrong("an array of strings", item)
    return frozenset(value)


def _unstructure_str_set(value: frozenset[str]) -> list[str]:
    return sorted(value)


def _unstructure_mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    # Values of every mapping in the model need no unstructuring (str, tuples of str,
    # JSON values); orjson only needs a real dict.
    return value if value.__class__ is dict else dict(value)


def _structure_json_object(value: Any, _: Any) -> dict[str, Any]:
    # Image properties: any JSON object (the model validates the values).
    if value.__class__ is not dict:
        raise _wrong("an object", value)
    return value


def _is_optional_of(cls: type) -> Callable[[Any], bool]:
    members = {cls, type(None)}

    def predicate(t: Any) -> bool:
        args = get_args(t)
        return len(args) == 2 and set(args) == members and get_origin(t) in (Union, UnionType)

    return predicate


def _is_int_set(t: Any) -> bool:
    return bool(t == frozenset[int])


def _is_str_set(t: Any) -> bool:
    return bool(t == frozenset[str])


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_mapping(t: Any) -> bool:
    return get_origin(t) in (dict, Mapping)


def _build_converter() -> OrjsonConverter:
    conv = make_converter(forbid_extra_keys=True, detailed_validation=True)

    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_func(_is_optional_of(str), _structure_optional_str)
    conv.register_structure_hook_func(_is_optional_of(int), _structure_optional_int)
    conv.register_structure_hook_func(_is_int_set, _structure_int_set)
    conv.register_unstructure_hook_func(_is_int_set, _unstructure_int_set)
    conv.register_structure_hook_func(_is_str_set, _structure_str_set)
    conv.register_unstructure_hook_func(_is_str_set, _unstructure_str_set)

    def tuple_factory(t: Any) -> Callable[[Any, Any], Any]:
        inner = homogenous_tuple_structure_factory(t, conv)

        def structure_tuple(value: Any, t: Any) -> Any:
            if value.__class__ is not list:
                raise _wrong("an array", value)
            return inner(value, t)

        return structure_tuple

    def mapping_factory(t: Any) -> Callable[[Any, Any], Any]:
        inner = mapping_structure_factory(t, conv, dict, detailed_validation=True)

        def structure_mapping(value: Any, t: Any) -> Any:
            if value.__class__ is not dict:
                raise _wrong("an object", value)
            return inner(value, t)

        return structure_mapping

    conv.register_structure_hook_factory(_is_homogeneous_tuple, tuple_factory)
    conv.register_structure_hook_factory(_is_mapping, mapping_factory)
    conv.register_unstructure_hook_factory(_is_mapping, lambda _t: _unstructure_mapping)

    def register_class(cls: type, **overrides: Any) -> None:
        inner: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True,
            **overrides,
        )

        def structure_object(value: Any, t: Any) -> Any:
            if value.__class__ is not dict:
                raise _wrong("an object", value)
            return inner(value, t)

        conv.register_structure_hook(cls, structure_object)
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **overrides))

    json_map = override(struct_hook=_structure_json_object, unstruct_hook=_unstructure_mapping)

    def json_overrides(cls: type) -> dict[str, Any]:
        # Open JSON mappings (image properties, kept Nova fields): the model checks them.
        return {
            f.name: json_map for f in attrs.fields(cls)
            if (r := rules.rule_of(f)) is not None and r.kind == "jsonmap"
        }

    for cls in _document_classes()[:-1]:  # RequestSpec (the last) comes below
        register_class(cls, **json_overrides(cls))
    # Per-operation fields are omitted both ways: never written, and refused as unknown
    # keys when reading.
    register_class(
        RequestSpec,
        **json_overrides(RequestSpec),
        **{name: override(omit=True) for name in PER_OPERATION_FIELDS},
    )
    return conv


#: The library's one cattrs converter.
CONVERTER: Final = _build_converter()
_unstructure_spec: Final = CONVERTER.get_unstructure_hook(RequestSpec)
_structure_spec: Final = CONVERTER.get_structure_hook(RequestSpec)


# --- generated fast paths ---------------------------------------------------------------
#
# The converter above is the reference: it gives every problem with its path. It is slow
# on the happy path, though, because cattrs' detailed validation wraps every field and
# attrs runs every validator again in each nested constructor. The functions generated
# below do the same checks inline in one pass and fill the frozen objects' slots directly.
#
# They are generated from the model's own field rules (``rules.Rule`` in each field's
# metadata, which also builds the model's validators), so a rule is stated once:
#   * a fast reader accepts exactly the documents the reference accepts and builds an
#     equal object; on anything invalid it raises _Reject, and decode() runs the reference
#     only to build the detailed error report (if the reference then accepts the document,
#     the two disagree: a bug, raised as CodecDisagreement, never hidden);
#   * a fast writer produces byte for byte the reference's document;
#   * every durable field must have a rule (checked at import).

_INT_MAX: Final = model.INT_MAX
_UUID_TEXT: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_MEMBER_DESCRIPTOR: Final = type(model.Flavor.__dict__["name"])
#: Where the generated source is registered in ``linecache`` (shown in tracebacks).
FAST_PATH_FILENAME: Final = "<reqspec_repo codec fast paths>"


class _Reject(Exception):
    """The fast reader found the document invalid: the reference explains why."""


class CodecDisagreement(AssertionError):
    """The fast reader refused a document the reference converter accepts (a codec bug)."""


def _check_code(r: Rule, cls_name: str) -> str:
    """Python statements checking ``v`` against ``r``; they leave the attribute value in
    ``v`` or raise _Reject. ``cls_name`` is the class of an obj/objs rule."""
    lo = r.floor
    if r.kind == "str":
        code = "if v.__class__ is not str: raise _Reject"
    elif r.kind == "int":
        code = f"if v.__class__ is not int or v < {lo} or v > _INT_MAX: raise _Reject"
    elif r.kind == "bool":
        code = "if v.__class__ is not bool: raise _Reject"
    elif r.kind == "float":
        code = (
            "if v.__class__ is int: v = float(v)\n"
            "elif v.__class__ is not float: raise _Reject\n"
            f"if not (v >= {float(lo)!r} and _isfinite(v)): raise _Reject"
        )
    elif r.kind == "uuid":
        code = (
            "if v.__class__ is not str: raise _Reject\n"
            "if _uuid_match(v) is None:\n"
            "    try: v = _uuid_text(v)\n"
            "    except ValueError: raise _Reject from None"
        )
    elif r.kind == "datetime":
        code = (
            "if v.__class__ is not str: raise _Reject\n"
            "try: v = _fromisoformat(v)\n"
            "except ValueError: raise _Reject from None\n"
            "if v.tzinfo is not _UTC:\n"
            "    if v.tzinfo is None or v.utcoffset() is None: raise _Reject\n"
            "    v = v.astimezone(_UTC)"
        )
    elif r.kind == "strmap":
        code = (
            "if v.__class__ is not dict: raise _Reject\n"
            "for x in v.values():\n"
            "    if x.__class__ is not str: raise _Reject"
        )
    elif r.kind == "intmap":
        code = (
            "if v.__class__ is not dict: raise _Reject\n"
            "for x in v.values():\n"
            "    if x.__class__ is not int or x < _INT_MIN or x > _INT_MAX: raise _Reject"
        )
    elif r.kind == "jsonmap":
        code = (
            "if v.__class__ is not dict: raise _Reject\n"
            "for x in v.values():\n"
            "    if x.__class__ is not str and _json_problem(x, '', 1) is not None: raise _Reject"
        )
    elif r.kind == "hints":
        code = (
            "if v.__class__ is not dict: raise _Reject\n"
            "h = {}\n"
            "for k, x in v.items():\n"
            "    if x.__class__ is not list: raise _Reject\n"
            "    for y in x:\n"
            "        if y.__class__ is not str: raise _Reject\n"
            "    h[k] = tuple(x)\n"
            "v = h"
        )
    elif r.kind in ("strtuple", "strset"):
        code = (
            "if v.__class__ is not list: raise _Reject\n"
            "for x in v:\n"
            "    if x.__class__ is not str: raise _Reject\n"
            + ("v = tuple(v)" if r.kind == "strtuple" else "v = frozenset(v)")
        )
    elif r.kind == "intset":
        code = (
            "if v.__class__ is not list: raise _Reject\n"
            "for x in v:\n"
            f"    if x.__class__ is not int or x < {lo} or x > _INT_MAX: raise _Reject\n"
            "v = frozenset(v)"
        )
    elif r.kind == "maptuple":
        code = (
            "if v.__class__ is not list: raise _Reject\n"
            "for x in v:\n"
            "    if x.__class__ is not dict: raise _Reject\n"
            "    for y in x.values():\n"
            "        if y is not None and y.__class__ is not str: raise _Reject\n"
            "v = tuple(v)"
        )
    elif r.kind == "obj":
        code = f"v = _read_{cls_name}(v)"
    elif r.kind == "objs":
        code = f"if v.__class__ is not list: raise _Reject\nv = tuple([_read_{cls_name}(x) for x in v])"
    else:  # pragma: no cover
        raise AssertionError(r.kind)
    if r.optional:
        if r.kind in ("str", "bool"):  # one test for the usual case (a value of the type)
            return code.replace(": raise _Reject", " and v is not None: raise _Reject")
        return "if v is not None:\n" + _indent(code, 1)
    return code


def _write_expr(r: Rule, attr: str, cls_name: str) -> str:
    """An expression unstructuring ``attr`` (e.g. ``o.name``) as the reference does."""
    if r.kind == "intset":
        expr = f"sorted({attr})"
    elif r.kind in ("strmap", "intmap", "jsonmap", "hints"):
        expr = f"_as_dict({attr})"
    elif r.kind == "strset":
        expr = f"sorted({attr})"
    elif r.kind == "maptuple":
        expr = f"[_as_dict(x) for x in {attr}]"
    elif r.kind == "obj":
        expr = f"_write_{cls_name}({attr})"
    elif r.kind == "objs":
        expr = f"[_write_{cls_name}(x) for x in {attr}]"
    else:
        return attr
    return f"None if {attr} is None else {expr}" if r.optional else expr


def _indent(code: str, level: int) -> str:
    return "\n".join("    " * level + line for line in code.splitlines())


def _persisted(cls: type, field: attrs.Attribute[Any]) -> Rule | None:
    r = rules.rule_of(field)
    if cls is RequestSpec and field.name in PER_OPERATION_FIELDS:
        return None
    if r is None:
        raise RuntimeError(f"codec fast path: {cls.__name__}.{field.name} has no rule")
    return r


def _building_class(cls: type) -> type | None:
    """A slot-less subclass of frozen ``cls`` with object's own ``__setattr__`` and
    ``__delattr__``, or None where CPython would refuse it.

    The reader fills a new object as an instance of it, then sets its ``__class__`` to
    ``cls`` (allowed: a subclass that adds no slots has the same layout). Plain attribute
    stores on it are CPython's specialised slot stores, ~35 ns cheaper each than calling
    the slot descriptor's ``__set__``; with both methods object's own, the type keeps the
    generic setattr that the specialisation needs. The object handed out is a ``cls``,
    frozen as ever."""
    building = type(f"_Building{cls.__name__}", (cls,), {
        "__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__,
        "__module__": __name__,
    })
    try:
        probe: Any = object.__new__(building)
        probe.__class__ = cls
    except TypeError:  # layout differs (another Python implementation): descriptor stores
        return None
    return building


def _generate_fast_paths() -> tuple[Callable[[dict[str, Any]], RequestSpec], Callable[[RequestSpec], dict[str, Any]]]:
    import linecache
    import math
    from datetime import UTC, datetime

    namespace: dict[str, Any] = {
        "_Reject": _Reject, "_INT_MAX": _INT_MAX, "_INT_MIN": model.INT_MIN, "_isfinite": math.isfinite,
        "_uuid_match": _UUID_TEXT.match, "_uuid_text": lambda v: str(_uuid.UUID(v)),
        "_fromisoformat": datetime.fromisoformat, "_UTC": UTC,
        "_json_problem": rules.json_problem, "_as_dict": _unstructure_mapping,
        "_new": object.__new__, "_MISSING": attrs.NOTHING,
    }
    source: list[str] = []
    for cls in _document_classes():
        name = cls.__name__
        namespace[name] = cls
        fields = attrs.fields(cls)

        building = _building_class(cls)
        namespace[f"_b_{name}"] = building if building is not None else cls

        def store(attribute: str, cls: type = cls, name: str = name, building: type | None = building) -> str:
            """The statement storing ``v`` in the slot ``attribute`` of ``o``."""
            slot: Any = cls.__dict__.get(attribute)
            if slot.__class__ is not _MEMBER_DESCRIPTOR:
                raise RuntimeError(f"codec fast path: {name}.{attribute} is not a slot")
            if building is not None:
                return f"o.{attribute} = v"
            # The slot's own descriptor: it bypasses the frozen class's __setattr__.
            namespace[f"_s_{name}_{attribute}"] = slot.__set__
            return f"_s_{name}_{attribute}(o, v)"

        persisted = [(f, r) for f in fields if (r := _persisted(cls, f)) is not None]
        # Two bodies: the usual case, a document with every key (written by this code),
        # and the general one (defaults for absent keys; unknown keys refused by count).
        # With as many keys as fields, a KeyError means an unknown key: refused as well.
        complete = [f"    if len(d) == {len(persisted)}:", "        try:"]
        partial = ["    else:", "        n = 0"]
        fixed = []
        write = [f"def _write_{name}(o):", "    return {"]
        for field in fields:
            r = _persisted(cls, field)
            if r is None:  # a per-operation field: its in-memory default
                namespace[f"_d_{name}_{field.name}"] = field.default
                fixed.append(f"    v = _d_{name}_{field.name}")
                fixed.append(f"    {store(field.name)}")
                continue
            ref = r.of.__name__ if r.of is not None else ""
            check = _check_code(r, ref)
            default = field.default
            complete.append(f"            v = d[{field.name!r}]")
            complete.append(_indent(check, 3))
            complete.append(f"            {store(field.name)}")
            partial.append(f"        v = d.get({field.name!r}, _MISSING)")
            if default is attrs.NOTHING:
                partial.append("        if v is _MISSING: raise _Reject")
                partial.append("        n += 1")
                partial.append(_indent(check, 2))
            else:
                if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                    namespace[f"_f_{name}_{field.name}"] = default.factory
                    fill = f"_f_{name}_{field.name}()"
                else:
                    namespace[f"_d_{name}_{field.name}"] = default
                    fill = f"_d_{name}_{field.name}"
                partial.append(f"        if v is _MISSING: v = {fill}")
                partial.append("        else:")
                partial.append("            n += 1")
                partial.append(_indent(check, 3))
            partial.append(f"        {store(field.name)}")
            write.append(f"        {field.name!r}: {_write_expr(r, 'o.' + field.name, ref)},")
        complete.append("        except KeyError: raise _Reject from None")
        partial.append("        if n != len(d): raise _Reject")
        read = [
            f"def _read_{name}(d):",
            "    if d.__class__ is not dict: raise _Reject",
            f"    o = _new(_b_{name})",
            *complete, *partial, *fixed,
            *([f"    o.__class__ = {name}"] if building is not None else []),
            "    return o",
        ]
        write.append("    }")
        source.extend(["\n".join(read), "\n".join(write)])
    text = "\n\n".join(source) + "\n"
    # Registered so that a traceback through the generated code shows its lines.
    linecache.cache[FAST_PATH_FILENAME] = (len(text), None, text.splitlines(True), FAST_PATH_FILENAME)
    exec(compile(text, FAST_PATH_FILENAME, "exec"), namespace)
    return namespace["_read_RequestSpec"], namespace["_write_RequestSpec"]


_fast_read_spec, _fast_write_spec = _generate_fast_paths()


# --- encode ---------------------------------------------------------------------------

# A JSON escape of U+0000 not itself preceded by an escaping backslash. PostgreSQL's
# jsonb cannot store it, so such a document is refused here rather than by the database.
_NUL_ESCAPE: Final = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def encode(spec: RequestSpec, *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> bytes:
    """Encode the durable part of ``spec`` as the UTF-8 JSON document to persist.

    Raises SpecEncodeError if a value cannot be stored, DocumentTooLargeError (a
    SpecEncodeError) if the document is over ``max_bytes``. ``spec`` is not modified.
    """
    if not isinstance(spec, RequestSpec):
        raise SpecEncodeError(None, f"expected a RequestSpec, got {type(spec).__name__}")
    try:
        doc = _fast_write_spec(spec)
        doc[VERSION_KEY] = SCHEMA_VERSION
        data = orjson.dumps(doc)
    except Exception as exc:  # orjson.JSONEncodeError (a TypeError) and friends
        raise SpecEncodeError(spec.instance_uuid, f"{type(exc).__name__}: {exc}") from exc
    if len(data) > max_bytes:
        raise DocumentTooLargeError(spec.instance_uuid, len(data), max_bytes)
    # A backslash is rare in documents and found by memchr: only then look closer.
    if b"\\" in data and b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise SpecEncodeError(
            spec.instance_uuid, "a string contains U+0000, which PostgreSQL jsonb cannot store"
        )
    return data


def to_document(spec: RequestSpec) -> dict[str, Any]:
    """The document of ``spec`` as plain JSON data (a dict), e.g. for display.

    Same content as :func:`encode`, without the size limit.
    """
    doc: dict[str, Any] = orjson.loads(encode(spec, max_bytes=1 << 62))
    return doc


# --- decode ---------------------------------------------------------------------------

_MARK: Final = "\x00"


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, SpecValidationError):
        # Validators name their field as "<class path>.<attribute>": append the attribute
        # to the path cattrs found for the object (see _fix_path).
        leaf = exc.field.rsplit(".", 1)[-1]
        return f"{_MARK}{leaf}{_MARK}{exc}"
    if isinstance(exc, _WrongJsonType):
        return str(exc)
    return format_exception(exc, type_)


def _fix_path(line: str) -> str:
    if not line.startswith(_MARK):
        return line
    _, leaf, rest = line.split(_MARK, 2)
    message, sep, path = rest.rpartition(" @ ")
    return f"{message} @ {path}.{leaf}" if sep else rest


def _problems(exc: BaseException) -> list[str]:
    try:
        lines = transform_error(exc, "$", _format_exception)
    except Exception:  # never let a formatting problem hide the real one
        lines = [f"{type(exc).__name__}: {exc} @ $"]
    return [_fix_path(line) for line in lines] or [f"{type(exc).__name__} @ $"]


def _raise_reference_problems(obj: dict[str, Any], uuid: str | None, database: str | None) -> NoReturn:
    try:
        _structure_spec(obj, RequestSpec)
    except Exception as exc:
        raise SpecDecodeError(uuid, _problems(exc), database=database) from exc
    raise CodecDisagreement(
        f"codec fast path refused the document of instance {uuid} that the reference "
        "converter accepts (a bug: please report it with the document)"
    )


def decode(
    doc: bytes | bytearray | memoryview | str | Mapping[str, Any],
    *,
    instance_uuid: str | None = None,
    database: str | None = None,
) -> RequestSpec:
    """Decode a stored document (JSON bytes/str, or an already parsed dict).

    Older documents are upgraded first. Every failure (invalid JSON, newer schema version,
    missing or unknown key, wrong type, invalid value) raises SpecDecodeError naming the
    instance (``instance_uuid``, else the document's) and the path of each problem.
    When ``instance_uuid`` is given, the document must be that instance's. A dict passed in
    is not modified.
    """
    if doc.__class__ is bytes:
        # The usual case, a document read from a row: parsed here, at the current schema
        # version, read by the fast reader. Anything else takes the general path below.
        try:
            obj = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise SpecDecodeError(instance_uuid, [f"invalid JSON: {exc}"], database=database) from None
        if obj.__class__ is dict:
            version = obj.get(VERSION_KEY)
            if version.__class__ is int and version == SCHEMA_VERSION:
                del obj[VERSION_KEY]
                try:
                    spec = _fast_read_spec(obj)
                except _Reject:
                    _raise_reference_problems(obj, _uuid_for_errors(instance_uuid, obj), database)
                if instance_uuid is not None and spec.instance_uuid != instance_uuid:
                    _check_owner(spec, instance_uuid, database)
                return spec
        return _decode_general(obj, True, instance_uuid, database)
    return _decode_general(doc, False, instance_uuid, database)


def _uuid_for_errors(instance_uuid: str | None, obj: Mapping[str, Any]) -> str | None:
    """The instance an error names: the caller's, else the document's own (if text)."""
    doc_uuid = obj.get("instance_uuid")
    return instance_uuid or (doc_uuid[:64] if isinstance(doc_uuid, str) else None)


def _check_owner(spec: RequestSpec, instance_uuid: str, database: str | None) -> None:
    """The document must be the one of ``instance_uuid`` (in any case or uuid spelling)."""
    try:
        expected = model.canonical_uuid(instance_uuid)
    except SpecValidationError:
        expected = instance_uuid
    if spec.instance_uuid != expected:
        raise SpecDecodeError(
            instance_uuid,
            [f"document belongs to instance {spec.instance_uuid} @ $.instance_uuid"],
            database=database,
        )


def _decode_general(doc: Any, parsed: bool, instance_uuid: str | None, database: str | None) -> RequestSpec:
    """:func:`decode` of anything: text or a dict, any schema version."""
    owned: bool
    obj: Any
    if parsed:
        obj, owned = doc, True
    elif isinstance(doc, (bytes, bytearray, memoryview, str)):
        try:
            obj = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise SpecDecodeError(instance_uuid, [f"invalid JSON: {exc}"], database=database) from None
        owned = parsed = True
    elif isinstance(doc, Mapping):
        obj, owned = doc, False
    else:
        raise SpecDecodeError(
            instance_uuid,
            [f"expected JSON bytes, str or a dict, got {type(doc).__name__}"],
            database=database,
        )
    if obj.__class__ is not dict:
        if not isinstance(obj, Mapping):
            raise SpecDecodeError(
                instance_uuid,
                [f"document must be a JSON object, got {_json_type(obj)} @ $"],
                database=database,
            )
        obj, owned = dict(obj), True

    uuid = _uuid_for_errors(instance_uuid, obj)
    if document_version(obj, instance_uuid=uuid, database=database) != SCHEMA_VERSION:
        obj = upgrade(obj, instance_uuid=uuid, database=database)
        owned = True
    if owned:
        del obj[VERSION_KEY]
    else:
        obj = {k: v for k, v in obj.items() if k != VERSION_KEY}

    spec: RequestSpec
    if parsed:
        # Freshly parsed JSON is ours alone, so the fast reader may keep its dicts. If it
        # refuses the document, the reference converter explains why.
        try:
            spec = _fast_read_spec(obj)
        except _Reject:
            _raise_reference_problems(obj, uuid, database)
    else:
        try:
            spec = _structure_spec(obj, RequestSpec)
        except Exception as exc:
            raise SpecDecodeError(uuid, _problems(exc), database=database) from exc

    if instance_uuid is not None and spec.instance_uuid != instance_uuid:
        _check_owner(spec, instance_uuid, database)
    return spec
