"""The ``reqspec`` operator command.

Exit codes: 0 ok, 1 a problem was found (e.g. verify found inconsistencies),
2 usage, configuration or connection error. Errors are one line on stderr; ``--debug``
adds the traceback. DSNs are always printed masked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from . import config as config_mod
from .config import Topology
from .errors import ReqSpecError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Topology], int]

EPILOG = """\
configuration:
  With --config FILE, REQSPEC_CONFIG or ./reqspec.toml the databases come from that file
  (REQSPEC_API_DSN and REQSPEC_CELL_<NAME>_DSN override it). With none of them, the
  embedded default is used: a local PostgreSQL that reqspec starts itself, with its data
  under ./.reqspec/ (API database and cells cell1, cell2).

examples:
  reqspec migrate
  reqspec demo
  reqspec show 6f1c2b4e-0000-4000-8000-000000000001 --json
  reqspec list --database cell1 --limit 20
  reqspec move --to cell1 6f1c2b4e-0000-4000-8000-000000000001
  reqspec recover && reqspec verify
  reqspec --config prod.toml verify
"""


class UsageError(ReqSpecError):
    """A command-line mistake: exit code 2."""


def resolve_topology(args: argparse.Namespace) -> Topology:
    """The configured topology, or the embedded default when nothing is configured."""
    if args.config:
        return config_mod.load_topology(args.config)
    if config_mod.is_configured():
        return config_mod.load_topology()
    from .embedded import embedded_default

    embedded = embedded_default(Path.cwd())
    print(
        "reqspec: no configuration found; using the embedded default server under ./.reqspec/",
        file=sys.stderr,
    )
    return Topology.from_dsns(embedded.api_dsn, embedded.cells)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- commands ---------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, topology: Topology) -> int:
    from .migrate import MigrationResult, migrate_topology

    results: list[MigrationResult] = []

    def report(result: MigrationResult) -> None:
        results.append(result)
        if not args.json:
            print(
                f"{result.database:<10} {result.masked_dsn}: applied {result.applied} "
                f"migration(s), {result.total} known"
            )

    migrate_topology(topology, on_result=report)
    if args.json:
        _print_json([{"database": r.database, "dsn": r.masked_dsn, "applied": r.applied} for r in results])
    return EXIT_OK


def cmd_show(args: argparse.Namespace, topology: Topology) -> int:
    from .codec import to_document
    from .context import RequestContext
    from .repository import RequestSpecRepository

    with RequestSpecRepository.from_topology(topology) as repo:
        stored = repo.get(RequestContext(args.database), args.instance_uuid)
    doc = to_document(stored.spec)
    if args.json:
        _print_json({"database": stored.database, "version": stored.version, "spec": doc})
        return EXIT_OK
    flavor = stored.spec.flavor
    rows = [
        ("instance", stored.instance_uuid),
        ("database", stored.database),
        ("version", str(stored.version)),
        ("project / user", f"{stored.spec.project_id} / {stored.spec.user_id}"),
        ("flavor", f"{flavor.name} ({flavor.vcpus} vcpu, {flavor.memory_mb} MB, {flavor.root_gb} GB)"),
        ("image", stored.spec.image.id if stored.spec.image else "-"),
        ("availability zone", stored.spec.availability_zone or "-"),
        ("instance group", stored.spec.instance_group.policy if stored.spec.instance_group else "-"),
        ("num_instances", str(stored.spec.num_instances)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, topology: Topology) -> int:
    from .context import RequestContext
    from .repository import RequestSpecRepository

    listed: list[dict[str, Any]] = []
    with RequestSpecRepository.from_topology(topology) as repo:
        for i, stored in enumerate(repo.iterate(RequestContext(args.database))):
            if i < args.offset:
                continue
            if len(listed) >= args.limit:
                break
            listed.append(
                {
                    "instance_uuid": stored.instance_uuid,
                    "version": stored.version,
                    "flavor": stored.spec.flavor.name,
                    "project_id": stored.spec.project_id,
                }
            )
    if args.json:
        _print_json(listed)
    else:
        for row in listed:
            print(f"{row['instance_uuid']}  v{row['version']:<4} {row['flavor']:<20} {row['project_id']}")
        print(f"{len(listed)} spec(s) in database {args.database!r} (offset {args.offset})")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, topology: Topology) -> int:
    from .demo import run_demo

    run_demo(topology, out=print)
    return EXIT_OK


def cmd_server(args: argparse.Namespace, topology: Topology | None) -> int:
    from .embedded import LocalServer, stop_embedded_default

    if args.action == "stop":
        stop_embedded_default(Path.cwd())
        print("embedded server stopped")
        return EXIT_OK
    server = LocalServer(Path.cwd() / ".reqspec" / "pg")
    running = server.is_running()
    print(f"embedded server under ./.reqspec/: {'running' if running else 'stopped'}")
    return EXIT_OK


def _store(topology: Topology) -> Any:
    from .locations import SpecStore
    from .repository import RequestSpecRepository

    return SpecStore(RequestSpecRepository.from_topology(topology))


class _Progress:
    """A progress bar on a terminal; nothing otherwise (a summary line follows anyway)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.tty and self.total:
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\n")


