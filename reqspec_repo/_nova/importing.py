"""Import request specs exported from Nova's ``request_specs`` table.

Input rows carry the instance uuid and the text of Nova's ``spec`` column, either as JSON
lines ``{"instance_uuid": "...", "spec": "<column text>"}`` or as CSV with the columns
``instance_uuid`` and ``spec``. The column text is a Nova versioned object: nested
envelopes ``{"nova_object.name", "nova_object.namespace", "nova_object.version",
"nova_object.data", "nova_object.changes"}`` for RequestSpec 1.x and the objects it holds
(Flavor, ImageMeta with ImageMetaProps, InstanceNUMATopology with InstanceNUMACell,
InstancePCIRequests with InstancePCIRequest, SchedulerLimits, InstanceGroup,
SecurityGroupList with SecurityGroup...).

Mapping to :class:`~reqspec_repo.RequestSpec`:

* the durable fields map one to one; Nova fields the model does not keep are dropped
  (flavor ``id``/``disabled``/``projects``/timestamps, image ``visibility``/``tags``/...,
  NUMA ``cpu_thread_policy``/``cpuset_reserved``, PCI ``is_new``/``requester_id``,
  the NUMA part of the limits, security groups other than their names);
* the per-operation fields (``retry``, ``ignore_hosts``, ``requested_destination``,
  ``requested_resources``, ``network_metadata``, ``request_level_params``,
  ``requested_networks``) are dropped on the way in, as are the group's ``members`` and
  ``hosts``: older Nova releases stored some of them;
* the group ``policy`` of InstanceGroup < 1.11 comes from its ``policies`` list; a
  RequestSpec < 1.9 has no ``user_id`` and gets ``""``.

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
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestSpec,
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
    line: int
    instance_uuid: str | None
    status: Status
    reason: str | None = None


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
            "rows": [attrs.asdict(r) for r in self.rows],
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


def _tname(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _unwrap(obj: object, names: tuple[str, ...], path: str) -> dict[str, Any]:
    """The ``nova_object.data`` of an envelope whose name is one of ``names``, major 1."""
    if not isinstance(obj, dict) or "nova_object.name" not in obj:
        raise RowProblem(path, f"expected a Nova {names[0]} object, got {_tname(obj)}")
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


def _wrapped_items(
    obj: object, list_name: str, path: str, key: str, item_name: str, item_path: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The items of a Nova list object (``list_name`` envelope, array under ``key``),
    each unwrapped from its ``item_name`` envelope, with the path to name in errors."""
    raw_items = _unwrap(obj, (list_name,), path).get(key) or []
    if type(raw_items) is not list:
        raise RowProblem(f"{path}.{key}", "expected an array")
    for i, raw in enumerate(raw_items):
        p = f"{item_path}[{i}]"
        yield p, _unwrap(raw, (item_name,), p)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(data: Mapping[str, Any], key: str, path: str, *, optional: bool = False, default: str | None = None) -> Any:
    value = data.get(key, default)
    if value is None and optional:
        return None
    if type(value) is not str:
        raise RowProblem(_join(path, key), f"expected a string, got {_tname(value)}")
    return value


def _int(data: Mapping[str, Any], key: str, path: str, *, optional: bool = False, default: int | None = None) -> Any:
    value = data.get(key, default)
    if value is None and optional:
        return None
    if type(value) is not int:
        raise RowProblem(_join(path, key), f"expected an integer, got {_tname(value)}")
    return value


