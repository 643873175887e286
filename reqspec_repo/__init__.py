"""reqspec_repo: persist RequestSpecs in the API database and cell databases (PostgreSQL).

This module is the whole public API; every module whose path has a leading underscore
(``reqspec_repo._store``, ``reqspec_repo._spec``...) is internal and may change.
``reqspec_repo.testing`` is the public pytest plugin for users' own integration tests.

Typical use::

    import reqspec_repo as rs

    topology = rs.load_topology()                     # reqspec.toml / environment
    with rs.RequestSpecRepository.from_topology(topology) as repo:
        store = rs.SpecStore(repo)                    # location-aware, by uuid alone
        store.create(spec)                            # the API database, before scheduling
        rs.move_specs(store, [spec.instance_uuid], to="cell1")
"""

from ._errors import (
    BatchError,
    ConfigError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    DocumentTooLargeError,
    LeaseExpiredError,
    LocationNotFoundError,
    MoveError,
    MoveInProgressError,
    ReadOnlyDatabaseError,
    ReqSpecError,
    SchemaError,
    SpecDecodeError,
    SpecEncodeError,
    SpecExistsError,
    SpecMovingError,
    SpecNotFoundError,
    SpecValidationError,
)
from ._moving.moves import MoveResult, move_specs
from ._moving.recovery import Problem, RecoveryReport, VerifyReport, recover, verify
from ._nova.exporting import export_specs, nova_row
from ._nova.importing import ImportReport, NovaImportError, RowResult, import_file, import_rows
from ._nova.lifecycle import (
    UNSET,
    ConstraintsRequiredError,
    CrossCellMoveError,
    InFlightOperation,
    InstanceGroup,
    Lifecycle,
    LifecycleError,
    MoveFailedError,
    NoOperationInFlightError,
    Operation,
    OperationInFlightError,
    PreparedMove,
    PreparedRebuild,
    RebuildNumaConflictError,
    UnhealedFieldError,
)
from ._spec.model import (
    MEMPAGES_ANY,
    MEMPAGES_LARGE,
    MEMPAGES_SMALL,
    PER_OPERATION_FIELDS,
    UNKNOWN,
    Destination,
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NetworkMetadata,
    NumaCell,
    NumaLimits,
    NumaTopology,
    PciRequest,
    RequestedNetwork,
    RequestGroup,
    RequestLevelParams,
    RequestSpec,
    SchedulerRetry,
    VirtCpuTopology,
    heal_unknown,
    without_per_operation,
)
from ._store.config import API, Database, Settings, Topology, load_topology
from ._store.context import RequestContext, api_context, cell_context, target_cell
from ._store.locations import Location, SpecStore
from ._store.migrate import migrate_topology
from ._store.repository import RequestSpecRepository, SpecBatch, StoredSpec, UnitOfWork

__all__ = [
    # the model (attrs, frozen; no I/O)
    "MEMPAGES_ANY", "MEMPAGES_LARGE", "MEMPAGES_SMALL", "PER_OPERATION_FIELDS", "UNKNOWN",
    "Destination", "Flavor", "ImageMeta", "InstanceGroupRef", "Limits", "NetworkMetadata",
    "NumaCell", "NumaLimits", "NumaTopology", "PciRequest", "RequestGroup", "RequestLevelParams",
    "RequestSpec", "RequestedNetwork", "SchedulerRetry", "VirtCpuTopology",
    "heal_unknown", "without_per_operation",
    # configuration and request context
    "API", "Database", "RequestContext", "Settings", "Topology", "api_context", "cell_context",
    "load_topology", "migrate_topology", "target_cell",
    # the store: one database at a time, or by uuid alone through locations
    "Location", "RequestSpecRepository", "SpecBatch", "SpecStore", "StoredSpec", "UnitOfWork",
    # moving between databases
    "MoveResult", "Problem", "RecoveryReport", "VerifyReport", "move_specs", "recover", "verify",
    # Nova: the lifecycle of an instance, import of Nova's rows, export back to Nova
    "ImportReport", "InFlightOperation", "InstanceGroup", "Lifecycle", "LifecycleError",
    "MoveFailedError", "NovaImportError", "Operation", "PreparedMove", "PreparedRebuild",
    "RowResult", "UNSET", "export_specs", "import_file", "import_rows", "nova_row",
    # lifecycle errors (LifecycleError subclasses)
    "ConstraintsRequiredError", "CrossCellMoveError", "NoOperationInFlightError",
    "OperationInFlightError", "RebuildNumaConflictError", "UnhealedFieldError",
    # typed errors
    "BatchError", "ConfigError", "ConflictError", "DatabaseError", "DatabaseUnavailableError",
    "DocumentTooLargeError", "LeaseExpiredError", "LocationNotFoundError", "MoveError", "MoveInProgressError",
    "ReadOnlyDatabaseError", "ReqSpecError", "SchemaError", "SpecDecodeError", "SpecEncodeError",
    "SpecExistsError", "SpecMovingError", "SpecNotFoundError", "SpecValidationError",
]
