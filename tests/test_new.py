"""`nexus new`: a service appended as text, validated by validate's own rules, then generated;
every refusal through the real CLI, changing nothing; the questions asked in a terminal."""

from __future__ import annotations

import copy
import errno
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CATALOG, ROOT, age_past_stale, can_mount, dump, fill, killed_at_rename, nexus, tree
from typer.testing import CliRunner

from nexus import write
from nexus.authoring.new import (
    DEFAULT_DESCRIPTION,
    NewService,
    add_service,
    candidate,
    entry_lines,
    insert_entry,
    parse_depends_on,
    scalar,
)
from nexus.catalog import load_catalog, load_catalog_text
from nexus.catalog.ports import next_port
from nexus.errors import CatalogError, NexusError, OutputError, RefusedError
from nexus.pipeline import generate

# .nexus/ holds run state and --force backups, not state a refusal must keep
RUN_STATE = (".nexus",)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped catalog and its generated tree, copied once; refusals must leave it as is."""
    root = tmp_path_factory.mktemp("shipped")
    shutil.copy(CATALOG, root / "catalog.yaml")
    shutil.copytree(ROOT / "generated", root / "generated")
    return root


# -- refusals, each through the real CLI ---------------------------------------------------------

REFUSALS = {
    "taken name": (
        ["auth-service", "--category", "core", "--team", "core-platform"],
        r"NAME auth-service: duplicate key 'auth-service' \(first defined at line \d+\)",
    ),
    "taken port": (
        ["ticket-office", "--category", "streaming", "--team", "media", "--port", "3001"],
        r"--port: port 3001 is already used by 'auth-service'",
    ),
    "unknown team": (
        ["ticket-office", "--category", "streaming", "--team", "medai"],
        r"--team: unknown team 'medai' \(did you mean 'media'\?\)",
    ),
    "unknown category": (
        ["ticket-office", "--category", "streeming", "--team", "media"],
        r"--category: unknown category 'streeming' \(did you mean 'streaming'\?\)",
    ),
    "unknown dependency": (
        ["ticket-office", "--category", "streaming", "--team", "media", "--depends-on", "token-mgr,ticket-db"],
        r"--depends-on ticket-db: depends on unknown service 'ticket-db'",
    ),
    # a new service has no dependents yet, so the only cycle it can close is through itself
    "cycle": (
        ["ticket-office", "--category", "streaming", "--team", "media", "--depends-on", "token-mgr,ticket-office"],
        r"--depends-on ticket-office: 'ticket-office' depends on itself",
    ),
    "deployment order": (
        [
            "ticket-office",
            "--category",
            "streaming",
            "--team",
            "media",
            "--stage",
            "core",
            "--depends-on",
            "billing-service",
        ],
        r"--depends-on billing-service: hard dependency on 'billing-service' \(stage 'platform'\) from stage 'core': "
        r"'billing-service' is deployed later",
    ),
    "unknown stage": (
        ["ticket-office", "--category", "streaming", "--team", "media", "--stage", "later"],
        r"--stage: unknown stage 'later'",
    ),
    "bad name": (
        ["Ticket_Office", "--category", "streaming", "--team", "media"],
        r"NAME Ticket_Office: name 'Ticket_Office' is not a DNS-1035 label.*e\.g\. 'ticket-office'",
    ),
    "leading digit": (
        ["3d-render", "--category", "streaming", "--team", "media"],
        r"NAME 3d-render: name '3d-render' is not a DNS-1035 label \(a Kubernetes Service name starts with a "
        r"letter\).*e\.g\. 'svc-3d-render'",
    ),
    "standard-library package": (
        ["json", "--category", "streaming", "--team", "media"],
        r"NAME json: service 'json' becomes the Python package 'json', but 'json' is a module of Python's standard "
        r"library",
    ),
    "generated object": (
        ["default-deny", "--category", "streaming", "--team", "media"],
        r"NAME default-deny: service 'default-deny' would be written as NetworkPolicy 'default-deny'",
    ),
    "infrastructure port": (
        ["ticket-office", "--category", "streaming", "--team", "media", "--port", "5432"],
        r"--port: port 5432 is already used by infrastructure 'postgres'",
    ),
    "bad edge kind": (
        ["ticket-office", "--category", "streaming", "--team", "media", "--depends-on", "token-mgr:sometimes"],
        r"--depends-on token-mgr: 'sometimes' is not allowed here; expected 'hard' or 'soft'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal_exits_1_with_one_clear_message_and_changes_nothing(shipped: Path, case: str) -> None:
    args, expected = REFUSALS[case]
    before = tree(shipped, RUN_STATE)
    result = nexus("new", *args, "--catalog", str(shipped / "catalog.yaml"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"error:\ncannot add '{args[0]}'; catalog.yaml and generated/ are unchanged:\n")
    assert re.search(expected, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 3  # the header and exactly one reason
    assert "Traceback" not in result.stderr
    assert tree(shipped, RUN_STATE) == before


@pytest.mark.parametrize(
    ("args", "argument", "byte"),
    [
        ([b"ticket-office", b"--description", b"caf\xe9 in Latin-1"], "--description", "0xe9"),
        ([b"ticket-office", b"--team", b"m\xe9dia"], "--team", "0xe9"),
        ([b"ticket-office", b"--depends-on", b"token-mgr:s\xf6ft"], "--depends-on", "0xf6"),
        ([b"ticket-\xff"], "NAME", "0xff"),
    ],
    ids=["description", "team", "depends-on", "name"],
)
def test_an_argument_that_is_not_utf8_is_refused_by_name(
    shipped: Path, args: list[bytes], argument: str, byte: str
) -> None:
    """A byte of the command line that is not UTF-8 (a terminal in Latin-1): the argument is
    named, not a YAML error at a line of the entry the person never wrote, nor a traceback."""
    before = tree(shipped, RUN_STATE)
    command = [sys.executable, "-m", "cli", "new", *args, b"--category", b"streaming"]
    command += [] if b"--team" in args else [b"--team", b"media"]
    result = subprocess.run(
        [*command, b"--catalog", bytes(shipped / "catalog.yaml")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    stderr = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 1, stderr
    assert f"  {argument}: byte {byte} is not UTF-8; pass it as UTF-8 text" in stderr, stderr
    assert "YAML" not in stderr and "Traceback" not in stderr
    assert tree(shipped, RUN_STATE) == before


@pytest.mark.parametrize(
    "name", ["3d-render", "import", "test", "nexus-runtime", "allow-nothing", "postgres-ingress", "readme", "0x1f"]
)
def test_new_refuses_a_name_with_validate_s_own_message(minimal: dict, name: str) -> None:
    # the same catalog written by hand: validate's message, word for word, names the argument
    by_hand = copy.deepcopy(minimal)
    by_hand["services"][name] = {
        "port": 4010,
        "category": "platform",
        "team": "core",
        "description": DEFAULT_DESCRIPTION,
    }
    with pytest.raises(CatalogError) as validated:
        load_catalog_text(dump(by_hand))
    with pytest.raises(RefusedError) as refused:
        candidate(dump(minimal), NewService(name, "platform", "core", port=4010))
    assert refused.value.reasons == [f"NAME {name}: {p.message}" for p in validated.value.problems]


def test_a_name_yaml_would_retype_is_added_quoted(minimal: dict) -> None:
    # `on` is a valid service name; written plain it would be the key true, which validate refuses
    cand = candidate(dump(minimal), NewService("on", "platform", "core"))
    assert "\n  'on':\n" in cand.text and "on" in cand.loaded.catalog.services


def test_an_invalid_catalog_is_named_before_anything_is_added(tmp_path: Path, minimal: dict) -> None:
    minimal["services"]["media"]["team"] = "nobody"
    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    before = tree(tmp_path, RUN_STATE)
    result = nexus(
        "new", "extra", "--category", "platform", "--team", "core", "--catalog", str(tmp_path / "catalog.yaml")
    )
    assert result.returncode == 1
    assert "does not validate as it is; fix it first" in result.stderr
    assert "services.media.team: unknown team 'nobody'" in result.stderr
    assert tree(tmp_path, RUN_STATE) == before


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        # the schema pass fails: the graph's problems are named in the same refusal
        (("port", "not-a-port"), "services.media.port"),
        # only the graph pass fails, and the entry added does not mend it
        (("depends_on", {"auth": "hard", "ghost": "hard"}), "services.media.depends_on.ghost"),
    ],
)
def test_the_catalog_as_it_is_is_blamed_for_its_own_faults(minimal: dict, fault: tuple, reason: str) -> None:
    key, value = fault
    minimal["services"]["media"][key] = value
    with pytest.raises(RefusedError) as refused:
        candidate(dump(minimal), NewService("extra", "platform", "core"))
    first, *problems = refused.value.reasons
    assert "does not validate as it is; fix it first" in first
    assert any(reason in p for p in problems), problems


def test_a_reference_to_the_service_being_added_is_completed_and_the_catalog_read_once(
    minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog as it is goes through the schema pass alone; the graph pass runs once, on
    the candidate, which the entry added makes whole (a service already naming it as a
    dependency). Read once: the source handed in is not read again."""
    import importlib

    from nexus.catalog.load import load_text

    validate_module = importlib.import_module("nexus.catalog.validate")  # the package exports its function

    minimal["services"]["media"]["depends_on"] = {"auth": "hard", "extra": "soft"}
    text = dump(minimal)
    with pytest.raises(CatalogError):
        load_catalog_text(text)  # invalid as it is: media names a service not yet there
    graphs: list[object] = []
    real = validate_module.check_graph
    monkeypatch.setattr(validate_module, "check_graph", lambda *a, **k: graphs.append(a) or real(*a, **k))
    source = load_text(text)
    monkeypatch.setattr("nexus.authoring.new.load_text", lambda *a, **k: pytest.fail("read again"))
    added = candidate(text, NewService("extra", "platform", "core"), source=source)
    assert len(graphs) == 1  # the candidate's
    assert set(added.loaded.catalog.services["media"].depends_on) == {"auth", "extra"}
    assert "extra" in load_catalog_text(added.text).catalog.services


