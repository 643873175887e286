"""The ``reqspec`` operator command.

Exit codes: 0 ok, 1 a problem was found (e.g. verify found inconsistencies),
2 usage, configuration or connection error. Errors are one line on stderr; ``--debug``
adds the traceback. DSNs are always printed masked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ReqSpecError
from .._store import config as config_mod
from .._store.config import Topology

if TYPE_CHECKING:  # imported when a command runs: the CLI starts without them
    from .._store.locations import Location
    from .._store.repository import RequestSpecRepository

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Topology], int]

EPILOG = """\
configuration:
  With --config FILE, REQSPEC_CONFIG or ./reqspec.toml the databases come from that file
  (REQSPEC_API_DSN and REQSPEC_CELL_<NAME>_DSN override it). With none of them, the
  embedded default is used: a local PostgreSQL that reqspec starts itself, with its data
  under ./.reqspec/ (API database and cells cell1, cell2).

exit codes:
  0 ok, 1 a problem was found (verify found inconsistencies, a spec is missing, an import
  rejected rows, a move failed), 2 usage, configuration or connection error.

examples:
  reqspec migrate
  reqspec demo
  reqspec show 6f1c2b4e-0000-4000-8000-000000000001 --json
  reqspec list --database cell1 --limit 20
  reqspec import-nova request_specs.jsonl --dry-run
  reqspec move --to cell1 6f1c2b4e-0000-4000-8000-000000000001
  reqspec move --from cell1 --to cell2 --json
  reqspec recover && reqspec verify
  reqspec recover --full
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
    from .._embedded import embedded_default

    embedded = embedded_default(Path.cwd())
    print(
        "reqspec: no configuration found; using the embedded default server under ./.reqspec/ "
        "(it keeps running; `reqspec server stop` stops it)",
        file=sys.stderr,
    )
    topology = Topology.from_dsns(embedded.api_dsn, embedded.cells)
    if args.command not in ("migrate", "demo"):  # those two migrate and say so
        # Our own throwaway server: keep its schema current so every command just works.
        from .._store.migrate import migrate_topology

        migrate_topology(topology)
    return topology


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- commands ---------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, topology: Topology) -> int:
    from .._store.migrate import MigrationResult, migrate_topology

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


def _committed_move_pending(repo: RequestSpecRepository, location: Location, database: str) -> str | None:
    """What ``show`` says of a move committed and not cleaned up (recover()'s rule, from
    the rows where the location points)."""
    from .._moving.recovery import committed_move_described
    from .._store.move_rows import MoveRows

    key = location.instance_uuid
    described = committed_move_described(location, MoveRows(repo.connections).states(database, [key]).get(key, []))
    return None if described is None else f"{described}, cleanup pending"


