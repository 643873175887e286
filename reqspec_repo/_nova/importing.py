"""Import request specs exported from Nova's ``request_specs`` table.

Input rows carry the instance uuid and the text of Nova's ``spec`` column, either as JSON
lines ``{"instance_uuid": "...", "spec": "<column text>"}`` or as CSV with the columns
``instance_uuid`` and ``spec``. The column text is a Nova versioned object: nested
envelopes ``{"nova_object.name", "nova_object.namespace", "nova_object.version",
"nova_object.data", "nova_object.changes"}`` for RequestSpec 1.x and the objects it holds
(Flavor, ImageMeta with ImageMetaProps, InstanceNUMATopology with InstanceNUMACell,
InstancePCIRequests with InstancePCIRequest, SchedulerLimits, InstanceGroup,
SecurityGroupList with SecurityGroup...).

Every field Nova 34 persists has a home in :class:`~reqspec_repo.RequestSpec` (see the
field table in docs/devref.md), and each row is loaded as Nova 34's
``RequestSpec._from_db_object`` loads it. Each change is named in the row's report
(``RowResult.changes``):

* the row's ``instance_uuid`` column wins over the one inside the spec, and the spec's
  ``id`` (Nova's row id) is dropped;
* a pinned cell stored before InstanceNUMACell 1.5 gets its dedicated CPUs moved from
  ``cpuset`` to ``pcpuset`` (Nova's ``_migrate_legacy_dedicated_instance_cpuset``,
  LP #1952941);
* a group without uuid takes it from the ``group`` scheduler hint (LP #1830747); without
  the hint the row is rejected;
* per-operation fields stored by older releases (``retry``, ``ignore_hosts``,
  ``requested_destination``...) and ``_nova*`` internal hints (``_nova_check_type``) are
  dropped, as are a group's ``members`` and ``hosts``;
* a null or missing ``project_id``/``user_id`` (RequestSpec < 1.9) or ``is_bfv`` (< 1.11)
  stays None, "unknown", until healed from the instance;
* fields of a newer object minor version are kept verbatim in ``unknown_nova_fields`` and
  written back on export;
* the group ``policy`` of InstanceGroup < 1.11 comes from its ``policies`` list.

Only major version 1 of each object is understood; another major version (e.g.
RequestSpec 2.0) rejects the row. Every row is judged on its own: malformed or unknown
rows are reported with the reason and the valid ones land, through
:meth:`SpecStore.create` so that their location records exist. Re-running an import is
idempotent: instances that already have a spec (wherever it lives now) are reported as
skipped. A dry run reports the same without writing anything.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from .._errors import BatchError, ReqSpecError, SpecExistsError
from .._spec import codec
from .._spec.model import (
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NetworkMetadata,
    NumaCell,
    NumaLimits,
    NumaTopology,
    PciRequest,
    RequestSpec,
    VirtCpuTopology,
    canonical_uuid,
)
from .._store.config import API
from .._store.locations import SpecStore

__all__ = [
    "ImportReport",
    "NovaImportError",
    "RawRow",
    "RowResult",
    "convert_spec",
    "import_file",
    "import_rows",
    "read_rows",
]

#: The major version of every Nova object this importer understands.
KNOWN_MAJOR: Final = 1
_NS: Final = "nova"
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
Status = Literal["imported", "would_import", "skipped", "rejected"]


class NovaImportError(ReqSpecError):
    """The input file as a whole cannot be read (missing, unreadable, wrong columns)."""


class RowProblem(ReqSpecError, ValueError):
    """Why one row was rejected; ``path`` names the field, e.g. ``flavor.vcpus``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


@attrs.frozen
class RawRow:
    """One input row: ``spec`` is the column text (or an already parsed object)."""

    line: int
    instance_uuid: object
    spec: object
    problem: str | None = None  # the row could not even be read (e.g. invalid JSON line)


@attrs.frozen
class RowResult:
    """The outcome of one row; ``changes`` names every repair, drop or kept unknown field
    (empty when the row was taken exactly as Nova stored it)."""

    line: int
    instance_uuid: str | None
    status: Status
    reason: str | None = None
    changes: tuple[str, ...] = ()

    @property
    def kept_unknown_fields(self) -> bool:
        """The row carried fields of a Nova newer than 34 (kept verbatim)."""
        return any(c.startswith("kept ") for c in self.changes)