def test_a_hand_edited_generated_file_stops_new_and_the_catalog_is_put_back(tmp_path: Path, minimal: dict) -> None:
    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    assert nexus("generate", "--catalog", str(tmp_path / "catalog.yaml")).returncode == 0
    main = tmp_path / "generated/services/auth/auth/main.py"
    main.write_text(main.read_text() + "# a local fix\n")
    before = tree(tmp_path, RUN_STATE)
    result = nexus(
        "new", "extra", "--category", "platform", "--team", "core", "--catalog", str(tmp_path / "catalog.yaml")
    )
    assert result.returncode == 1
    assert "edited by hand" in result.stderr and "services/auth/auth/main.py" in result.stderr
    assert tree(tmp_path, RUN_STATE) == before


@pytest.mark.skipif(not can_mount(), reason="needs root and mount to make a small tmpfs")
def test_a_full_disk_is_one_message_and_changes_nothing(tmp_path: Path, minimal: dict) -> None:
    """A real full disk (a small tmpfs filled to its last byte): the catalog cannot be written;
    one message naming the cause and the fix, exit 1, everything as it was, no temporary file."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        catalog = disk / "catalog.yaml"
        catalog.write_text(dump(minimal))
        assert nexus("generate", "--catalog", str(catalog)).returncode == 0
        fill(disk)
        before = tree(disk, RUN_STATE)
        result = nexus("new", "extra", "--category", "platform", "--team", "core", "--catalog", str(catalog))
        assert result.returncode == 1, result.stdout
        assert "cannot add 'extra'; catalog.yaml and generated/ are unchanged" in result.stderr
        assert "No space left on device; the disk is full: free some space" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert tree(disk, RUN_STATE) == before
        assert [p.name for p in disk.iterdir() if p.name.endswith(".nexus-new")] == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_what_a_new_killed_while_writing_the_catalog_left_is_removed_by_the_next(tmp_path: Path, minimal: dict) -> None:
    """`nexus new` killed between writing the catalog's temporary file and renaming it leaves
    that file beside the catalog (where `git status` shows it); the next `nexus new` removes it
    once it is stale, and never a fresh one (another run's) or a file of the user's."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(dump(minimal))
    code = "import sys; from pathlib import Path; from nexus.authoring import new\n"
    code += "new.replace_file(Path(sys.argv[1]), sys.stdin.buffer.read())"
    killed_at_rename(code, str(catalog), stdin=catalog.read_bytes() + b"# half\n")
    (left,) = [p for p in tmp_path.iterdir() if p != catalog]
    assert left.name.startswith(".catalog.yaml.") and left.name.endswith(".nexus-new")
    fresh = tmp_path / ".catalog.yaml.another-run.nexus-new"
    fresh.write_bytes(b"being written")
    users = tmp_path / ".catalog.yaml.notes"
    users.write_bytes(b"the user's own")
    age_past_stale(left, users)
    result = nexus("new", "extra", "--category", "platform", "--team", "core", "--catalog", str(catalog))
    assert result.returncode == 0, result.stderr
    assert not left.exists() and fresh.exists() and users.exists()
    assert "extra:" in catalog.read_text()


def test_a_catalog_that_cannot_be_put_back_is_said_with_the_refusal(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """generate refuses (a hand-edited file) and the catalog cannot be put back (fault injection:
    a file system that turned read-only meanwhile): one message says both, and what the catalog
    holds now."""
    from nexus.authoring import new as new_module
    from nexus.authoring.new import add_service
    from nexus.pipeline import generate

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(dump(minimal))
    generate(catalog)
    spec = tmp_path / "generated/services/auth/auth/spec.py"
    spec.write_text(spec.read_text() + "# by hand\n")
    real = new_module.replace_file
    calls: list[Path] = []

    def second_fails(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real(path, data)

    monkeypatch.setattr(new_module, "replace_file", second_fails)
    with pytest.raises(NexusError) as raised:
        add_service(catalog, NewService("extra", "platform", "core"))
    message = str(raised.value)
    assert message.startswith("these generated files were edited by hand")
    assert f"{catalog} could not be put back as it was (Read-only file system; the file system is read-only)" in message
    assert "it holds the entry for 'extra'" in message
    assert "extra:" in catalog.read_text()


def test_a_catalog_that_is_a_symbolic_link_is_written_through_it(tmp_path: Path, minimal: dict) -> None:
    """A catalog.yaml that links to the file it names: the service goes into that file, the
    link stays a link, and generated/ is beside the file, where `generate` writes it."""
    shared = tmp_path / "shared" / "catalog.yaml"
    shared.parent.mkdir()
    shared.write_text(dump(minimal))
    project = tmp_path / "project"
    project.mkdir()
    (project / "catalog.yaml").symlink_to("../shared/catalog.yaml")
    result = nexus("new", "extra", "--category", "platform", "--team", "core", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / "catalog.yaml").is_symlink()
    assert "extra" in load_catalog(shared).catalog.services
    assert (shared.parent / "generated/services/extra").is_dir() and not (project / "generated").exists()
    assert nexus("generate", "--check", cwd=project).returncode == 0


# -- success, end to end in a fresh clone --------------------------------------------------------


@pytest.mark.xdist_group("shipped-ports")  # runs the shipped catalog on its own ports: one at a time
def test_new_then_validate_and_generate_check_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    for path in (
        "catalog.yaml",
        "generated",
        "generator",
        "templates",
        "cli.py",
    ):  # this checkout's state, committed or not
        src, dst = ROOT / path, clone / path
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    env = {**os.environ, "PYTHONPATH": str(clone)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=120
        )

    old = (clone / "catalog.yaml").read_text()
    added = run(
        "new",
        "ticket-office",
        "--category",
        "streaming",
        "--team",
        "media",
        "--depends-on",
        "token-mgr,billing-service:soft",
        "--description",
        "Ticket sales: live shows, seats & refunds",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(
        "added ticket-office to catalog.yaml: port 3075, category streaming, team media, stage business"
    )
    assert "created generated/services/ticket-office/" in added.stdout
    assert "  ticket_office/routes.py" in added.stdout
    # the last line too: the command ends without the interpreter's teardown (cli._end_now), its output flushed
    assert added.stdout.endswith("then run it: nexus up --only ticket-office\n")

    # a pure text insertion: the old file is the new one with a block of lines taken out
    before, after = old.splitlines(keepends=True), (clone / "catalog.yaml").read_text().splitlines(keepends=True)
    head = next(i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b)
    tail = len(after) - (len(before) - head)
    assert after[:head] + after[tail:] == before
    assert [line.rstrip("\n") for line in after[head:tail]] == [
        "  ticket-office:",
        "    port: 3075",
        "    category: streaming",
        "    team: media",
        "    description: 'Ticket sales: live shows, seats & refunds'",
        "    depends_on:",
        "      token-mgr: hard",
        "      billing-service: soft",
    ]
    assert run("validate").returncode == 0
    check = run("generate", "--check")
    assert check.returncode == 0, check.stderr

    # the new service is real: its generated tests start its app
    generated = clone / "generated"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            "services/ticket-office",
        ],
        cwd=generated,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(generated / "runtime"), str(generated / "services/ticket-office")]),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    # and it runs on this machine with what it needs (token-mgr and its own hard dependencies)
    try:
        up = run("up", "--only", "ticket-office", "--detach")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        status = run("status", "--json")
        running = {s["name"]: s for s in json.loads(status.stdout)["services"]}
        assert {"ticket-office", "token-mgr", "key-service", "pv-keys"} <= set(running)
        assert running["ticket-office"]["ready"] == "ok"
    finally:
        run("down")


# -- questions, when arguments are missing -------------------------------------------------------


def test_missing_arguments_are_asked_for(tmp_path: Path, minimal: dict) -> None:
    from nexus import cli

    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    answers = "tickets\nnope\nplatform\ncore\n\nauth\nSells tickets\n\n"
    result = CliRunner().invoke(cli.app, ["new", "--catalog", str(tmp_path / "catalog.yaml")], input=answers)
    assert result.exit_code == 0, result.output
    assert "Category (platform)" in result.output
    assert "'nope' is not one of: platform" in result.output
    assert "Port [4003]" in result.output
    assert "added tickets to" in result.output
    svc = load_catalog(tmp_path / "catalog.yaml").catalog.services["tickets"]
    assert (svc.port, svc.team, svc.description, svc.stage) == (4003, "core", "Sells tickets", None)
    assert svc.depends_on["auth"].kind == "hard"


def test_a_name_that_cannot_be_a_new_service_is_asked_again_at_once(tmp_path: Path, minimal: dict) -> None:
    """Before, a name such as 'Bad Name' was taken, the six other questions asked, and the whole
    refused at the end; now it is said at once, in `nexus validate`'s words, and asked again,
    as a name already in the catalog (a service's, a server's) is."""
    from nexus import cli

    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    answers = "Bad Name\nauth\npostgres\ntickets\nplatform\ncore\n\n\n\n\n"
    result = CliRunner().invoke(cli.app, ["new", "--catalog", str(tmp_path / "catalog.yaml")], input=answers)
    assert result.exit_code == 0, result.output
    assert result.output.count("Service name") == 4 and result.output.count("Category (platform)") == 1
    assert "name 'Bad Name' is not a DNS-1035 label" in result.output and "e.g. 'bad-name'" in result.output
    assert "'auth' is already a name in the catalog" in result.output
    assert "'postgres' is already a name in the catalog" in result.output
    assert "tickets" in load_catalog(tmp_path / "catalog.yaml").catalog.services


def test_no_answers_is_a_clear_error_and_changes_nothing(tmp_path: Path, minimal: dict) -> None:
    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    before = tree(tmp_path, RUN_STATE)
    result = nexus("new", "--catalog", str(tmp_path / "catalog.yaml"), input="")
    assert result.returncode == 1
    assert "error: stopped before all answers were given; nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree(tmp_path, RUN_STATE) == before


def test_questions_in_a_real_terminal(tmp_path: Path, minimal: dict) -> None:
    """`nexus new` with no arguments on a pseudo-terminal: prompts, answers, a new service."""
    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real CLI, its terminal the pty
        os.chdir(tmp_path)
        os.environ["PYTHONPATH"] = str(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "cli", "new"])
    seen = b""

    def until(text: bytes) -> None:
        nonlocal seen
        while text not in seen:
            ready, _, _ = select.select([fd], [], [], 60)
            assert ready, f"no {text!r} from the terminal; it shows {seen[-300:]!r}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"the terminal closed before {text!r}; it showed {seen[-500:]!r}"
            seen += chunk

    for prompt, answer in [
        (b"Service name", b"box-office"),
        (b"Category", b"platform"),
        (b"Team", b"core"),
        (b"Port [4003]", b"4010"),
        (b"Depends on", b"auth,media:soft"),
        (b"Description", b"Box office"),
        (b"Deployment stage", b""),
    ]:
        until(prompt)
        os.write(fd, answer + b"\n")
    until(b"nexus up --only box-office")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    svc = load_catalog(tmp_path / "catalog.yaml").catalog.services["box-office"]
    assert svc.port == 4010 and {d: e.kind for d, e in svc.depends_on.items()} == {"auth": "hard", "media": "soft"}
    assert (tmp_path / "generated/services/box-office/box_office/routes.py").exists()