def _bool(data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if type(value) is not bool:
        raise RowProblem(_join(path, key), f"expected a boolean, got {_tname(value)}")
    return value


def _float(data: Mapping[str, Any], key: str, path: str, default: float) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if type(value) not in (int, float):
        raise RowProblem(_join(path, key), f"expected a number, got {_tname(value)}")
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
        raise RowProblem(_join(path, key), f"expected a date-time string, got {_tname(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RowProblem(_join(path, key), f"{value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:  # Nova writes UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _optional_object(data: Mapping[str, Any], key: str) -> object:
    value = data.get(key)
    return None if value is None else value


# --- object by object -------------------------------------------------------------------


def _flavor(obj: object) -> Flavor:
    p = "flavor"
    d = _unwrap(obj, ("Flavor",), p)
    return Flavor(
        flavorid=_str(d, "flavorid", p),
        name=_str(d, "name", p),
        memory_mb=_int(d, "memory_mb", p),
        vcpus=_int(d, "vcpus", p),
        root_gb=_int(d, "root_gb", p, default=0),
        ephemeral_gb=_int(d, "ephemeral_gb", p, default=0),
        swap=_int(d, "swap", p, default=0),
        rxtx_factor=_float(d, "rxtx_factor", p, 1.0),
        vcpu_weight=_int(d, "vcpu_weight", p, optional=True),
        is_public=_bool(d, "is_public", p, True),
        extra_specs=_str_map(d.get("extra_specs"), "flavor.extra_specs"),
    )


def _image(obj: object) -> ImageMeta | None:
    if obj is None:
        return None
    p = "image"
    d = _unwrap(obj, ("ImageMeta",), p)
    props_obj = d.get("properties")
    properties: dict[str, Any] = {}
    if props_obj is not None:
        properties = dict(_unwrap(props_obj, ("ImageMetaProps",), "image.properties"))
    image_id = d.get("id")
    if image_id is not None and type(image_id) is not str:
        raise RowProblem("image.id", f"expected a uuid string, got {_tname(image_id)}")
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
    )


def _numa(obj: object) -> NumaTopology | None:
    if obj is None:
        return None
    cells = []
    for p, c in _wrapped_items(
        obj, "InstanceNUMATopology", "numa_topology", "cells", "InstanceNUMACell", "numa_topology.cells"
    ):
        cells.append(
            NumaCell(
                id=_int(c, "id", p),
                cpuset=_int_set(c, "cpuset", p),
                pcpuset=_int_set(c, "pcpuset", p),
                memory=_int(c, "memory", p),
                pagesize=_int(c, "pagesize", p, optional=True),
                cpu_policy=_str(c, "cpu_policy", p, optional=True),
            )
        )
    return NumaTopology(cells=tuple(cells))


def _pci(obj: object) -> tuple[PciRequest, ...]:
    if obj is None:
        return ()
    found = []
    for p, r in _wrapped_items(
        obj, "InstancePCIRequests", "pci_requests", "requests", "InstancePCIRequest", "pci_requests"
    ):
        spec = r.get("spec") or []
        if type(spec) is not list:
            raise RowProblem(f"{p}.spec", "expected an array of objects")
        request_id = r.get("request_id")
        if request_id is not None and type(request_id) is not str:
            raise RowProblem(f"{p}.request_id", f"expected a uuid string, got {_tname(request_id)}")
        found.append(
            PciRequest(
                count=_int(r, "count", p),
                spec=tuple(_str_map(m, f"{p}.spec[{j}]") for j, m in enumerate(spec)),
                alias_name=_str(r, "alias_name", p, optional=True),
                request_id=request_id,
                numa_policy=_str(r, "numa_policy", p, optional=True),
            )
        )
    return tuple(found)


def _limits(obj: object) -> Limits:
    if obj is None:
        return Limits()
    p = "limits"
    d = _unwrap(obj, ("SchedulerLimits",), p)
    return Limits(
        vcpu=_int(d, "vcpu", p, optional=True),
        disk_gb=_int(d, "disk_gb", p, optional=True),
        memory_mb=_int(d, "memory_mb", p, optional=True),
    )


def _group(obj: object) -> InstanceGroupRef | None:
    if obj is None:
        return None
    p = "instance_group"
    d = _unwrap(obj, ("InstanceGroup",), p)
    policy = _str(d, "policy", p, optional=True)
    if policy is None:  # InstanceGroup < 1.11 kept a list of policies
        policies = _str_list(d, "policies", p)
        policy = policies[0] if policies else None
    rules = d.get("_rules", d.get("rules"))
    return InstanceGroupRef(
        uuid=_str(d, "uuid", p),
        name=_str(d, "name", p, optional=True),
        policy=policy,
        rules=_str_map(rules, "instance_group.rules"),
    )  # members and hosts are deliberately not read


def _security_groups(obj: object) -> tuple[str, ...]:
    if obj is None:
        return ()
    names = []
    for p, g in _wrapped_items(
        obj, "SecurityGroupList", "security_groups", "objects", "SecurityGroup", "security_groups"
    ):
        name = _str(g, "name", p, optional=True)
        if name is None:
            name = _str(g, "uuid", p)  # a group known by uuid only
        names.append(name)
    return tuple(names)


def _hints(value: object) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise RowProblem("scheduler_hints", f"expected an object, got {_tname(value)}")
    hints = {}
    for key, items in value.items():
        if type(items) is not list or any(type(v) is not str for v in items):
            raise RowProblem(f"scheduler_hints.{key}", "expected an array of strings")
        hints[key] = tuple(items)
    return hints


def convert_spec(spec: object, instance_uuid: object) -> RequestSpec:
    """Turn one Nova ``spec`` column value (text or parsed) into a RequestSpec.

    ``instance_uuid`` is the row's key; the spec must name the same instance. Raises
    :class:`RowProblem` (or SpecValidationError) saying what is wrong and where."""
    if instance_uuid is None or instance_uuid == "":
        raise RowProblem("instance_uuid", "missing")
    if type(instance_uuid) is not str:
        raise RowProblem("instance_uuid", f"expected a uuid string, got {_tname(instance_uuid)}")
    key = canonical_uuid(instance_uuid, "instance_uuid")
    if spec is None or spec == "":
        raise RowProblem("spec", "missing")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError as exc:
            raise RowProblem("spec", f"not valid JSON ({exc})") from None
    d = _unwrap(spec, ("RequestSpec",), "")
    inner = d.get("instance_uuid")
    if inner is None:
        raise RowProblem("instance_uuid", "missing in the spec")
    if type(inner) is not str:
        raise RowProblem("instance_uuid", f"expected a uuid string, got {_tname(inner)}")
    if canonical_uuid(inner, "instance_uuid") != key:
        raise RowProblem("instance_uuid", f"mismatch: the row says {key}, the spec says {inner}")
    if "flavor" not in d or d["flavor"] is None:
        raise RowProblem("flavor", "missing")
    return RequestSpec(
        instance_uuid=key,
        project_id=_str(d, "project_id", ""),
        user_id=_str(d, "user_id", "", default=""),  # RequestSpec < 1.9 has none
        availability_zone=_str(d, "availability_zone", "", optional=True),
        num_instances=_int(d, "num_instances", "", default=1),
        flavor=_flavor(d["flavor"]),
        image=_image(_optional_object(d, "image")),
        numa_topology=_numa(_optional_object(d, "numa_topology")),
        pci_requests=_pci(_optional_object(d, "pci_requests")),
        force_hosts=_str_list(d, "force_hosts", ""),
        force_nodes=_str_list(d, "force_nodes", ""),
        limits=_limits(_optional_object(d, "limits")),
        instance_group=_group(_optional_object(d, "instance_group")),
        scheduler_hints=_hints(d.get("scheduler_hints")),
        security_groups=_security_groups(_optional_object(d, "security_groups")),
        is_bfv=_bool(d, "is_bfv", "", False),
    )  # per-operation fields (retry, ignore_hosts, requested_destination...) are dropped


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
            spec = convert_spec(row.spec, row.instance_uuid)
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
        pending.append((row.line, spec))
        if len(pending) >= batch_size:
            flush()
    flush()
    return ImportReport(database, dry_run, [results[k] for k in sorted(results)])


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
