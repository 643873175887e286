"""Export stored specs back to Nova: rows of Nova's ``request_specs`` table.

A row is ``{"instance_uuid": ..., "spec": "<column text>"}``, the column text being the
Nova versioned object that Nova 34's ``RequestSpec.obj_from_primitive`` loads: RequestSpec
1.15 and the objects it holds, at the versions Nova 34 writes (:data:`NOVA_VERSIONS`).

The mapping is the inverse of :mod:`reqspec_repo._nova.importing`:

* per-operation fields are written empty, as Nova stores them (``retry``,
  ``ignore_hosts``, ``requested_destination``, ``requested_resources`` null; the others
  absent); a group's ``members`` and ``hosts`` are null, as Nova writes them;
* a value that is None in the model is written as null where Nova's field is nullable,
  and left out (Nova's "not set") where it is not, e.g. an unknown ``is_bfv``;
* security groups are written as Nova's ``make_secgroup_list`` builds them: a uuid-like
  entry in ``uuid``, any other in ``name``;
* the PCI request list carries the spec's instance uuid (as Nova's does);
* fields of newer Nova versions kept by the import (``unknown_nova_fields``) are written
  back into the object they came from.
"""

from __future__ import annotations

import json
import uuid as uuid_mod
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from .._spec.model import (
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NetworkMetadata,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestSpec,
    VirtCpuTopology,
)
from .._store.context import RequestContext
from .._store.locations import SpecStore

__all__ = ["NOVA_VERSIONS", "export_specs", "nova_row", "nova_spec"]

#: The object versions Nova 34.0.0 writes.
NOVA_VERSIONS: Final[dict[str, str]] = {
    "RequestSpec": "1.15",
    "Flavor": "1.2",
    "ImageMeta": "1.8",
    "ImageMetaProps": "1.44",
    "InstanceNUMATopology": "1.3",
    "InstanceNUMACell": "1.6",
    "VirtCPUTopology": "1.0",
    "InstancePCIRequests": "1.1",
    "InstancePCIRequest": "1.4",
    "SchedulerLimits": "1.0",
    "NUMATopologyLimits": "1.1",
    "NetworkMetadata": "1.0",
    "InstanceGroup": "1.11",
    "SecurityGroupList": "1.1",
    "SecurityGroup": "1.2",
}


class _Writer:
    """Builds the envelopes of one spec, putting back its kept unknown fields."""

    def __init__(self, unknown: Mapping[str, Any]) -> None:
        self.unknown = unknown

    def envelope(self, name: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
        kept = self.unknown.get(path)
        if isinstance(kept, dict):
            data = {**data, **kept}
        return {
            "nova_object.name": name,
            "nova_object.namespace": "nova",
            "nova_object.version": NOVA_VERSIONS[name],
            "nova_object.data": data,
        }


def _time(value: datetime | None) -> str | None:
    # oslo.versionedobjects' DateTimeField form (UTC, "Z"); sub-seconds only when present
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _set_if(data: dict[str, Any], key: str, value: object) -> None:
    """Write a non-nullable Nova field only when it is known (None = not set)."""
    if value is not None:
        data[key] = value


def _flavor(w: _Writer, f: Flavor) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": f.name, "memory_mb": f.memory_mb, "vcpus": f.vcpus, "root_gb": f.root_gb,
        "ephemeral_gb": f.ephemeral_gb, "flavorid": f.flavorid, "swap": f.swap,
        "rxtx_factor": f.rxtx_factor, "vcpu_weight": f.vcpu_weight, "disabled": f.disabled,
        "is_public": f.is_public, "extra_specs": dict(f.extra_specs), "projects": list(f.projects),
        "description": f.description, "created_at": _time(f.created_at),
        "updated_at": _time(f.updated_at), "deleted_at": _time(f.deleted_at), "deleted": f.deleted,
    }
    _set_if(data, "id", f.id)
    return w.envelope("Flavor", "flavor", data)