# -- the pieces ----------------------------------------------------------------------------------


def test_ports_come_from_the_category_block_then_above_the_category(minimal: dict) -> None:
    minimal["categories"]["platform"]["ports"] = {"from": 4000, "to": 4003}
    cat = load_catalog_text(dump(minimal)).catalog
    assert next_port(cat, "platform") == 4003
    minimal["categories"]["platform"]["ports"] = {"from": 4000, "to": 4002}
    assert next_port(load_catalog_text(dump(minimal)).catalog, "platform") is None
    del minimal["categories"]["platform"]["ports"]
    minimal["services"]["media"]["port"] = 4005
    assert next_port(load_catalog_text(dump(minimal)).catalog, "platform") == 4006
    minimal["categories"]["tools"] = {"title": "Tools", "summary": "Tools:"}
    assert next_port(load_catalog_text(dump(minimal)).catalog, "tools") == 4006  # empty: above the catalog's highest


def test_shipped_blocks_hand_out_the_expected_ports() -> None:
    cat = load_catalog(CATALOG).catalog
    assert {c: next_port(cat, c) for c in sorted(cat.categories)} == {
        "ai": 3035,
        "core": 3006,
        "e-commerce": 3044,
        "financial": 3052,
        "logistics": 3063,
        "platform": 3024,
        "puabo-dsp": 3016,
        "streaming": 3075,
        "supporting": 3084,
    }


