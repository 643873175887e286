"""The codec's generated fast paths agree exactly with the reference cattrs converter."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import durable_request_specs, json_paths, json_values

from reqspec_repo._spec import codec
from reqspec_repo._spec.model import RequestSpec
from reqspec_repo._spec.upgrades import VERSION_KEY

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
    try:
        return codec._fast_read_spec(doc)
    except Exception:
        return None


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs())
def test_fast_writer_matches_the_reference_byte_for_byte(spec: RequestSpec) -> None:
    assert orjson.dumps(codec._fast_write_spec(spec)) == orjson.dumps(codec._unstructure_spec(spec))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs(), st.data())
def test_fast_reader_accepts_only_what_the_reference_accepts(spec: RequestSpec, data: st.DataObject) -> None:
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


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs())
def test_decode_of_stored_bytes_takes_the_fast_path_and_round_trips(spec: RequestSpec) -> None:
    doc = orjson.loads(codec.encode(spec))
    del doc[VERSION_KEY]
    assert codec._fast_read_spec(doc) == spec
    assert codec.decode(codec.encode(spec)) == spec
