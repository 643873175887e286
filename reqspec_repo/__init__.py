"""reqspec_repo: persist RequestSpecs in the API database and cell databases (PostgreSQL).

Typical use::

    import reqspec_repo as rs

    topology = rs.load_topology()                     # reqspec.toml / environment
    with rs.RequestSpecRepository.from_topology(topology) as repo:
        repo.create(rs.api_context(), spec)           # before scheduling
        stored = repo.get(rs.cell_context("cell1"), spec.instance_uuid)
"""

from .codec import SCHEMA_VERSION, decode, encode
from .config import API, Database, Settings, Topology, load_topology
from .context import RequestContext, api_context, cell_context, target_cell
from .errors import (
    BatchError,
    ConfigError,
    ConflictError,
    DatabaseUnavailableError,
    DocumentTooLargeError,
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
from .migrate import check_schema, migrate_database, migrate_topology
from .model import (
    PER_OPERATION_FIELDS,
    Destination,
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NetworkMetadata,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestedNetwork,
    RequestGroup,
    RequestLevelParams,
    RequestSpec,
    SchedulerRetry,
    without_per_operation,
)
from .pools import Connections
from .repository import RequestSpecRepository, SpecBatch, StoredSpec, UnitOfWork

__all__ = [
    "API", "BatchError", "ConfigError", "ConflictError", "Connections", "Database",
    "DatabaseUnavailableError", "Destination", "DocumentTooLargeError", "Flavor", "ImageMeta",
    "InstanceGroupRef", "Limits", "LocationNotFoundError", "MoveError",
    "MoveInProgressError", "NetworkMetadata", "NumaCell", "NumaTopology", "PER_OPERATION_FIELDS",
    "PciRequest", "ReadOnlyDatabaseError", "ReqSpecError", "RequestContext", "RequestGroup",
    "RequestLevelParams", "RequestSpec", "RequestSpecRepository", "RequestedNetwork",
    "SCHEMA_VERSION", "SchedulerRetry", "SchemaError", "Settings", "SpecBatch", "SpecDecodeError",
    "SpecEncodeError", "SpecExistsError", "SpecMovingError", "SpecNotFoundError",
    "SpecValidationError", "StoredSpec", "Topology", "UnitOfWork", "api_context", "cell_context",
    "check_schema", "decode", "encode", "load_topology", "migrate_database", "migrate_topology",
    "target_cell", "without_per_operation",
]