def test_a_full_block_is_a_refusal(minimal: dict) -> None:
    minimal["categories"]["platform"]["ports"] = {"from": 4000, "to": 4002}
    with pytest.raises(
        RefusedError, match=r"--category platform: its block 4000\.\.4002 is full; widen categories\.platform\.ports"
    ):
        candidate(dump(minimal), NewService("extra", "platform", "core"))


def test_overlapping_blocks_and_reversed_blocks_are_catalog_errors(minimal: dict) -> None:
    minimal["categories"]["platform"]["ports"] = {"from": 4000, "to": 4009}
    minimal["categories"]["tools"] = {"title": "Tools", "summary": "Tools:", "ports": {"from": 4005, "to": 4020}}
    with pytest.raises(
        CatalogError,
        match=r"categories\.tools\.ports: ports 4005\.\.4020 overlap categories\.platform\.ports \(4000\.\.4009\)",
    ):
        load_catalog_text(dump(minimal))
    minimal["categories"]["tools"]["ports"] = {"from": 4020, "to": 4010}
    with pytest.raises(CatalogError, match=r"categories\.tools\.ports: from \(4020\) is above to \(4010\)"):
        load_catalog_text(dump(minimal))
    minimal["categories"]["tools"]["ports"] = {"from": 4020, "upto": 4030}
    with pytest.raises(CatalogError, match=r"unknown key 'upto'; did you mean 'to'\? allowed here: from, to"):
        load_catalog_text(dump(minimal))