def cmd_move(args: argparse.Namespace, topology: Topology) -> int:
    from .moves import move_specs

    store = _store(topology)
    try:
        uuids: list[str] = list(args.instance_uuids)
        if args.source:
            from .context import RequestContext

            uuids += [s.instance_uuid for s in store.repo.iterate(RequestContext(args.source))]
        if not uuids:
            raise UsageError("nothing to move: give instance uuids or --from DATABASE")
        progress = _Progress(len(uuids))
        try:
            result = move_specs(store, uuids, args.to, progress=progress, chunk_size=args.chunk_size)
        finally:
            progress.close()
    finally:
        store.repo.close()
    if args.json:
        _print_json(
            {"target": result.target, "moved": result.moved, "failed": {k: str(v) for k, v in result.failed.items()}}
        )
    else:
        for key, error in sorted(result.failed.items()):
            print(f"failed {key}: {error}", file=sys.stderr)
        print(f"moved {len(result.moved)} spec(s) to {args.to!r}, {len(result.failed)} failed")
    return EXIT_OK if result.ok else EXIT_PROBLEM


def cmd_recover(args: argparse.Namespace, topology: Topology) -> int:
    from .recovery import recover

    store = _store(topology)
    try:
        report = recover(store)
    finally:
        store.repo.close()
    fields = ("rolled_back", "finished", "repaired", "dangling_removed", "adopted", "busy")
    if args.json:
        _print_json({f: getattr(report, f) for f in fields})
    else:
        print(", ".join(f"{len(getattr(report, f))} {f.replace('_', ' ')}" for f in fields))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, topology: Topology) -> int:
    from .recovery import verify

    store = _store(topology)
    try:
        report = verify(store)
    finally:
        store.repo.close()
    if args.json:
        _print_json(
            {
                "ok": report.ok,
                "locations": report.locations,
                "rows": report.rows,
                "busy": report.busy,
                "problems": [attrs_asdict(p) for p in report.problems],
            }
        )
    else:
        for p in report.problems:
            print(f"{p.kind:<17} {p.instance_uuid}  {p.detail}")
        rows = ", ".join(f"{k}: {v}" for k, v in sorted(report.rows.items()))
        state = "consistent" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"{state}; {report.locations} location(s); rows {rows or 'none'}; {len(report.busy)} busy")
    return EXIT_OK if report.ok else EXIT_PROBLEM


def attrs_asdict(obj: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(obj)


# --- parser -----------------------------------------------------------------------------

COMMANDS: dict[str, Handler] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reqspec",
        description="Persist and move RequestSpecs between the API database and cell databases.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="topology TOML file (default: $REQSPEC_CONFIG or ./reqspec.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        COMMANDS[name] = handler
        return p

    add("migrate", cmd_migrate, "apply the migrations to the API database and every cell", "reqspec migrate")

    p = add("show", cmd_show, "show one instance's stored spec", "reqspec show UUID --database cell1 --json")
    p.add_argument("instance_uuid")
    p.add_argument("--database", default=config_mod.API, help="'api' (default) or a cell name")

    p = add("list", cmd_list, "list the specs stored in one database", "reqspec list --database cell1 --limit 50")
    p.add_argument("--database", default=config_mod.API, help="'api' (default) or a cell name")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)

    add("demo", cmd_demo, "run the demo on the configured (or embedded) databases", "reqspec demo")

    p = add(
        "move", cmd_move, "move specs to another database (two-phase, crash-safe)",
        "reqspec move --to cell1 UUID [UUID ...]\n  reqspec move --from cell1 --to cell2",
    )
    p.add_argument("instance_uuids", nargs="*", metavar="UUID")
    p.add_argument("--to", required=True, help="target database: 'api' or a cell name")
    p.add_argument("--from", dest="source", help="move every spec stored in this database")
    p.add_argument("--chunk-size", type=int, default=500, help="specs per batch (default 500)")

    add("recover", cmd_recover, "finish or roll back interrupted moves", "reqspec recover")
    add(
        "verify", cmd_verify,
        "check that every spec is live in exactly one database, the one its location names "
        "(exit 1 if not)",
        "reqspec verify --json",
    )

    p = sub.add_parser("server", help="status or stop of the embedded default server",
                       description="Status or stop of the embedded PostgreSQL under ./.reqspec/.")
    p.add_argument("action", choices=["status", "stop"])

    for extend in _EXTENSIONS:
        extend(sub, add)
    return parser


# Other modules (moves, import) register their sub-commands here.
_EXTENSIONS: list[Callable[[Any, Callable[..., argparse.ArgumentParser]], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "server":
            return cmd_server(args, None)
        topology = resolve_topology(args)
        return COMMANDS[args.command](args, topology)
    except ReqSpecError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"reqspec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("reqspec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
