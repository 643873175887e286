"""The codec's generated fast paths agree exactly with the reference cattrs converter."""

from __future__ import annotations

import linecache
import traceback
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import durable_request_specs, json_paths, json_values

from reqspec_repo._errors import SpecDecodeError
from reqspec_repo._spec import codec
from reqspec_repo._spec.model import PER_OPERATION_FIELDS, Flavor, RequestSpec
from reqspec_repo._spec.rules import rule_of
from reqspec_repo._spec.upgrades import VERSION_KEY

_SAMPLE = RequestSpec(
    instance_uuid="5b8e2c1e-6c1f-4b8a-9a63-0d2f3d1c9e11", project_id="p", user_id="u",
    flavor=Flavor(flavorid="f", name="m1", memory_mb=512, vcpus=1),
)

# Values that sit on the edges of the model's rules.
_EDGES = st.sampled_from([
    0, 1, -1, 2**63 - 1, 2**63, True, False, None, 1.5, 0.0, -0.5, "", "x", [], [1], ["a"], {}, {"k": "v"},
    {"k": 1}, "5B8E2C1E-6C1F-4B8A-9A63-0D2F3D1C9E11", "5b8e2c1e6c1f4b8a9a630d2f3d1c9e11",
    "2024-01-01T00:00:00", "2024-01-01T00:00:00+02:00", "2024-01-01T00:00:00Z",
])


def _reference(doc: dict[str, Any]) -> RequestSpec | Exception:
    try:
        return codec._structure_spec(doc, RequestSpec)  # type: ignore[no-any-return]
    except Exception as exc:
        return exc


def _fast(doc: dict[str, Any]) -> RequestSpec | None:
    # Only _Reject means "invalid": any other exception is a bug of the generated code.
    try:
        return codec._fast_read_spec(doc)
    except codec._Reject:
        return None


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs())
def test_fast_writer_matches_the_reference_byte_for_byte(spec: RequestSpec) -> None:
    assert orjson.dumps(codec._fast_write_spec(spec)) == orjson.dumps(codec._unstructure_spec(spec))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs(), st.data())
def test_fast_reader_accepts_exactly_what_the_reference_accepts(spec: RequestSpec, data: st.DataObject) -> None:
    doc = orjson.loads(codec.encode(spec))
    del doc[VERSION_KEY]
    action = data.draw(st.sampled_from(["replace", "edge", "delete", "add", "none"]), label="action")
    path = data.draw(st.sampled_from(json_paths(doc)[1:]), label="path")
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if action == "replace":
        parent[path[-1]] = data.draw(json_values(), label="value")
    elif action == "edge":
        parent[path[-1]] = data.draw(_EDGES, label="value")
    elif action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent["surprise"] = 1
    expected = _reference(orjson.loads(orjson.dumps(doc)))
    got = _fast(orjson.loads(orjson.dumps(doc)))
    if got is not None:
        assert not isinstance(expected, Exception), f"fast path accepted a document the reference refuses: {expected}"
        assert got == expected
    else:
        assert isinstance(expected, Exception), "fast path refused a document the reference accepts"


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs())
def test_decode_of_stored_bytes_takes_the_fast_path_and_round_trips(spec: RequestSpec) -> None:
    doc = orjson.loads(codec.encode(spec))
    del doc[VERSION_KEY]
    assert codec._fast_read_spec(doc) == spec
    assert codec.decode(codec.encode(spec)) == spec


def _objects(value: Any) -> list[Any]:
    """Every attrs object reachable from ``value`` (itself included)."""
    if attrs.has(type(value)):
        found = [value]
        for field in attrs.fields(type(value)):
            found += _objects(getattr(value, field.name))
        return found
    if isinstance(value, (tuple, list, frozenset)):
        return [o for item in value for o in _objects(item)]
    if isinstance(value, dict):
        return [o for item in value.values() for o in _objects(item)]
    return []


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs())
def test_the_fast_reader_hands_out_frozen_objects_of_the_model_classes(spec: RequestSpec) -> None:
    # The reader fills each object as an instance of a building subclass, then makes it
    # its model class: what comes out is exactly a model object, frozen.
    decoded = codec.decode(codec.encode(spec))
    objects = _objects(decoded)
    model_classes = set(codec._document_classes())
    for obj in objects:
        assert type(obj) in model_classes, type(obj)
        field = attrs.fields(type(obj))[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(obj, field, getattr(obj, field))
    assert decoded == spec


def test_every_durable_field_is_read_through_its_model_rule() -> None:
    # The generated readers come from the rules in the model's field metadata: each
    # document class and each of its durable fields appears in the generated source.
    source = "".join(linecache.getlines(codec.FAST_PATH_FILENAME))
    for cls in codec._document_classes():
        assert f"def _read_{cls.__name__}(d):" in source
        for field in attrs.fields(cls):
            if cls is RequestSpec and field.name in PER_OPERATION_FIELDS:
                continue
            assert rule_of(field) is not None, f"{cls.__name__}.{field.name} has no rule"
            assert f"d[{field.name!r}]" in source


def test_a_bug_in_the_fast_reader_shows_its_generated_line_in_the_traceback() -> None:
    # The traceback of anything raised inside the generated code shows the generated
    # line (the source is registered in linecache), as a real bug's traceback would.
    bad = {key: None for key in range(3)}
    try:
        codec._fast_read_spec(bad)  # type: ignore[arg-type]
    except codec._Reject as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        generated = [f for f in frames if f.filename == codec.FAST_PATH_FILENAME]
        assert generated and generated[-1].line, "generated source not shown in tracebacks"
    else:
        raise AssertionError("the fast reader accepted a document without its keys")


def test_fast_reader_refusing_a_valid_document_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = codec.decode(codec.encode(_SAMPLE))

    def refuse(_doc: dict[str, Any]) -> RequestSpec:
        raise codec._Reject

    monkeypatch.setattr(codec, "_fast_read_spec", refuse)
    with pytest.raises(codec.CodecDisagreement, match=spec.instance_uuid):
        codec.decode(codec.encode(spec))


def test_invalid_stored_bytes_get_the_reference_report_with_its_path() -> None:
    doc = orjson.loads(codec.encode(_SAMPLE))
    doc["flavor"]["vcpus"] = 0
    with pytest.raises(SpecDecodeError) as info:
        codec.decode(orjson.dumps(doc))
    assert any("$.flavor.vcpus" in p for p in info.value.problems)