def test_a_new_that_waited_for_the_folder_adds_to_the_catalog_as_it_is_then(tmp_path: Path, minimal: dict) -> None:
    """A `nexus new` waits for the output folder's lock (a `nexus generate` holds it), and adds its
    entry to the catalog as it is once it holds it: here someone saved it meanwhile with another
    service added (the text a `nexus new` in another copy wrote). Before it read the catalog ahead
    of the lock, and dropped what was saved meanwhile."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(dump(minimal), encoding="utf-8")
    generate(catalog)
    other = tmp_path / "copy" / "catalog.yaml"
    other.parent.mkdir()
    other.write_bytes(catalog.read_bytes())
    add_service(other, NewService("kiosk", "platform", "core"))
    out = tmp_path / "generated"
    with write.locked(out):
        command = ["new", "tickets", "--category", "platform", "--team", "core", "--catalog", str(catalog)]
        waiting = subprocess.Popen(
            [sys.executable, "-m", "cli", *command],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert f"(pid {os.getpid()}) to finish with {out}" in line, line
        catalog.write_bytes(other.read_bytes())
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0 and "Traceback" not in err, err
    assert {"tickets", "kiosk"} <= set(load_catalog(catalog).catalog.services)
    generate(catalog, check_only=True)


def test_two_news_writing_to_different_folders_edit_the_catalog_one_at_a_time(tmp_path: Path, minimal: dict) -> None:
    """The library's `out` sends a `nexus new` elsewhere, whose lock does not exclude one writing
    generated/: both take the lock of the catalog's own folder first. Here the one writing
    generated/ runs in this process, which holds that lock, while the other waits for it."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(dump(minimal), encoding="utf-8")
    generate(catalog)
    elsewhere = tmp_path / "elsewhere"
    script = (
        "import sys\n"
        "from nexus.authoring.new import NewService, add_service\n"
        "said = lambda line: print(line, file=sys.stderr, flush=True)\n"
        f"add_service({str(catalog)!r}, NewService('tickets', 'platform', 'core'), {str(elsewhere)!r}, waiting=said)\n"
    )
    with write.locked(tmp_path / "generated"):
        waiting = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert f"(pid {os.getpid()}) to finish with {tmp_path / 'generated'}" in line, line
        add_service(catalog, NewService("kiosk", "platform", "core"))
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0 and "Traceback" not in err, err
    assert {"tickets", "kiosk"} <= set(load_catalog(catalog).catalog.services)
    generate(catalog, elsewhere, check_only=True)  # the second run rendered both
    assert (tmp_path / "generated" / "services" / "kiosk").is_dir()


