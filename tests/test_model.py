"""Pure-Python tests of the RequestSpec model (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from strategies import request_specs

from reqspec_repo._errors import SpecValidationError
from reqspec_repo._spec.model import (
    PER_OPERATION_FIELDS,
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NumaCell,
    PciRequest,
    RequestSpec,
    SchedulerRetry,
    durable_fields,
    without_per_operation,
)

UUID = "5b8e2c1e-6c1f-4b8a-9a63-0d2f3d1c9e11"


def flavor(**kw: Any) -> Flavor:
    args: dict[str, Any] = {"flavorid": "1", "name": "m1.tiny", "memory_mb": 512, "vcpus": 1}
    return Flavor(**(args | kw))


def spec(**kw: Any) -> RequestSpec:
    args: dict[str, Any] = {
        "instance_uuid": UUID,
        "project_id": "p",
        "user_id": "u",
        "flavor": flavor(),
    }
    return RequestSpec(**(args | kw))


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: flavor(vcpus=0), "flavor.vcpus"),
        (lambda: flavor(memory_mb=0), "flavor.memory_mb"),
        (lambda: flavor(swap=-1), "flavor.swap"),
        (lambda: flavor(root_gb=True), "flavor.root_gb"),
        (lambda: flavor(rxtx_factor=-0.5), "flavor.rxtx_factor"),
        (lambda: flavor(rxtx_factor=float("nan")), "flavor.rxtx_factor"),
        (lambda: flavor(extra_specs={"a": 1}), "flavor.extra_specs"),
        (lambda: spec(instance_uuid="not-a-uuid"), "instance_uuid"),
        (lambda: spec(num_instances=0), "num_instances"),
        (lambda: spec(force_hosts=["a", 1]), "force_hosts"),  # a list is taken, its items checked
        (lambda: spec(scheduler_hints={"group": "x"}), "scheduler_hints"),
        (lambda: spec(flavor={"vcpus": 1}), "flavor"),
        (lambda: spec(is_bfv=1), "is_bfv"),
        (lambda: ImageMeta(id="nope"), "image.id"),
        (lambda: ImageMeta(min_disk=-1), "image.min_disk"),
        (lambda: ImageMeta(size=1 << 63), "image.size"),
        (lambda: ImageMeta(created_at=datetime(2020, 1, 1)), "image.created_at"),
        (lambda: ImageMeta(properties={"a": {1, 2}}), "image.properties"),  # type: ignore[dict-item]
        (lambda: ImageMeta(properties={"a": [float("inf")]}), "image.properties"),
        (lambda: ImageMeta(properties={"a": (1, 2)}), "image.properties"),  # type: ignore[dict-item]
        (lambda: NumaCell(id=0, memory=-1), "numa_topology.cells[].memory"),
        (lambda: NumaCell(id=0, memory=1, cpuset=frozenset({-1})), "numa_topology.cells[].cpuset"),
        (lambda: PciRequest(count=0), "pci_requests[].count"),
        (lambda: PciRequest(count=1, request_id="x"), "pci_requests[].request_id"),
        (lambda: Limits(vcpu=-1), "limits.vcpu"),
        (lambda: InstanceGroupRef(uuid="x"), "instance_group.uuid"),
        (lambda: SchedulerRetry(num_attempts=-1), "retry.num_attempts"),
    ],
)
def test_validation_error_names_field(build: Any, field: str) -> None:
    with pytest.raises(SpecValidationError) as info:
        build()
    assert info.value.field == field
    assert field in str(info.value)


def test_uuids_are_normalised() -> None:
    upper = "{" + UUID.upper() + "}"
    assert spec(instance_uuid=upper).instance_uuid == UUID
    assert spec(instance_uuid=uuid.UUID(UUID)).instance_uuid == UUID
    assert ImageMeta(id=UUID.replace("-", "")).id == UUID


def test_datetimes_are_normalised_to_utc() -> None:
    local = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    image = ImageMeta(created_at=local)
    assert image.created_at == local
    assert image.created_at is not None and image.created_at.tzinfo is UTC


def test_frozen() -> None:
    s = spec()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.project_id = "other"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.flavor.vcpus = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.new_attribute = 1  # type: ignore[attr-defined]


def test_evolve_validates() -> None:
    with pytest.raises(SpecValidationError, match="num_instances"):
        attrs.evolve(spec(), num_instances=0)


def test_instance_group_ref_has_no_members() -> None:
    names = {a.name for a in attrs.fields(InstanceGroupRef)}
    assert "members" not in names and "hosts" not in names
    ref = InstanceGroupRef.from_group(
        UUID, "web", "anti-affinity", {"max_server_per_host": "1"}, members=["a", "b"], hosts=["h"]
    )
    assert ref == InstanceGroupRef(
        uuid=UUID, name="web", policy="anti-affinity", rules={"max_server_per_host": "1"}
    )
    with pytest.raises(TypeError):
        InstanceGroupRef(uuid=UUID, members=["a"])  # type: ignore[call-arg]


def test_per_operation_fields() -> None:
    names = {a.name for a in attrs.fields(RequestSpec)}
    assert set(PER_OPERATION_FIELDS) <= names
    assert set(durable_fields()).isdisjoint(PER_OPERATION_FIELDS)
    assert set(durable_fields()) | set(PER_OPERATION_FIELDS) == names
    s = spec(retry=SchedulerRetry(num_attempts=2), ignore_hosts=("h1",))
    plain = without_per_operation(s)
    assert plain.retry is None and plain.ignore_hosts == ()
    assert s.retry == SchedulerRetry(num_attempts=2)  # the original is untouched
    assert without_per_operation(plain) is plain


@given(request_specs())
def test_generated_specs_reset(s: RequestSpec) -> None:
    plain = without_per_operation(s)
    for name in PER_OPERATION_FIELDS:
        assert getattr(plain, name) == attrs.fields_dict(RequestSpec)[name].default
    for name in durable_fields():
        assert getattr(plain, name) == getattr(s, name)


def test_lists_and_sets_are_accepted_where_tuples_and_frozensets_are_stored():
    """The obvious call works: a list where the model stores a tuple (hints, hosts, groups,
    projects, requests), a set or list where it stores a frozenset; the stored form is the
    immutable one, and a wrong element type is still refused with the field path."""
    import reqspec_repo as rs

    group = str(uuid.uuid4())
    spec = rs.RequestSpec(
        instance_uuid=str(uuid.uuid4()), project_id="p", user_id="u",
        flavor=rs.Flavor(flavorid="1", name="m1", memory_mb=512, vcpus=1, projects=["p1"]),
        scheduler_hints={"group": [group], "same_host": ("h0",)},
        force_hosts=["h1"], security_groups=["default"],
        numa_topology=rs.NumaTopology(cells=[rs.NumaCell(id=0, cpuset={0, 1}, memory=512)]),
    )
    assert spec.scheduler_hints == {"group": (group,), "same_host": ("h0",)}
    assert spec.force_hosts == ("h1",) and spec.security_groups == ("default",)
    assert spec.flavor.projects == ("p1",)
    assert type(spec.numa_topology.cells) is tuple
    assert spec.numa_topology.cells[0].cpuset == frozenset({0, 1})
    assert attrs.evolve(spec, force_hosts=["h2"]).force_hosts == ("h2",)
    with pytest.raises(SpecValidationError, match="force_hosts"):
        attrs.evolve(spec, force_hosts=["h2", 3])