@attrs.frozen
class ImportReport:
    database: str
    dry_run: bool
    rows: list[RowResult]

    def _count(self, *statuses: str) -> int:
        return sum(1 for r in self.rows if r.status in statuses)

    @property
    def imported(self) -> int:
        """Rows stored (or, in a dry run, that would be)."""
        return self._count("imported", "would_import")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def rejected(self) -> int:
        return self._count("rejected")

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "dry_run": self.dry_run,
            "imported": self.imported,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "changed": sum(1 for r in self.rows if r.changes),
            "with_unknown_fields": [r.instance_uuid for r in self.rows if r.kept_unknown_fields],
            "rows": [{**attrs.asdict(r), "changes": list(r.changes)} for r in self.rows],
        }


# --- reading rows ----------------------------------------------------------------------


def _jsonl_rows(lines: Iterable[str]) -> Iterator[RawRow]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RawRow(number, None, None, f"the line is not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            yield RawRow(number, None, None, "the line is not a JSON object")
            continue
        yield RawRow(number, obj.get("instance_uuid"), obj.get("spec"))


def _csv_rows(stream: Iterable[str]) -> Iterator[RawRow]:
    csv.field_size_limit(64 << 20)
    reader = csv.DictReader(stream)
    missing = {"instance_uuid", "spec"} - set(reader.fieldnames or ())
    if missing:
        raise NovaImportError(f"CSV input needs the columns instance_uuid and spec (missing: {', '.join(sorted(missing))})")
    for row in reader:
        yield RawRow(reader.line_num, row.get("instance_uuid") or None, row.get("spec") or None)


def read_rows(source: Path | str, *, fmt: str | None = None) -> Iterator[RawRow]:
    """The rows of a JSON-lines (default) or CSV file (``fmt="csv"`` or a ``.csv`` name)."""
    path = Path(source)
    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if kind not in ("csv", "jsonl"):
        raise NovaImportError(f"unknown input format {kind!r} (use jsonl or csv)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NovaImportError(f"cannot read {path}: {exc}") from None
    if kind == "csv":
        return _csv_rows(io.StringIO(text, newline=""))
    return _jsonl_rows(text.splitlines())


# --- Nova envelopes ---------------------------------------------------------------------


def _json_kind(value: object) -> str:
    """What a JSON value is, in words ("an object", "an array"...), for Nova row errors."""
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _unwrap(obj: object, names: tuple[str, ...], path: str) -> dict[str, Any]:
    """The ``nova_object.data`` of an envelope whose name is one of ``names``, major 1."""
    if not isinstance(obj, dict) or "nova_object.name" not in obj:
        raise RowProblem(path, f"expected a Nova {names[0]} object, got {_json_kind(obj)}")
    name = obj["nova_object.name"]
    if name not in names:
        raise RowProblem(path, f"expected a Nova {' or '.join(names)} object, got {name!r}")
    namespace = obj.get("nova_object.namespace", _NS)
    if namespace != _NS:
        raise RowProblem(path, f"unknown object namespace {namespace!r}")
    version = obj.get("nova_object.version")
    match = _VERSION.match(version) if isinstance(version, str) else None
    if match is None:
        raise RowProblem(path, f"{name} has no valid nova_object.version ({version!r})")
    if int(match.group(1)) != KNOWN_MAJOR:
        raise RowProblem(path, f"unknown version: {name} {version} (this importer reads {name} {KNOWN_MAJOR}.x)")
    data = obj.get("nova_object.data")
    if not isinstance(data, dict):
        raise RowProblem(path, f"{name} has no nova_object.data object")
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(data: Mapping[str, Any], key: str, path: str, *, optional: bool = False, default: str | None = None) -> Any:
    value = data.get(key, default)
    if value is None and optional:
        return None
    if type(value) is not str:
        raise RowProblem(_join(path, key), f"expected a string, got {_json_kind(value)}")
    return value


def _int(data: Mapping[str, Any], key: str, path: str, *, optional: bool = False, default: int | None = None) -> Any:
    value = data.get(key, default)
    if value is None and optional:
        return None
    if type(value) is not int:
        raise RowProblem(_join(path, key), f"expected an integer, got {_json_kind(value)}")
    return value


def _bool(data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if type(value) is not bool:
        raise RowProblem(_join(path, key), f"expected a boolean, got {_json_kind(value)}")
    return value


def _float(data: Mapping[str, Any], key: str, path: str, default: float | None, *, nullable: bool = False) -> Any:
    value = data.get(key, default)
    if value is None:
        if nullable:
            return None
        if default is None:
            raise RowProblem(_join(path, key), "expected a number, got null")
        return default
    if type(value) not in (int, float):
        raise RowProblem(_join(path, key), f"expected a number, got {_json_kind(value)}")
    return float(value)


def _str_list(data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if type(value) is not list or any(type(v) is not str for v in value):
        raise RowProblem(_join(path, key), "expected an array of strings")
    return tuple(value)


def _int_set(data: Mapping[str, Any], key: str, path: str) -> frozenset[int]:
    value = data.get(key)
    if value is None:
        return frozenset()
    if type(value) is not list or any(type(v) is not int for v in value):
        raise RowProblem(_join(path, key), "expected an array of integers")
    return frozenset(value)


def _str_map(value: object, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict or any(type(k) is not str or type(v) is not str for k, v in value.items()):
        raise RowProblem(path, "expected an object mapping strings to strings")
    return dict(value)


def _datetime(data: Mapping[str, Any], key: str, path: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise RowProblem(_join(path, key), f"expected a date-time string, got {_json_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RowProblem(_join(path, key), f"{value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:  # Nova writes UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _optional_object(data: Mapping[str, Any], key: str) -> object:
    return data.get(key)


# --- what Nova 34 persists ----------------------------------------------------------------

#: The fields of each object as Nova 34.0.0 defines them. A field not listed here comes
#: from a newer Nova (a newer minor version): it is kept verbatim in
#: ``RequestSpec.unknown_nova_fields`` and written back on export.
NOVA_FIELDS: Final[dict[str, frozenset[str]]] = {
    "RequestSpec": frozenset({
        "id", "image", "numa_topology", "pci_requests", "project_id", "user_id",
        "availability_zone", "flavor", "num_instances", "ignore_hosts", "force_hosts",
        "force_nodes", "requested_destination", "retry", "limits", "instance_group",
        "scheduler_hints", "instance_uuid", "security_groups", "network_metadata", "is_bfv",
        "requested_resources", "request_level_params", "requested_networks",
    }),
    "Flavor": frozenset({
        "id", "name", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "flavorid", "swap",
        "rxtx_factor", "vcpu_weight", "disabled", "is_public", "extra_specs", "projects",
        "description", "created_at", "updated_at", "deleted_at", "deleted",
    }),
    "ImageMeta": frozenset({
        "id", "name", "status", "visibility", "protected", "checksum", "owner", "size",
        "virtual_size", "container_format", "disk_format", "created_at", "updated_at", "tags",
        "direct_url", "min_ram", "min_disk", "properties",
    }),
    "InstanceNUMATopology": frozenset({"id", "instance_uuid", "cells", "emulator_threads_policy"}),
    "InstanceNUMACell": frozenset({
        "id", "cpuset", "pcpuset", "cpuset_reserved", "memory", "pagesize", "cpu_topology",
        "cpu_pinning_raw", "cpu_policy", "cpu_thread_policy",
    }),
    "VirtCPUTopology": frozenset({"sockets", "cores", "threads"}),
    "InstancePCIRequests": frozenset({"instance_uuid", "requests"}),
    "InstancePCIRequest": frozenset({
        "count", "spec", "alias_name", "is_new", "request_id", "requester_id", "numa_policy",
    }),
    "SchedulerLimits": frozenset({"numa_topology", "vcpu", "disk_gb", "memory_mb"}),
    "NUMATopologyLimits": frozenset({"cpu_allocation_ratio", "ram_allocation_ratio", "network_metadata"}),
    "NetworkMetadata": frozenset({"physnets", "tunneled"}),
    "InstanceGroup": frozenset({
        "id", "user_id", "project_id", "uuid", "name", "policies", "members", "hosts",
        "policy", "_rules", "created_at", "updated_at", "deleted_at", "deleted",
    }),
    "SecurityGroupList": frozenset({"objects"}),
    "SecurityGroup": frozenset({
        "id", "name", "description", "user_id", "project_id", "uuid", "created_at",
        "updated_at", "deleted_at", "deleted",
    }),
}

#: RequestSpec fields that hold one operation's data; Nova 34 never stores them (older
#: releases did), nor do we.
PER_OPERATION: Final = (
    "retry", "ignore_hosts", "requested_destination", "requested_resources",
    "network_metadata", "request_level_params", "requested_networks",
)

_DEDICATED: Final = "dedicated"


class Notes:
    """What the import changed in one row, each named (``drop``/``repair``/``keep``)."""

    def __init__(self) -> None:
        self.changes: list[str] = []
        self.unknown: dict[str, dict[str, Any]] = {}

    def drop(self, path: str, why: str) -> None:
        self.changes.append(f"dropped {path}: {why}")

    def repair(self, path: str, what: str) -> None:
        self.changes.append(f"repaired {path}: {what}")

    def note(self, path: str, what: str) -> None:
        self.changes.append(f"{path}: {what}")

    def data(self, obj: object, name: str, path: str) -> dict[str, Any]:
        """Unwrap ``obj`` (a ``name`` envelope) and keep its unknown fields verbatim."""
        d = _unwrap(obj, (name,), path)
        extra = {k: v for k, v in d.items() if k not in NOVA_FIELDS[name]}
        if extra:
            self.unknown[path] = extra
            version = obj.get("nova_object.version") if isinstance(obj, dict) else None
            self.changes.append(
                f"kept {', '.join(sorted(extra))} of {name} {version} at {path or 'the spec'} "
                "verbatim (newer than Nova 34; written back on export)"
            )
        return d


def _version(obj: object) -> tuple[int, int]:
    version = obj.get("nova_object.version") if isinstance(obj, dict) else None
    match = _VERSION.match(version) if isinstance(version, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


# --- object by object -------------------------------------------------------------------


def _flavor(obj: object, notes: Notes) -> Flavor:
    p = "flavor"
    d = notes.data(obj, "Flavor", p)
    return Flavor(
        flavorid=_str(d, "flavorid", p),
        name=_str(d, "name", p, optional=True),
        memory_mb=_int(d, "memory_mb", p),
        vcpus=_int(d, "vcpus", p),
        root_gb=_int(d, "root_gb", p, default=0),
        ephemeral_gb=_int(d, "ephemeral_gb", p, default=0),
        swap=_int(d, "swap", p, default=0),
        rxtx_factor=_float(d, "rxtx_factor", p, 1.0, nullable=True),
        vcpu_weight=_int(d, "vcpu_weight", p, optional=True),
        is_public=_bool(d, "is_public", p, True),
        extra_specs=_str_map(d.get("extra_specs"), "flavor.extra_specs"),
        id=_int(d, "id", p, optional=True),
        disabled=_bool(d, "disabled", p, False),
        projects=_str_list(d, "projects", p),
        description=_str(d, "description", p, optional=True),
        created_at=_datetime(d, "created_at", p),
        updated_at=_datetime(d, "updated_at", p),
        deleted_at=_datetime(d, "deleted_at", p),
        deleted=_bool(d, "deleted", p, False),
    )


def _image(obj: object, notes: Notes) -> ImageMeta | None:
    if obj is None:
        return None
    p = "image"
    d = notes.data(obj, "ImageMeta", p)
    props_obj = d.get("properties")
    properties: dict[str, Any] = {}
    if props_obj is not None:
        # ImageMetaProps is an open set of image properties: every field is kept as is.
        properties = dict(_unwrap(props_obj, ("ImageMetaProps",), "image.properties"))
    image_id = d.get("id")
    if image_id is not None and type(image_id) is not str:
        raise RowProblem("image.id", f"expected a uuid string, got {_json_kind(image_id)}")
    protected = d.get("protected")
    if protected is not None and type(protected) is not bool:
        raise RowProblem("image.protected", f"expected a boolean, got {_json_kind(protected)}")
    return ImageMeta(
        id=image_id,
        name=_str(d, "name", p, optional=True),
        status=_str(d, "status", p, optional=True),
        checksum=_str(d, "checksum", p, optional=True),
        owner=_str(d, "owner", p, optional=True),
        size=_int(d, "size", p, optional=True),
        virtual_size=_int(d, "virtual_size", p, optional=True),
        container_format=_str(d, "container_format", p, optional=True),
        disk_format=_str(d, "disk_format", p, optional=True),
        min_ram=_int(d, "min_ram", p, default=0),
        min_disk=_int(d, "min_disk", p, default=0),
        created_at=_datetime(d, "created_at", p),
        updated_at=_datetime(d, "updated_at", p),
        properties=properties,
        visibility=_str(d, "visibility", p, optional=True),
        protected=protected,
        tags=_str_list(d, "tags", p) if d.get("tags") is not None else None,
        direct_url=_str(d, "direct_url", p, optional=True),
    )


def _cpu_topology(obj: object, notes: Notes, p: str) -> VirtCpuTopology | None:
    if obj is None:
        return None
    d = notes.data(obj, "VirtCPUTopology", p)
    return VirtCpuTopology(
        sockets=_int(d, "sockets", p, optional=True, default=1),
        cores=_int(d, "cores", p, optional=True, default=1),
        threads=_int(d, "threads", p, optional=True, default=1),
    )


def _int_map(value: object, path: str) -> dict[str, int] | None:
    if value is None:
        return None
    if type(value) is not dict or any(type(v) is not int for v in value.values()):
        raise RowProblem(path, "expected an object mapping strings to integers")
    return {str(k): v for k, v in value.items()}


def _numa_cell(raw: object, notes: Notes, p: str) -> NumaCell:
    c = notes.data(raw, "InstanceNUMACell", p)
    cpuset = _int_set(c, "cpuset", p)
    pcpuset = _int_set(c, "pcpuset", p)
    policy = _str(c, "cpu_policy", p, optional=True)
    # Nova's InstanceNUMATopology._migrate_legacy_dedicated_instance_cpuset (LP #1952941):
    # a pinned cell stored before InstanceNUMACell 1.5 keeps its dedicated CPUs in cpuset;
    # from 1.4 on, Nova moves them to pcpuset when it loads the row.
    if (1, 4) <= _version(raw) < (1, 6) and policy == _DEDICATED and not pcpuset:
        if cpuset:
            notes.repair(f"{p}.pcpuset", f"dedicated CPUs {sorted(cpuset)} moved from cpuset "
                         f"(InstanceNUMACell {raw.get('nova_object.version') if isinstance(raw, dict) else '?'}, "
                         "before Victoria), as Nova converts them on load")
        pcpuset, cpuset = cpuset, frozenset()
    reserved = c.get("cpuset_reserved")
    return NumaCell(
        id=_int(c, "id", p),
        cpuset=cpuset,
        pcpuset=pcpuset,
        memory=_int(c, "memory", p),
        pagesize=_int(c, "pagesize", p, optional=True),
        cpu_policy=policy,
        cpu_thread_policy=_str(c, "cpu_thread_policy", p, optional=True),
        cpuset_reserved=None if reserved is None else _int_set(c, "cpuset_reserved", p),
        cpu_topology=_cpu_topology(c.get("cpu_topology"), notes, f"{p}.cpu_topology"),
        cpu_pinning_raw=_int_map(c.get("cpu_pinning_raw"), f"{p}.cpu_pinning_raw"),
    )


def _numa(obj: object, notes: Notes) -> NumaTopology | None:
    if obj is None:
        return None
    p = "numa_topology"
    d = notes.data(obj, "InstanceNUMATopology", p)
    raw_cells = d.get("cells") or []
    if type(raw_cells) is not list:
        raise RowProblem(f"{p}.cells", "expected an array")
    topo_uuid = d.get("instance_uuid")
    if topo_uuid is not None and type(topo_uuid) is not str:
        raise RowProblem(f"{p}.instance_uuid", f"expected a uuid string, got {_json_kind(topo_uuid)}")
    return NumaTopology(
        cells=tuple(_numa_cell(raw, notes, f"{p}.cells[{i}]") for i, raw in enumerate(raw_cells)),
        emulator_threads_policy=_str(d, "emulator_threads_policy", p, optional=True),
        id=_int(d, "id", p, optional=True),
        instance_uuid=topo_uuid,
    )


def _pci_matcher(value: object, path: str) -> dict[str, str | None]:
    # Nova's ListOfDictOfNullableStringsField: physical_network is None on a tunneled net.
    if type(value) is not dict or any(
        type(k) is not str or (v is not None and type(v) is not str) for k, v in value.items()
    ):
        raise RowProblem(path, "expected an object mapping strings to strings or null")
    return dict(value)


def _list_items(
    obj: object, notes: Notes, list_class: str, path: str, key: str, item_class: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The items of a Nova list object (e.g. ``InstancePCIRequests.requests``) as their
    paths in the report and their unwrapped data, one at a time."""
    d = notes.data(obj, list_class, path)
    raw_items = d.get(key) or []
    if type(raw_items) is not list:
        raise RowProblem(f"{path}.{key}", "expected an array")
    for i, raw in enumerate(raw_items):
        item_path = f"{path}[{i}]"
        yield item_path, notes.data(raw, item_class, item_path)


def _pci(obj: object, notes: Notes) -> tuple[PciRequest, ...]:
    if obj is None:
        return ()
    found = []
    for p, r in _list_items(obj, notes, "InstancePCIRequests", "pci_requests", "requests", "InstancePCIRequest"):
        spec = r.get("spec") or []
        if type(spec) is not list:
            raise RowProblem(f"{p}.spec", "expected an array of objects")
        request_id = r.get("request_id")
        if request_id is not None and type(request_id) is not str:
            raise RowProblem(f"{p}.request_id", f"expected a uuid string, got {_json_kind(request_id)}")
        found.append(
            PciRequest(
                count=_int(r, "count", p),
                spec=tuple(_pci_matcher(m, f"{p}.spec[{j}]") for j, m in enumerate(spec)),
                alias_name=_str(r, "alias_name", p, optional=True),
                request_id=request_id,
                numa_policy=_str(r, "numa_policy", p, optional=True),
                requester_id=_str(r, "requester_id", p, optional=True),
                is_new=_bool(r, "is_new", p, False),
            )
        )
    return tuple(found)


def _network_metadata(obj: object, notes: Notes, p: str) -> NetworkMetadata | None:
    if obj is None:
        return None
    d = notes.data(obj, "NetworkMetadata", p)
    return NetworkMetadata(
        physnets=frozenset(_str_list(d, "physnets", p)), tunneled=_bool(d, "tunneled", p, False)
    )


def _limits(obj: object, notes: Notes) -> Limits:
    if obj is None:
        return Limits()
    p = "limits"
    d = notes.data(obj, "SchedulerLimits", p)
    numa: NumaLimits | None = None
    if d.get("numa_topology") is not None:
        q = "limits.numa_topology"
        n = notes.data(d["numa_topology"], "NUMATopologyLimits", q)
        numa = NumaLimits(
            cpu_allocation_ratio=_float(n, "cpu_allocation_ratio", q, None),
            ram_allocation_ratio=_float(n, "ram_allocation_ratio", q, None),
            network_metadata=_network_metadata(n.get("network_metadata"), notes, f"{q}.network_metadata"),
        )
    return Limits(
        vcpu=_int(d, "vcpu", p, optional=True),
        disk_gb=_int(d, "disk_gb", p, optional=True),
        memory_mb=_int(d, "memory_mb", p, optional=True),
        numa_topology=numa,
    )


def _group(obj: object, hints: Mapping[str, tuple[str, ...]], notes: Notes) -> InstanceGroupRef | None:
    if obj is None:
        return None
    p = "instance_group"
    d = notes.data(obj, "InstanceGroup", p)
    policy = _str(d, "policy", p, optional=True)
    if policy is None:  # InstanceGroup < 1.11 kept a list of policies
        policies = _str_list(d, "policies", p)
        policy = policies[0] if policies else None
    rules = d.get("_rules", d.get("rules"))
    uuid = d.get("uuid")
    if uuid is None:
        # Nova's RequestSpec._from_db_object (LP #1830747): a legacy translation left a
        # group without uuid; Nova takes it from the ``group`` scheduler hint.
        hint = hints.get("group") or ()
        if not hint:
            raise RowProblem(f"{p}.uuid", "missing, and no 'group' scheduler hint to recover it from")
        uuid = hint[0]
        notes.repair(f"{p}.uuid", f"taken from the 'group' scheduler hint ({uuid}), as Nova does")
    for dropped in ("members", "hosts"):
        if d.get(dropped):
            notes.drop(f"{p}.{dropped}", "Nova does not persist a group's members and hosts in a spec")
    if type(uuid) is not str:
        raise RowProblem(f"{p}.uuid", f"expected a uuid string, got {_json_kind(uuid)}")
    return InstanceGroupRef(
        uuid=uuid,
        name=_str(d, "name", p, optional=True),
        policy=policy,
        rules=_str_map(rules, "instance_group.rules"),
        id=_int(d, "id", p, optional=True),
        user_id=_str(d, "user_id", p, optional=True),
        project_id=_str(d, "project_id", p, optional=True),
        created_at=_datetime(d, "created_at", p),
        updated_at=_datetime(d, "updated_at", p),
        deleted_at=_datetime(d, "deleted_at", p),
        deleted=_bool(d, "deleted", p, False),
    )


def _security_groups(obj: object, notes: Notes) -> tuple[str, ...]:
    if obj is None:
        return ()
    names = []
    for p, g in _list_items(obj, notes, "SecurityGroupList", "security_groups", "objects", "SecurityGroup"):
        # Nova's make_secgroup_list: a group is known by name, or (Neutron) by uuid.
        name = _str(g, "name", p, optional=True)
        if name is None:
            name = _str(g, "uuid", p)
        extra = sorted(k for k, v in g.items() if k not in ("name", "uuid") and v not in (None, False))
        if g.get("name") is not None and g.get("uuid") is not None:
            extra.append("uuid")
        if extra:
            notes.drop(f"{p}.{{{','.join(extra)}}}", "a spec names its security groups only")
        names.append(name)
    return tuple(names)


def _hints(value: object, notes: Notes) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise RowProblem("scheduler_hints", f"expected an object, got {_json_kind(value)}")
    hints = {}
    for key, items in value.items():
        if type(items) is not list or any(type(v) is not str for v in items):
            raise RowProblem(f"scheduler_hints.{key}", "expected an array of strings")
        if key.startswith("_nova"):
            # e.g. _nova_check_type, which Nova sets for one rebuild and never saves
            notes.drop(f"scheduler_hints.{key}", "a Nova-internal per-operation hint")
            continue
        hints[key] = tuple(items)
    return hints


def _not_empty(value: object) -> bool:
    return value not in (None, [], {}, "")


def convert_row(spec: object, instance_uuid: object) -> tuple[RequestSpec, Notes]:
    """Turn one Nova row (``instance_uuid`` column, ``spec`` column value as text or parsed)
    into a RequestSpec, loaded with Nova 34's rules, and the notes naming every change.

    Raises :class:`RowProblem` (or SpecValidationError) for a row Nova would refuse."""
    if instance_uuid is None or instance_uuid == "":
        raise RowProblem("instance_uuid", "missing")
    if type(instance_uuid) is not str:
        raise RowProblem("instance_uuid", f"expected a uuid string, got {_json_kind(instance_uuid)}")
    key = canonical_uuid(instance_uuid, "instance_uuid")
    if spec is None or spec == "":
        raise RowProblem("spec", "missing")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError as exc:
            raise RowProblem("spec", f"not valid JSON ({exc})") from None
    notes = Notes()
    d = notes.data(spec, "RequestSpec", "")
    inner = d.get("instance_uuid")
    if inner is not None and type(inner) is not str:
        raise RowProblem("instance_uuid", f"expected a uuid string, got {_json_kind(inner)}")
    if inner is None or canonical_uuid(inner, "instance_uuid") != key:
        # Nova's _from_db_object takes instance_uuid (and id) from the row's columns.
        notes.repair("instance_uuid", f"the spec says {inner}; the row's column ({key}) wins, as in Nova")
    if d.get("id") is not None:
        notes.drop("id", "Nova's row id (Nova takes it from the row's column)")
    for name in PER_OPERATION:
        if _not_empty(d.get(name)):
            notes.drop(name, "per-operation data, never persisted by Nova 34")
    if "flavor" not in d or d["flavor"] is None:
        raise RowProblem("flavor", "missing")
    version = _version(spec)
    project_id = _str(d, "project_id", "", optional=True)
    user_id = _str(d, "user_id", "", optional=True)
    for name, value in (("project_id", project_id), ("user_id", user_id)):
        if value is None:
            why = "RequestSpec < 1.9 has none" if name == "user_id" and version < (1, 9) else "null in the row"
            notes.note(name, f"unknown ({why}); Nova heals it from the instance (ensure_project_and_user_id)")
    is_bfv = d.get("is_bfv")
    if is_bfv is None:
        notes.note("is_bfv", "unknown (RequestSpec < 1.11 has none); Nova heals it from the instance")
    elif type(is_bfv) is not bool:
        raise RowProblem("is_bfv", f"expected a boolean, got {_json_kind(is_bfv)}")
    hints = _hints(d.get("scheduler_hints"), notes)
    result = RequestSpec(
        instance_uuid=key,
        project_id=project_id,
        user_id=user_id,
        availability_zone=_str(d, "availability_zone", "", optional=True),
        num_instances=_int(d, "num_instances", "", default=1),
        flavor=_flavor(d["flavor"], notes),
        image=_image(_optional_object(d, "image"), notes),
        numa_topology=_numa(_optional_object(d, "numa_topology"), notes),
        pci_requests=_pci(_optional_object(d, "pci_requests"), notes),
        force_hosts=_str_list(d, "force_hosts", ""),
        force_nodes=_str_list(d, "force_nodes", ""),
        limits=_limits(_optional_object(d, "limits"), notes),
        instance_group=_group(_optional_object(d, "instance_group"), hints, notes),
        scheduler_hints=hints,
        security_groups=_security_groups(_optional_object(d, "security_groups"), notes),
        is_bfv=is_bfv,
        unknown_nova_fields=notes.unknown,
    )
    return result, notes


def convert_spec(spec: object, instance_uuid: object) -> RequestSpec:
    """The RequestSpec of one Nova row (see :func:`convert_row`, which also says what changed)."""
    return convert_row(spec, instance_uuid)[0]


# --- importing --------------------------------------------------------------------------


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def import_rows(
    store: SpecStore,
    rows: Iterable[RawRow],
    *,
    database: str = API,
    dry_run: bool = False,
    batch_size: int = 500,
) -> ImportReport:
    """Import the rows into ``database`` (``"api"`` or a cell); see the module docs."""
    store.topology.database(database)  # unknown cell: ConfigError before anything
    max_bytes = store.topology.settings.max_document_bytes
    results: dict[int, RowResult] = {}
    seen: dict[str, int] = {}
    pending: list[tuple[int, RequestSpec]] = []
    changes: dict[int, tuple[str, ...]] = {}

    def flush() -> None:
        if pending:
            _land(store, pending, database, dry_run, results)
            pending.clear()

    for row in rows:
        shown = row.instance_uuid if isinstance(row.instance_uuid, str) and row.instance_uuid else None
        if row.problem:
            results[row.line] = RowResult(row.line, shown, "rejected", row.problem)
            continue
        try:
            spec, notes = convert_row(row.spec, row.instance_uuid)
            codec.encode(spec, max_bytes=max_bytes)
        except (ReqSpecError, ValueError) as exc:
            results[row.line] = RowResult(row.line, shown, "rejected", _reason(exc))
            continue
        first = seen.setdefault(spec.instance_uuid, row.line)
        if first != row.line:
            results[row.line] = RowResult(
                row.line, spec.instance_uuid, "rejected", f"duplicate instance uuid (first at line {first})"
            )
            continue
        changes[row.line] = tuple(notes.changes)
        pending.append((row.line, spec))
        if len(pending) >= batch_size:
            flush()
    flush()
    outcome = [attrs.evolve(results[k], changes=changes.get(k, ())) for k in sorted(results)]
    return ImportReport(database, dry_run, outcome)


def _land(
    store: SpecStore,
    batch: list[tuple[int, RequestSpec]],
    database: str,
    dry_run: bool,
    results: dict[int, RowResult],
) -> None:
    present = store.locations(s.instance_uuid for _, s in batch)
    new: list[tuple[int, RequestSpec]] = []
    for line, spec in batch:
        loc = present.get(spec.instance_uuid)
        if loc is not None:
            results[line] = RowResult(line, spec.instance_uuid, "skipped", f"already present in {loc.database!r}")
        else:
            new.append((line, spec))
    if dry_run:
        for line, spec in new:
            results[line] = RowResult(line, spec.instance_uuid, "would_import")
        return
    if not new:
        return
    try:
        store.create([s for _, s in new], database=database)
    except (BatchError, SpecExistsError):
        # Some instance has a spec row without a location (e.g. a crashed create): land
        # the others one by one and say which could not be stored.
        for line, spec in new:
            try:
                store.create([spec], database=database)
            except (BatchError, SpecExistsError) as exc:
                results[line] = RowResult(
                    line, spec.instance_uuid, "rejected",
                    f"{_reason(exc)} (a spec row without a location record: run `reqspec recover`)",
                )
            else:
                results[line] = RowResult(line, spec.instance_uuid, "imported")
        return
    for line, spec in new:
        results[line] = RowResult(line, spec.instance_uuid, "imported")


def import_file(
    store: SpecStore,
    path: Path | str,
    *,
    database: str = API,
    dry_run: bool = False,
    fmt: str | None = None,
) -> ImportReport:
    """Read ``path`` (JSON lines, or CSV) and import it; see :func:`import_rows`."""
    return import_rows(store, read_rows(path, fmt=fmt), database=database, dry_run=dry_run)