@pytest.mark.parametrize(("out", "said"), [("/", "the file system's root"), (".", "holds the catalog")])
def test_an_output_folder_generate_refuses_is_refused_before_the_catalog_is_touched(
    tmp_path: Path, minimal: dict, out: str, said: str
) -> None:
    """The library's `out` (the CLI has none): the folder's own refusals come before its lock,
    which for the root could not even be named, and the catalog is as it was."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(dump(minimal), encoding="utf-8")
    before = tree(tmp_path)
    with pytest.raises(OutputError, match=said):
        add_service(catalog, NewService("kiosk", "platform", "core"), tmp_path if out == "." else out)
    assert tree(tmp_path) == before


def test_depends_on_shorthand() -> None:
    assert parse_depends_on(" a, b:soft ,c:hard,,") == {"a": "hard", "b": "soft", "c": "hard"}
    assert parse_depends_on(None) == {}


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "a, b: c",
        "yes",
        "123",
        "#x",
        "multi\nline",
        "x\u2028y",
        "tab\there",
        "\x85z",
        "é\x7f",
        "{{ x }}",
        "🚀",
        ' "q" \\ ',
    ],
)
def test_any_text_becomes_one_line_that_reads_back_exactly(value: str) -> None:
    text = scalar(value)
    assert "\n" not in text
    assert yaml.safe_load(f"k: {text}") == {"k": value}


def test_any_description_is_added_intact(minimal: dict) -> None:
    description = 'Tickets: "VIP" & {{ seats }} # not a comment\n2nd line 🚀'
    cand = candidate(dump(minimal), NewService("tickets", "platform", "core", description=description))
    assert cand.loaded.catalog.services["tickets"].description == description


def test_insertion_keeps_comments_crlf_indentation_and_a_missing_last_newline() -> None:
    head = (
        "version: 1\r\nservices:\r\n    a:   # first\r\n        port: 1\r\n    # trailing comment of "
        "services\r\n\r\n# about flows\r\nflows: {}"
    )
    lines = entry_lines(NewService("b", "c", "t"), 2, "    ", "    ")
    out = insert_entry(head, lines)
    assert out == head.replace(
        "    # trailing comment of services\r\n", "    # trailing comment of services\r\n" + "\r\n".join(lines) + "\r\n"
    )
    tail = "services:\n  a:\n    port: 1"  # services last, no final newline
    assert insert_entry(tail, ["  b:", "    port: 2"]) == "services:\n  a:\n    port: 1\n  b:\n    port: 2"


def test_a_flow_style_services_mapping_is_refused_plainly() -> None:
    with pytest.raises(NexusError, match="nexus new appends to an indented block mapping"):
        insert_entry("services: {a: {port: 1}}\n", ["  b:"])


def test_a_large_catalog_is_read_by_its_kept_parts_with_the_same_outcome(tmp_path: Path) -> None:
    """On a catalog past PARTS_FROM, `nexus new` reads both the catalog and the candidate by the
    parts its output folder's space keeps (the second reading parses the one entry added): the
    candidate, and a refusal's every reason, are those of reading them whole."""
    from conftest import synthetic

    from nexus import usercache
    from nexus.catalog import load as catalog_load

    text = synthetic(1500)
    assert len(text) >= catalog_load.PARTS_FROM
    space = usercache.name_of(tmp_path / "generated")
    wanted = NewService("bench-tickets", "logistics", "commerce", depends_on={"svc-00010": "hard"})
    whole = candidate(text, wanted)
    parsed: list[str] = []
    real = catalog_load.PARTS.function
    catalog_load.PARTS.function = lambda part: parsed.append(part) or real(part)
    try:
        load_catalog_text(text, space=space)  # as the last run read it: its parts are kept
        parsed.clear()
        kept = candidate(text, wanted, space=space)
        assert kept.text == whole.text and kept.port == whole.port
        assert kept.loaded.catalog == whole.loaded.catalog
        assert len(parsed) == 1 and "bench-tickets" in parsed[0]  # the entry added, nothing else
        clash = NewService("svc-00001", "logistics", "commerce", port=whole.port)
        with pytest.raises(RefusedError) as from_parts:
            candidate(text, clash, space=space)
        with pytest.raises(RefusedError) as read_whole:
            candidate(text, clash)
        assert from_parts.value.reasons == read_whole.value.reasons and len(from_parts.value.reasons) >= 1
    finally:
        catalog_load.PARTS.function = real


