"""The operator command: conventions (help, exit codes, one-line errors, masked DSNs,
--json, --config) and the show / list / import-nova / demo commands on a real topology."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import attrs
import pytest
from helpers import build_topology, run_sql

from reqspec_repo._cli.demo import run_demo, sample_spec
from reqspec_repo._cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, build_parser, main
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._nova.lifecycle import Lifecycle
from reqspec_repo._store.leases import LeasePurpose, Leases
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.failpoints import FailpointHit, armed

FIXTURES = Path(__file__).parent / "fixtures" / "nova"


@pytest.fixture(scope="module")
def cli_topology(pg_server):
    topo, drop = build_topology(pg_server)
    yield topo
    drop()


@pytest.fixture(scope="module")
def cli_store(cli_topology):
    """The location-aware store over the topology the CLI sees."""
    with RequestSpecRepository.from_topology(cli_topology) as repo:
        yield SpecStore(repo)


@pytest.fixture
def env(monkeypatch, cli_topology, tmp_path):
    """The CLI sees the test topology through the environment variables."""
    monkeypatch.chdir(tmp_path)  # no ./reqspec.toml, no ./.reqspec
    monkeypatch.delenv("REQSPEC_CONFIG", raising=False)
    monkeypatch.setenv("REQSPEC_API_DSN", cli_topology.api.dsn)
    for name, db in cli_topology.cells.items():
        monkeypatch.setenv(f"REQSPEC_CELL_{name.upper()}_DSN", db.dsn)
    return cli_topology


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def booted(cli_store, n: int = 1, cell: str | None = "cell1") -> list[str]:
    base = sample_spec(num_instances=n)
    specs = [attrs.evolve(base, instance_uuid=str(uuid.uuid4())) for _ in range(n)]
    life = Lifecycle(cli_store)
    life.boot(specs)
    if cell:
        life.scheduled([s.instance_uuid for s in specs], cell)
    return [s.instance_uuid for s in specs]


# --- conventions --------------------------------------------------------------------


def test_help_everywhere_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    assert "examples:" in top and "import-nova" in top and "exit codes" in top
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "example" in capsys.readouterr().out, name


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == EXIT_USAGE
    assert run(capsys)[0] == EXIT_USAGE  # no command: help, exit 2


def test_connection_error_is_one_masked_line_and_debug_adds_the_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REQSPEC_CONFIG", raising=False)
    monkeypatch.setenv("REQSPEC_API_DSN", "postgresql://reqspec:s3cr3t-pw@127.0.0.1:1/nova_api")
    monkeypatch.setenv("REQSPEC_CONNECT_TIMEOUT_S", "1")
    code, out, err = run(capsys, "show", str(uuid.uuid4()))
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("reqspec: error: database 'api' is unavailable")
    assert len(err.strip().splitlines()) == 1 and "s3cr3t-pw" not in err and "Traceback" not in err
    code, _, err = run(capsys, "show", str(uuid.uuid4()), "--debug")
    assert code == EXIT_USAGE and "Traceback" in err and "s3cr3t-pw" not in err


def test_config_file_before_or_after_the_command(capsys, monkeypatch, tmp_path, cli_topology, cli_store):
    (key,) = booted(cli_store)
    monkeypatch.chdir(tmp_path)
    for name in ("REQSPEC_CONFIG", "REQSPEC_API_DSN", *(f"REQSPEC_CELL_{c.upper()}_DSN" for c in cli_topology.cells)):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "prod.toml"
    config.write_text(
        f'[api]\ndsn = "{cli_topology.api.dsn}"\n'
        + "".join(f'[cells.{n}]\ndsn = "{db.dsn}"\n' for n, db in cli_topology.cells.items())
    )
    assert run(capsys, "--config", str(config), "show", key)[0] == EXIT_OK
    code, out, _ = run(capsys, "show", key, "--config", str(config), "--json")
    assert code == EXIT_OK and json.loads(out)["database"] == "cell1"
    code, _, err = run(capsys, "--config", str(tmp_path / "missing.toml"), "show", key)
    assert code == EXIT_USAGE and "does not exist" in err


def test_unknown_cell_is_a_usage_error(capsys, env):
    code, out, err = run(capsys, "list", "--database", "cell9")
    assert code == EXIT_USAGE and out == "" and "unknown cell 'cell9'" in err
    assert len(err.strip().splitlines()) == 1


# --- show and list -------------------------------------------------------------------


def test_show_by_uuid_alone_follows_the_location(capsys, env, cli_store):
    (key,) = booted(cli_store)
    code, out, _ = run(capsys, "show", key)
    assert code == EXIT_OK and key in out and "cell1" in out and "m1.small" in out
    code, out, _ = run(capsys, "show", key, "--json")
    doc = json.loads(out)
    assert code == EXIT_OK and doc["database"] == "cell1" and doc["spec"]["flavor"]["name"] == "m1.small"
    # --database reads that database only
    assert run(capsys, "show", key, "--database", "cell1")[0] == EXIT_OK
    code, out, err = run(capsys, "show", key, "--database", "api")
    assert code == EXIT_PROBLEM and out == "" and "no request spec" in err
    code, _, err = run(capsys, "show", str(uuid.uuid4()))
    assert code == EXIT_PROBLEM and "no location record" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "show", "not-a-uuid")
    assert code == EXIT_USAGE and "'not-a-uuid' is not a uuid" in err


def test_list_pages_with_a_keyset_cursor(capsys, env, cli_store):
    keys = set(booted(cli_store, 5, cell="cell2"))
    seen: list[str] = []
    after: list[str] = []  # no --after: the first page
    pages = 0
    while True:
        code, out, _ = run(capsys, "list", "--database", "cell2", "--limit", "2", *after, "--json")
        assert code == EXIT_OK
        page = json.loads(out)
        assert page["database"] == "cell2" and len(page["specs"]) <= 2
        seen += [s["instance_uuid"] for s in page["specs"]]
        pages += 1
        if page["next_after"] is None:
            break
        after = ["--after", page["next_after"]]
    assert keys <= set(seen) and seen == sorted(seen) and pages >= 3  # instance uuid order, each once
    code, out, _ = run(capsys, "list", "--database", "cell2", "--limit", "2")
    assert code == EXIT_OK and "next page: --after" in out
    code, out, err = run(capsys, "list", "--database", "cell2", "--after", "7")
    assert code == EXIT_USAGE and out == "" and "'7' is not a uuid" in err


# --- import-nova ---------------------------------------------------------------------


def test_import_nova_dry_run_then_import_then_rerun(capsys, env, cli_store, tmp_path):
    rows = [line for kind in ("plain", "numa", "pci") for line in (FIXTURES / f"{kind}.jsonl").read_text().splitlines()]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(rows) + "\n")
    first = json.loads(rows[0])["instance_uuid"]

    code, out, _ = run(capsys, "import-nova", str(path), "--dry-run")
    assert code == EXIT_OK and "would import 3" in out and "nothing written" in out
    assert run(capsys, "show", first)[0] == EXIT_PROBLEM  # the dry run wrote nothing

    code, out, _ = run(capsys, "import-nova", str(path), "--database", "cell1", "--json")
    report = json.loads(out)
    assert code == EXIT_OK and (report["imported"], report["skipped"], report["rejected"]) == (3, 0, 0)
    code, out, _ = run(capsys, "show", first, "--json")
    assert json.loads(out)["database"] == "cell1"

    code, out, _ = run(capsys, "import-nova", str(path))
    assert code == EXIT_OK and "0 spec(s)" in out and "3 already present" in out

    bad = tmp_path / "bad.jsonl"
    bad.write_text(rows[0] + "\n{oops\n")
    code, out, _ = run(capsys, "import-nova", str(bad))
    assert code == EXIT_PROBLEM and "line 2" in out and "rejected: the line is not valid JSON" in out

    code, _, err = run(capsys, "import-nova", str(tmp_path / "missing.jsonl"))
    assert code == EXIT_USAGE and "no such file" in err


# --- demo ----------------------------------------------------------------------------


def test_demo_walks_every_step_and_leaves_a_consistent_topology(fresh_topology):
    cli_topology = fresh_topology(migrate=False)
    lines: list[str] = []
    run_demo(cli_topology, out=lines.append)
    text = "\n".join(lines)
    for step in ("== migrate", "1. boot", "2. scheduled", "3. resize", "confirm:", "4. a pinned", "revert:",
                 "5. the same resize started by another process", "killed (exit -9)",
                 "revert by a second process: back in cell1", "6. a live migration", "destination compute-9",
                 "is refused, nothing moved", "7. delete", "== verify: consistent"):
        assert step in text, step
    assert "scheduler sees: resize: flavor m1.large, numa none, pci none, num_instances 1" in text
    # the pinned guest's NUMA and PCI constraints follow the new flavor, then come back
    assert ("stored in cell2: flavor nfv.large, numa [0: pcpus 0,1,2,3 (isolate), 4096 MB, pages 1048576 KiB] "
            "[1: pcpus 4,5,6,7 (isolate), 4096 MB, pages 1048576 KiB] emulator threads isolate") in text
    assert "pci alias qat x2, port x1" in text and "pci alias qat x1, port x1" in text
    assert text.count("stored in cell1: flavor nfv.medium, numa [0: pcpus 0,1,2,3 (isolate), 4096 MB, pages 2048 KiB]") == 2
    assert "in cell2" in text and "deleted (no location, no spec)" in text
    with RequestSpecRepository.from_topology(cli_topology) as repo:
        report = verify(SpecStore(repo))
    assert report.ok and report.locations == 0


# --- moves from the command line -----------------------------------------------------


def test_move_recover_verify_from_the_command_line(capsys, env, cli_store):
    keys = booted(cli_store, 3, cell=None)
    code, out, _ = run(capsys, "move", "--to", "cell2", *keys)
    assert code == 0 and "moved 3 spec(s) to 'cell2', 0 failed" in out
    assert {cli_store.location(k).database for k in keys} == {"cell2"}

    code, out, _ = run(capsys, "move", "--to", "cell1", "--json", keys[0], str(uuid.uuid4()))
    report = json.loads(out)
    assert code == 1 and report["moved"] == [keys[0]] and len(report["failed"]) == 1

    # Plant an interrupted move: a sealed source row and a hidden copy elsewhere.
    move_id = str(uuid.uuid4())
    run_sql(env, "cell2", "UPDATE request_specs SET move_state='outgoing', move_id=%s WHERE instance_uuid=%s",
            [move_id, keys[1]])
    code, out, _ = run(capsys, "verify")
    assert code == 1 and "interrupted_move" in out and keys[1] in out
    code, out, _ = run(capsys, "recover", "--json")
    assert code == 0 and json.loads(out)["rolled_back"] == [keys[1]]
    code, out, _ = run(capsys, "verify")
    assert code == 0 and out.startswith("consistent")


def test_show_tells_of_a_committed_move_whose_cleanup_is_pending(capsys, env, cli_store):
    keys = booted(cli_store, 1, cell=None)
    with armed("after_commit"), pytest.raises(FailpointHit):
        move_specs(cli_store, keys, "cell2")
    code, out, _ = run(capsys, "show", keys[0], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["database"] == "cell2"
    assert shown["move"].endswith("into 'cell2' committed, cleanup pending")
    Leases(cli_store.repo.connections).expire_all()  # the "crashed" mover's lease ran out
    assert keys[0] in recover(cli_store).finished
    code, out, _ = run(capsys, "show", keys[0], "--json")
    assert code == 0 and json.loads(out)["move"] is None


def test_recover_expire_leases_takes_over_a_dead_movers_instances(capsys, env, cli_store):
    keys = booted(cli_store, 2, cell=None)
    dead_mover = str(uuid.uuid4())
    # A mover that sealed its source and died: its lease still runs for move_lease_ms.
    assert Leases(cli_store.repo.connections).claim(keys, dead_mover, LeasePurpose.MOVE) == set(keys)
    run_sql(env, "api", "UPDATE request_specs SET move_state='outgoing', move_id=%s WHERE instance_uuid = ANY(%s::uuid[])",
            [dead_mover, keys])
    code, out, _ = run(capsys, "recover", "--json")
    assert code == 0 and sorted(json.loads(out)["busy"]) == sorted(keys)  # left alone
    code, out, err = run(capsys, "recover", "--expire-leases", "--json")
    assert code == 0 and sorted(json.loads(out)["rolled_back"]) == sorted(keys) and "ended 2 running lease(s)" in err
    assert Leases(cli_store.repo.connections).of(keys) == {}


def test_move_shows_a_progress_bar_on_a_terminal_only(capsys, env, cli_store, monkeypatch):
    keys = booted(cli_store, 4, cell=None)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, original = Terminal(), sys.stderr
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["move", "--to", "cell1", "--chunk-size", "2", *keys]) == 0
    assert "[##############################] 4/4" in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", original)
    keys2 = booted(cli_store, 2, cell=None)
    code, out, err = run(capsys, "move", "--to", "cell1", *keys2)
    assert code == 0 and "#" not in err and "moved 2 spec(s)" in out


# --- the embedded default -------------------------------------------------------------


def test_embedded_default_keeps_data_between_commands(tmp_path):
    """With no configuration at all, each `reqspec` process uses the server under
    ./.reqspec/ (starting it if needed): what one command stores, the next one reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQSPEC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's package

    def reqspec(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reqspec_repo._cli.main", *argv],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )

    try:
        imported = reqspec("import-nova", str(FIXTURES / "plain.jsonl"))
        assert imported.returncode == 0, imported.stderr
        assert "embedded default server under ./.reqspec/" in imported.stderr
        assert reqspec("server", "stop").returncode == 0  # the next command starts it again
        shown = reqspec("show", "6f1c2b4e-0000-4000-8000-000000000001", "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["database"] == "api"
        assert (tmp_path / ".reqspec").is_dir()
    finally:
        reqspec("server", "stop")