def cmd_show(args: argparse.Namespace, topology: Topology) -> int:
    from .._errors import LocationNotFoundError, SpecNotFoundError
    from .._spec.codec import to_document
    from .._store.context import RequestContext
    from .._store.locations import SpecStore
    from .._store.repository import RequestSpecRepository, StoredSpec

    location: Location | None = None
    moving: str | None = None
    with RequestSpecRepository.from_topology(topology) as repo:
        try:
            stored: StoredSpec
            if args.database:  # that database only, whatever the location says
                stored = repo.get(RequestContext(args.database), args.instance_uuid)
            else:  # through the location record in the API database
                store = SpecStore(repo)
                location = store.location(args.instance_uuid)
                stored = store.get(args.instance_uuid)
                moving = _committed_move_pending(repo, location, stored.database)
        except (SpecNotFoundError, LocationNotFoundError) as exc:
            print(f"reqspec: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
    doc = to_document(stored.spec)
    if args.json:
        _print_json(
            {
                "instance_uuid": stored.instance_uuid,
                "database": stored.database,
                "version": stored.version,
                "move": moving,
                "spec": doc,
            }
        )
        return EXIT_OK
    spec = stored.spec
    flavor = spec.flavor
    group = spec.instance_group
    rows = [
        ("instance", stored.instance_uuid),
        ("database", stored.database + (f"  ({moving})" if moving else "")),
        ("version", str(stored.version)),
        ("project / user", f"{spec.project_id} / {spec.user_id}"),
        ("flavor", f"{flavor.name} ({flavor.vcpus} vcpu, {flavor.memory_mb} MB, {flavor.root_gb} GB)"),
        ("image", f"{spec.image.name or '-'} ({spec.image.id})" if spec.image else "-"),
        ("availability zone", spec.availability_zone or "-"),
        ("instance group", f"{group.name or '-'} ({group.policy}, {group.uuid})" if group else "-"),
        ("num_instances", str(spec.num_instances)),
        ("numa cells", str(len(spec.numa_topology.cells)) if spec.numa_topology else "-"),
        ("pci requests", ", ".join(f"{r.alias_name or '-'} x{r.count}" for r in spec.pci_requests) or "-"),
        ("forced hosts", ", ".join(spec.force_hosts) or "-"),
        ("scheduler hints", ", ".join(f"{k}={','.join(v)}" for k, v in sorted(spec.scheduler_hints.items())) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, topology: Topology) -> int:
    from .._store.context import RequestContext
    from .._store.repository import RequestSpecRepository

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    database = topology.database(args.database).name
    with RequestSpecRepository.from_topology(topology) as repo:
        page = repo.list_page(RequestContext(database), after=args.after, limit=args.limit)
    listed: list[dict[str, Any]] = []
    problems = 0
    for row in page:
        entry: dict[str, Any] = {
            "instance_uuid": row.instance_uuid, "version": row.version,
            "state": row.state, "updated_at": str(row.updated_at),
        }
        if row.spec is None:
            problems += 1
            entry.update(flavor=None, project_id=None, error=str(row.error))
        else:
            entry.update(flavor=row.spec.flavor.name, project_id=row.spec.project_id, error=None)
        listed.append(entry)
    next_after = listed[-1]["instance_uuid"] if len(listed) == args.limit else None
    if args.json:
        _print_json({"database": database, "specs": listed, "next_after": next_after})
    else:
        for e in listed:
            what = f"{e['flavor']:<20} {e['project_id']}" if e["error"] is None else f"! {e['error']}"
            state = "" if e["state"] == "live" else f" [{e['state']}]"
            print(f"{e['instance_uuid']}  v{e['version']:<4} {what}{state}")
        more = f"; next page: --after {next_after}" if next_after is not None else ""
        print(f"{len(listed)} spec(s) in database {database!r}{more}")
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_import_nova(args: argparse.Namespace, topology: Topology) -> int:
    from .._nova.importing import import_file

    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    with _store(topology) as store:
        report = import_file(store, args.file, database=args.database, dry_run=args.dry_run, fmt=args.format)
    if args.json:
        _print_json(report.as_dict())
    else:
        for r in report.rows:
            if r.status in ("rejected", "skipped"):
                print(f"line {r.line:<5} {r.instance_uuid or '-':<36}  {r.status}: {r.reason}")
            for change in r.changes:  # every repair, drop or kept field, named
                print(f"line {r.line:<5} {r.instance_uuid or '-':<36}  {change}")
        verb = "would import" if args.dry_run else "imported"
        print(
            f"{verb} {report.imported} spec(s) into {report.database!r}, "
            f"{report.skipped} already present, {report.rejected} rejected"
            + (" (dry run: nothing written)" if args.dry_run else "")
        )
    return EXIT_OK if report.ok else EXIT_PROBLEM


def cmd_export_nova(args: argparse.Namespace, topology: Topology) -> int:
    import json

    from .._nova.exporting import export_specs

    if args.database is not None:
        topology.database(args.database)  # unknown cell: a usage error before any output
    count = 0
    with _store(topology) as store:
        for row in export_specs(store, args.instance_uuids or None, database=args.database):
            sys.stdout.write(json.dumps(row) + "\n")
            count += 1
    print(f"exported {count} spec(s) as Nova request_specs rows", file=sys.stderr)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, topology: Topology) -> int:
    from .demo import run_demo

    run_demo(topology, out=print)
    return EXIT_OK


def cmd_server(args: argparse.Namespace, topology: Topology | None) -> int:
    from .._embedded import embedded_default_server, stop_embedded_default

    if args.action == "stop":
        stop_embedded_default(Path.cwd())
        print("embedded server stopped")
        return EXIT_OK
    server = embedded_default_server(Path.cwd())
    running = server.is_running()
    print(f"embedded server under ./.reqspec/: {'running' if running else 'stopped'}")
    if server.pgdata.exists() and not server.password_file.exists():
        print("made by an older version, with no password: the next reqspec command secures it")
    elif server.password_file.exists():
        # how to connect, never the secret itself
        password_file = os.path.relpath(server.password_file)
        print(f"address: 127.0.0.1:{server.port} (and its unix socket), user postgres")
        print(f"password: in {password_file} (readable by its owner only)")
        print(
            f"connect: PGPASSWORD=\"$(cat {password_file})\" "
            f"psql -h 127.0.0.1 -p {server.port} -U postgres reqspec_api"
        )
    return EXIT_OK


@contextlib.contextmanager
def _store(topology: Topology) -> Iterator[Any]:
    """A location-aware store over the topology, closed when the command is done."""
    from .._store.locations import SpecStore
    from .._store.repository import RequestSpecRepository

    with RequestSpecRepository.from_topology(topology) as repo:
        yield SpecStore(repo)


class _Progress:
    """A progress bar with rate and time left on a terminal; nothing otherwise (a summary
    line follows anyway). Redrawn at most 10 times a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and self.total and (now - self.drawn >= 0.1 or self.done >= self.total):
            self.drawn = now
            width = 30
            filled = min(width, int(width * self.done / self.total))
            rate = self.done / max(now - self.started, 1e-6)
            left = max(self.total - self.done, 0) / rate if rate else 0.0
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                f"  {rate:,.0f}/s  {_duration(left)} left "
            )
            sys.stderr.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\n")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def cmd_move(args: argparse.Namespace, topology: Topology) -> int:
    if args.source and args.instance_uuids:
        raise UsageError("give instance uuids or --from DATABASE, not both")
    if not args.source and not args.instance_uuids:
        raise UsageError("nothing to move: give instance uuids or --from DATABASE")
    if args.chunk_size < 1 or args.workers < 1:
        raise UsageError("--chunk-size and --workers must be at least 1")
    if args.source:
        return _move_database(args, topology)
    from .._moving.moves import move_specs

    with _store(topology) as store:
        uuids: list[str] = list(args.instance_uuids)
        progress = _Progress(len(uuids))
        try:
            result = move_specs(store, uuids, args.to, progress=progress, chunk_size=args.chunk_size)
        finally:
            progress.close()
    if args.json:
        _print_json(
            {"target": result.target, "moved": result.moved, "failed": {k: str(v) for k, v in result.failed.items()}}
        )
    else:
        for key, error in sorted(result.failed.items()):
            print(f"failed {key}: {error}", file=sys.stderr)
        print(f"moved {len(result.moved)} spec(s) to {args.to!r}, {len(result.failed)} failed")
    return EXIT_OK if result.ok else EXIT_PROBLEM


def _move_database(args: argparse.Namespace, topology: Topology) -> int:
    """``move --from S``: every spec of S, streamed in keyset pages (bounded memory)."""
    from .._moving.moves import move_database

    with _store(topology) as store:
        topology.database(args.to)  # an unknown target fails before counting anything
        progress = _Progress(store.count_in(args.source))
        try:
            summary = move_database(store, args.source, args.to, progress=progress,
                                    chunk_size=args.chunk_size, workers=args.workers)
        finally:
            progress.close()
    seconds = progress.elapsed
    rate = summary.moved / seconds if seconds > 0 else 0.0
    if args.json:
        _print_json({
            "source": summary.source, "target": summary.target, "moved": summary.moved,
            "failed": {k: str(v) for k, v in summary.failed.items()},
            "seconds": round(seconds, 3), "specs_per_second": round(rate, 1),
        })
    else:
        for key, error in sorted(summary.failed.items()):
            print(f"failed {key}: {error}", file=sys.stderr)
        print(
            f"moved {summary.moved} spec(s) from {args.source!r} to {args.to!r}, "
            f"{len(summary.failed)} failed ({_duration(seconds)}, {rate:,.0f}/s)"
        )
    return EXIT_OK if summary.ok else EXIT_PROBLEM


def cmd_recover(args: argparse.Namespace, topology: Topology) -> int:
    from .._moving.recovery import recover

    with _store(topology) as store:
        if args.expire_leases:
            from .._store.leases import Leases

            ended = Leases(store.repo.connections).expire_all()
            print(f"ended {ended} running lease(s)", file=sys.stderr)
        report = recover(store, full=args.full)
    fields = ("rolled_back", "finished", "repaired", "dangling_removed", "adopted", "busy")
    if args.json:
        _print_json({f: getattr(report, f) for f in fields})
    else:
        print(", ".join(f"{len(getattr(report, f))} {f.replace('_', ' ')}" for f in fields))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, topology: Topology) -> int:
    from .._moving.recovery import verify

    with _store(topology) as store:
        report = verify(store)
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


def _common(p: argparse.ArgumentParser) -> None:
    """--config and --debug after the sub-command too (SUPPRESS keeps a value given
    before it)."""
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="topology TOML file")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks and debug logs")


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
        _common(p)
        COMMANDS[name] = handler
        return p

    add("migrate", cmd_migrate, "apply the migrations to the API database and every cell", "reqspec migrate")

    p = add(
        "show", cmd_show,
        "show one instance's stored spec, found through its location record "
        "(exit 1 if there is none)",
        "reqspec show UUID\n  reqspec show UUID --json\n  reqspec show UUID --database cell1",
    )
    p.add_argument("instance_uuid", metavar="UUID")
    p.add_argument("--database", help="read this database ('api' or a cell name) directly, "
                   "ignoring the location record")

    p = add(
        "list", cmd_list,
        "list the specs stored in one database, a page at a time (exit 1 if a row cannot be decoded)",
        "reqspec list --database cell1 --limit 50\n"
        "  reqspec list --database cell1 --after 9d2c6b1e-5a4f-4c3e-8b7a-0f1e2d3c4b5a",
    )
    p.add_argument("--database", default=config_mod.API, help="'api' (default) or a cell name")
    p.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    p.add_argument("--after", default=None, metavar="UUID",
                   help="start after this instance uuid (the 'next page' value of the previous page);"
                        " specs are listed in instance uuid order")

    p = add(
        "import-nova", cmd_import_nova,
        "import specs exported from Nova's request_specs table (JSON lines or CSV with the "
        "columns instance_uuid and spec); bad rows are reported and skipped, the others "
        "land; re-running skips those already present (exit 1 if a row was rejected)",
        "reqspec import-nova request_specs.jsonl --dry-run\n"
        "  reqspec import-nova request_specs.csv --database cell1 --json",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--database", default=config_mod.API,
                   help="where the specs land: 'api' (default, as before scheduling) or a cell name")
    p.add_argument("--dry-run", action="store_true", help="check and report only; write nothing")
    p.add_argument("--format", choices=["jsonl", "csv"],
                   help="input format (default: csv for a .csv file, otherwise jsonl)")

    p = add(
        "export-nova", cmd_export_nova,
        "write stored specs as rows of Nova's request_specs table (JSON lines "
        "{instance_uuid, spec}) that Nova 34 loads; the given instances, else every spec "
        "of --database, else of every database",
        "reqspec export-nova > request_specs.jsonl\n"
        "  reqspec export-nova --database cell1 UUID [UUID ...]",
    )
    p.add_argument("instance_uuids", nargs="*", metavar="UUID")
    p.add_argument("--database", help="read this database ('api' or a cell name) only")

    add(
        "demo", cmd_demo,
        "walk a 3-instance boot through scheduling, a cross-cell resize, a revert and a "
        "delete on the configured (or embedded) databases",
        "reqspec demo",
    )

    p = add(
        "move", cmd_move, "move specs to another database (two-phase, crash-safe)",
        "reqspec move --to cell1 UUID [UUID ...]\n  reqspec move --from cell1 --to cell2",
    )
    p.add_argument("instance_uuids", nargs="*", metavar="UUID")
    p.add_argument("--to", required=True, help="target database: 'api' or a cell name")
    p.add_argument("--from", dest="source",
                   help="move every spec stored in this database (streamed: bounded memory; "
                   "specs that cannot move are listed and the exit code is 1)")
    p.add_argument("--chunk-size", type=int, default=500, help="specs per batch (default 500)")
    p.add_argument("--workers", type=int, default=3,
                   help="with --from: pages of specs moved at once (default 3)")

    p = add(
        "recover", cmd_recover,
        "finish or roll back interrupted moves and creates (looks only at what is in flight; "
        "--full also cross-checks every spec, as verify does, and repairs what it finds)",
        "reqspec recover\n  reqspec recover --full --json",
    )
    p.add_argument("--full", action="store_true",
                   help="cross-check every location record against every database (streamed, "
                   "range by range) and repair orphans, duplicates and dangling locations too")
    p.add_argument(
        "--expire-leases", action="store_true",
        help="end every move lease first (only when every mover is known to be dead, e.g. killed); "
        "otherwise recover() waits for them to expire (move_lease_ms)",
    )
    add(
        "verify", cmd_verify,
        "check that every spec is live in exactly one database, the one its location names "
        "(exit 1 if not)",
        "reqspec verify --json",
    )

    p = sub.add_parser("server", help="status or stop of the embedded default server",
                       description="Status or stop of the embedded PostgreSQL under ./.reqspec/.",
                       epilog="example:\n  reqspec server status\n  reqspec server stop",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["status", "stop"])
    _common(p)

    for extend in _EXTENSIONS:
        extend(sub, add)
    return parser


# Other modules (moves, import) register their sub-commands here.
_EXTENSIONS: list[Callable[[Any, Callable[..., argparse.ArgumentParser]], None]] = []


def _one_line(exc: BaseException, topology: Topology | None) -> str:
    from .._store.dsn import mask_text, password_of

    text = " ".join(str(exc).split()) or type(exc).__name__
    secrets = [password_of(db.dsn) for db in topology.all_databases()] if topology else []
    return mask_text(text, [s for s in secrets if s])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    if not args.debug:  # the pool's retry warnings would repeat the one-line error
        logging.getLogger("psycopg").setLevel(logging.ERROR)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    topology_or_none: Topology | None = None
    try:
        if args.command == "server":
            return cmd_server(args, None)
        topology_or_none = resolve_topology(args)
        return COMMANDS[args.command](args, topology_or_none)
    except KeyboardInterrupt:
        print("reqspec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback (unless --debug), never a password
        if args.debug:
            traceback.print_exc()
        prefix = "error" if isinstance(exc, ReqSpecError) else f"unexpected error ({type(exc).__name__})"
        print(f"reqspec: {prefix}: {_one_line(exc, topology_or_none)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
