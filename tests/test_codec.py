"""Pure-Python tests of the document codec and upgrades (no database)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import durable_request_specs, json_paths, json_values, request_specs

from reqspec_repo._errors import DocumentTooLargeError, SpecDecodeError, SpecEncodeError
from reqspec_repo._spec import codec, upgrades
from reqspec_repo._spec.model import (
    PER_OPERATION_FIELDS,
    Flavor,
    ImageMeta,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestSpec,
    SchedulerRetry,
    durable_fields,
    without_per_operation,
)

UUID = "5b8e2c1e-6c1f-4b8a-9a63-0d2f3d1c9e11"
OTHER = "0c6f5a8e-1111-4222-8333-944455556666"


def sample(**kw: Any) -> RequestSpec:
    args: dict[str, Any] = {
        "instance_uuid": UUID,
        "project_id": "p",
        "user_id": "u",
        "flavor": Flavor(flavorid="1", name="m1", memory_mb=512, vcpus=2),
        "image": ImageMeta(id=OTHER, properties={"hw_disk_bus": "virtio", "n": [1, {"x": None}]}),
        "numa_topology": NumaTopology(cells=(NumaCell(id=0, cpuset=frozenset({3, 1}), memory=64),)),
        "pci_requests": (PciRequest(count=1, spec=({"vendor_id": "8086"},)),),
        "scheduler_hints": {"group": ("g1",)},
    }
    return RequestSpec(**(args | kw))


def doc_of(spec: RequestSpec) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(codec.encode(spec))
    return doc


def decode_error(doc: Any, **kw: Any) -> str:
    with pytest.raises(SpecDecodeError) as info:
        codec.decode(doc, **kw)
    return str(info.value)


# --- round trip ------------------------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(request_specs())
def test_round_trip(spec: RequestSpec) -> None:
    before = copy.deepcopy(spec)
    data = codec.encode(spec)
    assert spec == before  # encoding does not touch the caller's object
    assert codec.decode(data) == without_per_operation(spec)
    assert codec.decode(data.decode()) == without_per_operation(spec)
    assert codec.decode(orjson.loads(data)) == without_per_operation(spec)


@given(durable_request_specs())
def test_encoding_is_deterministic(spec: RequestSpec) -> None:
    data = codec.encode(spec)
    assert codec.encode(codec.decode(data)) == data


def test_document_format() -> None:
    doc = doc_of(sample())
    assert doc["schema_version"] == codec.SCHEMA_VERSION == 3
    assert set(doc) == set(durable_fields()) | {"schema_version"}
    assert doc["flavor"]["vcpus"] == 2
    assert doc["numa_topology"]["cells"][0]["cpuset"] == [1, 3]
    assert doc["scheduler_hints"] == {"group": ["g1"]}
    assert doc["pci_requests"] == [
        {
            "count": 1,
            "spec": [{"vendor_id": "8086"}],
            "alias_name": None,
            "request_id": None,
            "numa_policy": None,
            "requester_id": None,
            "is_new": False,
        }
    ]
    assert codec.to_document(sample()) == doc


@given(request_specs())
def test_per_operation_fields_not_persisted(spec: RequestSpec) -> None:
    doc = doc_of(spec)
    assert not set(PER_OPERATION_FIELDS) & set(doc)


def test_per_operation_fields_kept_on_caller_object() -> None:
    spec = sample(retry=SchedulerRetry(num_attempts=3, hosts=(("h", "n"),)), ignore_hosts=("x",))
    data = codec.encode(spec)
    assert b"num_attempts" not in data and b"ignore_hosts" not in data
    assert spec.retry == SchedulerRetry(num_attempts=3, hosts=(("h", "n"),))
    assert spec.ignore_hosts == ("x",)
    back = codec.decode(data)
    assert back.retry is None and back.ignore_hosts == ()


def test_decode_does_not_mutate_dict() -> None:
    doc = doc_of(sample())
    before = copy.deepcopy(doc)
    codec.decode(doc)
    assert doc == before
    v1 = {**before, "schema_version": 1, "scheduler_hints": {"group": "g1"}}
    del v1["is_bfv"]
    v1_before = copy.deepcopy(v1)
    codec.decode(v1)
    assert v1 == v1_before


# --- upgrades -------------------------------------------------------------------------


def test_v1_document_upgrades() -> None:
    doc = doc_of(sample(scheduler_hints={}))
    doc["schema_version"] = 1
    doc["scheduler_hints"] = {"group": "g1", "same_host": ["a", "b"]}
    del doc["is_bfv"]
    spec = codec.decode(orjson.dumps(doc))
    assert spec.scheduler_hints == {"group": ("g1",), "same_host": ("a", "b")}
    assert spec.is_bfv is False
    assert spec == sample(scheduler_hints={"group": ("g1",), "same_host": ("a", "b")})


# The keys a version-2 document had (before the lossless Nova model).
_V2_KEYS = {
    "": {"instance_uuid", "project_id", "user_id", "availability_zone", "num_instances", "flavor", "image",
         "numa_topology", "pci_requests", "force_hosts", "force_nodes", "limits", "instance_group",
         "scheduler_hints", "security_groups", "is_bfv"},
    "flavor": {"flavorid", "name", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "swap", "rxtx_factor",
               "vcpu_weight", "is_public", "extra_specs"},
    "cell": {"id", "cpuset", "pcpuset", "memory", "pagesize", "cpu_policy"},
    "pci": {"count", "spec", "alias_name", "request_id", "numa_policy"},
    "limits": {"vcpu", "disk_gb", "memory_mb"},
}


def test_v2_document_upgrades_with_defaults_and_unknown_user() -> None:
    doc = doc_of(sample(user_id=""))
    doc = {k: v for k, v in doc.items() if k in _V2_KEYS[""]}
    doc["schema_version"] = 2
    doc["flavor"] = {k: v for k, v in doc["flavor"].items() if k in _V2_KEYS["flavor"]}
    doc["numa_topology"] = {"cells": [{k: v for k, v in c.items() if k in _V2_KEYS["cell"]}
                                      for c in doc["numa_topology"]["cells"]]}
    doc["pci_requests"] = [{k: v for k, v in r.items() if k in _V2_KEYS["pci"]} for r in doc["pci_requests"]]
    doc["limits"] = {k: v for k, v in doc["limits"].items() if k in _V2_KEYS["limits"]}
    spec = codec.decode(orjson.dumps(doc))
    assert spec.user_id is None  # version 2 imports stored "" for "not known"
    assert spec == sample(user_id=None)


def test_v1_with_bad_hint_reports_path() -> None:
    doc = doc_of(sample())
    doc["schema_version"] = 1
    doc["scheduler_hints"] = {"group": 5}
    message = decode_error(doc)
    assert UUID in message and "$.scheduler_hints['group']" in message


def test_upgrade_registry() -> None:
    registry = upgrades.UpgradeRegistry(latest=4)

    @registry.register(1)
    def one(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "a": 1}

    with pytest.raises(ValueError):
        registry.register(1)(one)
    assert registry.upgrade({"schema_version": 4}) == {"schema_version": 4}
    with pytest.raises(SpecDecodeError, match="no upgrade step from schema version 2"):
        registry.upgrade({"schema_version": 1, "instance_uuid": UUID})
    with pytest.raises(SpecDecodeError, match="newer"):
        registry.upgrade({"schema_version": 5})


def test_document_version() -> None:
    assert codec.document_version({"schema_version": 2}) == 2
    for bad in ({}, {"schema_version": "2"}, {"schema_version": 0}, {"schema_version": True}):
        with pytest.raises(SpecDecodeError, match=r"\$\.schema_version"):
            codec.document_version(bad)


# --- decode errors ----------------------------------------------------------------------


def test_newer_version() -> None:
    doc = doc_of(sample())
    doc["schema_version"] = codec.SCHEMA_VERSION + 1
    message = decode_error(orjson.dumps(doc), database="cell1")
    assert UUID in message and "$.schema_version" in message and "cell1" in message


def test_missing_field() -> None:
    doc = doc_of(sample())
    del doc["flavor"]["vcpus"]
    message = decode_error(doc)
    assert UUID in message and "required field missing @ $.flavor.vcpus" in message


def test_missing_top_level_field_uses_given_uuid() -> None:
    doc = doc_of(sample())
    del doc["instance_uuid"]
    message = decode_error(doc, instance_uuid=UUID)
    assert UUID in message and "$.instance_uuid" in message


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["flavor"].__setitem__("vcpus", "2"), "$.flavor.vcpus"),
        (lambda d: d["flavor"].__setitem__("rxtx_factor", "1"), "$.flavor.rxtx_factor"),
        (lambda d: d["flavor"].__setitem__("is_public", 1), "$.flavor.is_public"),
        (lambda d: d.__setitem__("num_instances", 1.0), "$.num_instances"),
        (lambda d: d.__setitem__("force_hosts", "host1"), "$.force_hosts"),
        (lambda d: d.__setitem__("flavor", [1]), "$.flavor"),
        (lambda d: d.__setitem__("limits", None), "$.limits"),
        (lambda d: d["pci_requests"][0].__setitem__("count", None), "$.pci_requests[0].count"),
        (lambda d: d["numa_topology"]["cells"][0]["cpuset"].append("x"), "$.numa_topology.cells[0].cpuset"),
        (lambda d: d["image"].__setitem__("created_at", "yesterday"), "$.image.created_at"),
        (lambda d: d["image"].__setitem__("properties", []), "$.image.properties"),
        (lambda d: d["scheduler_hints"].__setitem__("group", "g1"), "$.scheduler_hints['group']"),
        # values rejected by model validators during structuring
        (lambda d: d["flavor"].__setitem__("vcpus", 0), "$.flavor.vcpus"),
        (lambda d: d.__setitem__("instance_uuid", "nope"), "$.instance_uuid"),
        (
            lambda d: d["numa_topology"]["cells"][0].__setitem__("memory", -1),
            "$.numa_topology.cells[0].memory",
        ),
        (lambda d: d["image"].__setitem__("created_at", "2020-01-01T00:00:00"), "$.image.created_at"),
    ],
)
def test_wrong_type_or_value(mutate: Any, path: str) -> None:
    doc = doc_of(sample())
    mutate(doc)
    message = decode_error(orjson.dumps(doc), instance_uuid=UUID)
    assert UUID in message
    assert f"@ {path}" in message


@pytest.mark.parametrize("where", ["top", "flavor", "image", "numa", "pci", "per-op"])
def test_unknown_key(where: str) -> None:
    doc = doc_of(sample())
    target, key, path = {
        "top": (doc, "surprise", "$"),
        "flavor": (doc["flavor"], "surprise", "$.flavor"),
        "image": (doc["image"], "surprise", "$.image"),
        "numa": (doc["numa_topology"]["cells"][0], "surprise", "$.numa_topology.cells[0]"),
        "pci": (doc["pci_requests"][0], "surprise", "$.pci_requests[0]"),
        "per-op": (doc, "retry", "$"),
    }[where]
    target[key] = None
    message = decode_error(doc)
    assert UUID in message and f"extra fields found ({key}) @ {path}" in message


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xff\xfe", "{'a': 1}", b'{"a":1}x'])
def test_invalid_json(data: bytes | str) -> None:
    message = decode_error(data, instance_uuid=UUID)
    assert UUID in message and "invalid JSON" in message


@pytest.mark.parametrize("data", [b"[]", b"1", b"null", b'"x"'])
def test_not_an_object(data: bytes) -> None:
    assert "$" in decode_error(data, instance_uuid=UUID)


def test_document_of_another_instance() -> None:
    message = decode_error(codec.encode(sample()), instance_uuid=OTHER)
    assert OTHER in message and "$.instance_uuid" in message
    # the same uuid in another spelling is fine
    assert codec.decode(codec.encode(sample()), instance_uuid=UUID.upper()).instance_uuid == UUID


def test_all_problems_reported() -> None:
    doc = doc_of(sample())
    doc["flavor"]["vcpus"] = "x"
    doc["user_id"] = 5
    with pytest.raises(SpecDecodeError) as info:
        codec.decode(doc)
    assert len(info.value.problems) == 2


# --- fuzzing ----------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(durable_request_specs(), st.data())
def test_fuzzed_values_only_raise_decode_error(spec: RequestSpec, data: st.DataObject) -> None:
    doc = doc_of(spec)
    path = data.draw(st.sampled_from(json_paths(doc)[1:]), label="path")
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(json_values(), label="value")
    try:
        codec.decode(orjson.dumps(doc))
    except SpecDecodeError:
        pass


@settings(max_examples=200)
@given(json_values())
def test_arbitrary_documents_only_raise_decode_error(value: Any) -> None:
    with pytest.raises(SpecDecodeError):
        codec.decode(orjson.dumps(value))


@settings(max_examples=200)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes | str) -> None:
    with pytest.raises(SpecDecodeError):
        codec.decode(data)


def test_decode_rejects_non_documents() -> None:
    with pytest.raises(SpecDecodeError):
        codec.decode(42)  # type: ignore[arg-type]


# --- encode errors ----------------------------------------------------------------------


def test_oversize() -> None:
    spec = sample(image=ImageMeta(properties={"blob": "x" * 5000}))
    size = len(codec.encode(spec))
    assert codec.encode(spec, max_bytes=size) is not None
    with pytest.raises(DocumentTooLargeError) as info:
        codec.encode(spec, max_bytes=size - 1)
    assert info.value.size == size and info.value.limit == size - 1
    assert UUID in str(info.value)
    with pytest.raises(DocumentTooLargeError):
        codec.encode(sample(image=ImageMeta(properties={"blob": "x" * (1 << 20)})))


def test_unstorable_strings() -> None:
    with pytest.raises(SpecEncodeError, match="U\\+0000"):
        codec.encode(sample(project_id="a\x00b"))
    with pytest.raises(SpecEncodeError):
        codec.encode(sample(project_id="\ud800"))
    # an escaped backslash followed by "u0000" is not a NUL character
    assert codec.decode(codec.encode(sample(project_id="\\u0000"))).project_id == "\\u0000"


def test_encode_rejects_non_spec() -> None:
    with pytest.raises(SpecEncodeError):
        codec.encode({"instance_uuid": UUID})  # type: ignore[arg-type]