def _image(w: _Writer, i: ImageMeta) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in ("id", "name", "status", "visibility", "protected", "checksum", "owner", "size",
                "virtual_size", "container_format", "disk_format", "direct_url"):
        _set_if(data, key, getattr(i, key))
    data["created_at"] = _time(i.created_at)
    data["updated_at"] = _time(i.updated_at)
    if i.tags is not None:
        data["tags"] = list(i.tags)
    data["min_ram"] = i.min_ram
    data["min_disk"] = i.min_disk
    data["properties"] = w.envelope("ImageMetaProps", "image.properties", dict(i.properties))
    return w.envelope("ImageMeta", "image", data)


def _cpu_topology(w: _Writer, t: VirtCpuTopology | None, path: str) -> dict[str, Any] | None:
    if t is None:
        return None
    return w.envelope("VirtCPUTopology", path, {"sockets": t.sockets, "cores": t.cores, "threads": t.threads})


def _cell(w: _Writer, c: NumaCell, path: str) -> dict[str, Any]:
    return w.envelope("InstanceNUMACell", path, {
        "id": c.id, "cpuset": sorted(c.cpuset), "pcpuset": sorted(c.pcpuset),
        "cpuset_reserved": None if c.cpuset_reserved is None else sorted(c.cpuset_reserved),
        "memory": c.memory, "pagesize": c.pagesize,
        "cpu_topology": _cpu_topology(w, c.cpu_topology, f"{path}.cpu_topology"),
        "cpu_pinning_raw": None if c.cpu_pinning_raw is None else dict(c.cpu_pinning_raw),
        "cpu_policy": c.cpu_policy, "cpu_thread_policy": c.cpu_thread_policy,
    })


def _numa(w: _Writer, t: NumaTopology) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cells": [_cell(w, c, f"numa_topology.cells[{i}]") for i, c in enumerate(t.cells)],
        "emulator_threads_policy": t.emulator_threads_policy,
    }
    _set_if(data, "id", t.id)
    _set_if(data, "instance_uuid", t.instance_uuid)
    return w.envelope("InstanceNUMATopology", "numa_topology", data)


def _pci_request(w: _Writer, r: PciRequest, path: str) -> dict[str, Any]:
    return w.envelope("InstancePCIRequest", path, {
        "count": r.count, "spec": [dict(m) for m in r.spec], "alias_name": r.alias_name,
        "is_new": r.is_new, "request_id": r.request_id, "requester_id": r.requester_id,
        "numa_policy": r.numa_policy,
    })


def _network_metadata(w: _Writer, n: NetworkMetadata | None, path: str) -> dict[str, Any] | None:
    if n is None:
        return None
    return w.envelope("NetworkMetadata", path, {"physnets": sorted(n.physnets), "tunneled": n.tunneled})


def _limits(w: _Writer, lim: Limits) -> dict[str, Any]:
    numa = None
    if lim.numa_topology is not None:
        q = "limits.numa_topology"
        n = lim.numa_topology
        numa = w.envelope("NUMATopologyLimits", q, {
            "cpu_allocation_ratio": n.cpu_allocation_ratio,
            "ram_allocation_ratio": n.ram_allocation_ratio,
            **({} if n.network_metadata is None else {
                "network_metadata": _network_metadata(w, n.network_metadata, f"{q}.network_metadata"),
            }),
        })
    return w.envelope("SchedulerLimits", "limits", {
        "numa_topology": numa, "vcpu": lim.vcpu, "disk_gb": lim.disk_gb, "memory_mb": lim.memory_mb,
    })