def test_generate_takes_the_candidate_new_validated_while_the_file_holds_its_bytes(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nexus new` hands generate the catalog it validated with the bytes it wrote: generate
    does not read and validate it a third time, and writes the service. Bytes the file no
    longer holds are not trusted: generate reads the file."""
    import nexus.catalog
    from nexus.authoring.new import add_service
    from nexus.pipeline import generate

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(dump(minimal))
    generate(catalog)
    loads: list[object] = []
    real = nexus.catalog.load_catalog
    monkeypatch.setattr(nexus.catalog, "load_catalog", lambda *a, **k: loads.append(a) or real(*a, **k))
    added = add_service(catalog, NewService("extra", "platform", "core"))
    assert loads == [] and (tmp_path / "generated/services/extra").is_dir()
    assert "services/extra/extra/main.py" in added.created
    held = catalog.read_bytes()
    stale = load_catalog_text(held.decode(), str(catalog))
    catalog.write_text(held.decode().replace("description: A new Nexus service", "description: Edited since"))
    result = generate(catalog, validated=(held, stale))  # bytes the file no longer holds
    assert len(loads) == 1 and result.loaded is not None
    assert result.loaded.catalog.services["extra"].description == "Edited since"
    generate(catalog, check_only=True)  # the tree is the catalog's