def _group(w: _Writer, g: InstanceGroupRef) -> dict[str, Any]:
    data: dict[str, Any] = {
        "uuid": g.uuid, "name": g.name, "policy": g.policy, "_rules": dict(g.rules),
        "members": None, "hosts": None,  # never persisted, as Nova writes them
        "created_at": _time(g.created_at), "updated_at": _time(g.updated_at),
        "deleted_at": _time(g.deleted_at), "deleted": g.deleted,
    }
    for key in ("id", "user_id", "project_id"):
        _set_if(data, key, getattr(g, key))
    return w.envelope("InstanceGroup", "instance_group", data)


def _uuid_like(value: str) -> bool:
    # oslo_utils.uuidutils.is_uuid_like, which Nova's make_secgroup_list uses
    plain = value.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "").lower()
    try:
        return str(uuid_mod.UUID(value)).replace("-", "") == plain
    except (TypeError, ValueError, AttributeError):
        return False


def _security_groups(w: _Writer, names: tuple[str, ...]) -> dict[str, Any]:
    groups = [
        w.envelope("SecurityGroup", f"security_groups[{i}]", {"uuid" if _uuid_like(n) else "name": n})
        for i, n in enumerate(names)
    ]
    return w.envelope("SecurityGroupList", "security_groups", {"objects": groups})


def nova_spec(spec: RequestSpec) -> dict[str, Any]:
    """The Nova primitive (``RequestSpec`` 1.15 envelope) of a spec's durable part."""
    w = _Writer(spec.unknown_nova_fields)
    data: dict[str, Any] = {
        "instance_uuid": spec.instance_uuid,
        "availability_zone": spec.availability_zone,
        "num_instances": spec.num_instances,
        "flavor": _flavor(w, spec.flavor),
        "image": None if spec.image is None else _image(w, spec.image),
        "numa_topology": None if spec.numa_topology is None else _numa(w, spec.numa_topology),
        "pci_requests": w.envelope("InstancePCIRequests", "pci_requests", {
            "instance_uuid": spec.instance_uuid,
            "requests": [_pci_request(w, r, f"pci_requests[{i}]") for i, r in enumerate(spec.pci_requests)],
        }),
        # Nova leaves these null unless a host was forced (reset_forced_destinations too)
        "force_hosts": list(spec.force_hosts) or None,
        "force_nodes": list(spec.force_nodes) or None,
        "limits": _limits(w, spec.limits),
        "instance_group": None if spec.instance_group is None else _group(w, spec.instance_group),
        "scheduler_hints": {k: list(v) for k, v in spec.scheduler_hints.items()},
        "security_groups": _security_groups(w, spec.security_groups),
        # per-operation: empty, as Nova's RequestSpec._get_update_primitives leaves them
        "retry": None, "ignore_hosts": None, "requested_destination": None, "requested_resources": None,
    }
    # unknown project / user / boot-from-volume: not set, as in the rows Nova left them in
    for key in ("project_id", "user_id", "is_bfv"):
        _set_if(data, key, getattr(spec, key))
    return w.envelope("RequestSpec", "", data)


def nova_row(spec: RequestSpec) -> dict[str, str]:
    """One row of Nova's ``request_specs`` table: the instance uuid and the spec column."""
    return {"instance_uuid": spec.instance_uuid, "spec": json.dumps(nova_spec(spec), sort_keys=True)}


def export_specs(
    store: SpecStore,
    instance_uuids: Iterable[str] | None = None,
    *,
    database: str | None = None,
) -> Iterator[dict[str, str]]:
    """Nova rows of stored specs: the given instances (wherever they live, or read from
    ``database`` when given), else every spec of ``database``, else of every database."""
    if instance_uuids is not None:
        for key in instance_uuids:
            if database is None:
                yield nova_row(store.get(key).spec)
            else:
                yield nova_row(store.repo.get(RequestContext(database), key).spec)
        return
    names = [database] if database is not None else [db.name for db in store.topology.all_databases()]
    for name in names:
        store.topology.database(name)  # unknown cell: ConfigError
        for stored in store.repo.iterate(RequestContext(name), on_error=None):
            yield nova_row(stored.spec)
