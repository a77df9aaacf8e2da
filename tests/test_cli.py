"""The `nexus` command: exit codes, messages, and the broken-catalog corpus.

The corpus and anything about the process itself (exit status, crashes, time) runs the real
command in a subprocess, with a timeout: a hostile catalog must be refused in seconds, not hang
or crash. The many per-rule cases go through typer's CliRunner, which drives the same app and
error boundary in process, so the suite stays fast.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from broken import CASES, SCHEMA, Case, svc
from conftest import CATALOG, ROOT, dump, nexus
from typer.testing import CliRunner, Result

from nexus import cli

BAD = ROOT / "tests" / "data" / "bad"
QUICK = 5  # seconds: the "returns in under a few seconds"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = nexus(*args, cwd=cwd, timeout=QUICK)
    # a user error is a message, never a stack dump, on either stream
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli.app, list(args))
    # anything but a clean exit is a bug the boundary let through
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def refused(*args: str, cwd: Path | None = None) -> str:
    result = run(*args, cwd=cwd)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error:")
    return result.stderr


# -- the bad-input corpus -------------------------------------------------------------------------

CORPUS = [
    ("empty.yaml", None, r"the catalog is empty"),
    ("scalar.yaml", "1:1", r"the catalog is a single value"),
    ("list.yaml", "1:1", r"the catalog is a list"),
    ("non-utf8.yaml", "3:12", r"byte 0xe9 is not UTF-8; save the file as UTF-8"),
    ("tab.yaml", "3:1", r"a tab; YAML indents with spaces only"),
    ("unclosed-bracket.yaml", "4:9", r"the bracket opened at line 3, column 15 is not closed"),
    ("alias-bomb.yaml", r"\d+:\d+", r"a YAML alias bomb"),
    ("two-documents.yaml", "2:1", r"must be one YAML document"),
    ("bad-tag.yaml", "1:10", r"'one' is not a valid !!int"),
    (
        "duplicate-service.yaml",
        "6:3",
        r"services\.auth-service: duplicate key 'auth-service' \(first defined at line 2\)",
    ),
    ("empty-mapping.yaml", None, r"the catalog is empty"),
    (
        "key-hexadecimal.yaml",
        "4:3",
        r"services\.0x1f: key '0x1f' is read by YAML as the number 31, not as the text '0x1f'",
    ),
    ("key-octal.yaml", "2:3", r"services\.017: key '017' is read by YAML as the number 15"),
    ("key-on.yaml", "3:3", r"services\.on: key 'on' is read by YAML as true, not as the text 'on'"),
    ("merge-key.yaml", "6:5", r"services\.auth-service\.<<: merge keys \('<<'\) are not supported"),
    ("control-character.yaml", "3:14", r"character U\+001B \(a control character\) is not allowed in YAML; remove it$"),
]


def test_corpus_is_complete():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(name for name, _, _ in CORPUS)


@pytest.mark.parametrize(("name", "where", "message"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_file_is_refused_with_its_line(name, where, message):
    # run from the corpus folder so the message names the file as the user typed it
    stderr = refused("validate", "--catalog", name, cwd=BAD)
    prefix = rf"{re.escape(name)}:{where}: " if where else rf"{re.escape(name)}: "
    assert re.search(prefix + r".*" + message, stderr), stderr


def _nested(opener: str, depth: int) -> str:
    closer = {"[": "]", "{a: ": "}"}[opener]
    return "a: " + opener * depth + "1" + closer * depth + "\n"


@pytest.mark.parametrize(
    ("opener", "depth"),
    [("[", 5_000), ("[", 100_000), ("{a: ", 100_000)],
    ids=["lists-5k", "lists-100k", "mappings-100k"],
)
def test_deep_nesting_is_refused_without_crashing(tmp_path, opener, depth):
    # 100,000 levels is where libyaml's own composer segfaults (exit -11); ours refuses it
    path = tmp_path / "deep.yaml"
    path.write_text(_nested(opener, depth))
    stderr = refused("validate", "--catalog", "deep.yaml", cwd=tmp_path)
    assert re.search(r"deep\.yaml:1:\d+: .*nesting deeper than \d+ levels", stderr), stderr[:300]


def test_50_mb_file_is_refused_unparsed(tmp_path):
    path = tmp_path / "huge.yaml"
    line = b"  - " + b"x" * 95 + b"\n"
    with path.open("wb") as f:
        f.write(b"services:\n")
        for _ in range(50):
            f.write(line * 10_486)  # 1 MiB a round
    assert path.stat().st_size > 50 * 1024 * 1024
    stderr = refused("validate", "--catalog", "huge.yaml", cwd=tmp_path)
    assert re.search(r"huge\.yaml: the file is 5\d\.\d MB; a catalog is at most 16 MiB", stderr), stderr


# -- every validation rule, through the command ------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_rule_through_the_command(tmp_path, case: Case):
    text = case.text()
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    result = invoke("validate", "--catalog", str(path))
    assert result.exit_code == 1 and result.stdout == ""
    line = next(x for x in result.stderr.splitlines() if f": {case.path}: " in x)
    assert line.removeprefix("error: ").startswith(f"{case.where(text, file=str(path))}: {case.path}: ")
    assert re.search(case.message, line), line


def test_every_error_is_printed_in_one_run(tmp_path, minimal, monkeypatch):
    broken = [
        c for c in SCHEMA if c.id in {"port-below-1024", "unknown-key-platform", "contact-not-email", "edge-kind"}
    ]
    for case in broken:
        case.mutate(minimal)
    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    monkeypatch.chdir(tmp_path)
    result = invoke("validate")  # --catalog defaults to ./catalog.yaml
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error:"
    assert sorted(re.search(r"^catalog\.yaml:\d+:\d+: (\S+):", x).group(1) for x in lines[1:]) == sorted(
        c.path for c in broken
    )


# -- valid input ----------------------------------------------------------------------------------


def test_validate_accepts_the_shipped_catalog_by_default():
    result = run("validate", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"catalog\.yaml: ok: 43 services, \d+ edges, 5 stages, \d+ waves, 3 flows\n", result.stdout)


TRICKY = "Say \"{{ name }}\" and {% raw %}{{ x }}{% endraw %}: 'quoted' # not a comment \\ ünïcode"


def test_template_syntax_and_quotes_in_a_description_are_valid_and_kept(tmp_path, minimal):
    svc(minimal, "media")["description"] = TRICKY
    svc(minimal, "auth")["description"] = "key: value # hash {%"
    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    assert run("validate", cwd=tmp_path).returncode == 0
    result = run("graph", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    described = {s["name"]: s["description"] for s in json.loads(result.stdout)["services"]}
    assert described["media"] == TRICKY and described["auth"] == "key: value # hash {%"


def test_plain_yaml_spelling_of_tricky_text_is_valid(tmp_path, minimal):
    # as a person would write it by hand: single-quoted, a ': ' and ' #' inside
    text = dump(minimal).replace("description: Media", "description: '{{ a }}: {% b %} # c \"d\" ''e'''")
    (tmp_path / "catalog.yaml").write_text(text)
    result = run("graph", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    media = next(s for s in json.loads(result.stdout)["services"] if s["name"] == "media")
    assert media["description"] == "{{ a }}: {% b %} # c \"d\" 'e'"


# -- usage errors and help --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "--nope"], r"No such option: --nope"),
        (["frobnicate"], r"No such command 'frobnicate'"),
        (["graph", "--format", "png"], r"Invalid value for '--format'"),
        (["plan", "--catalog"], r"Option '--catalog' requires an argument"),
        (["validate", "--catalog", "."], r"Invalid value for '--catalog'.*directory"),
    ],
    ids=["unknown-option", "unknown-command", "bad-choice", "missing-value", "directory"],
)
def test_usage_errors_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert re.search(message, result.stderr, flags=re.DOTALL), result.stderr


def test_usage_error_exit_status_reaches_the_shell():
    result = run("validate", "--nope")
    assert result.returncode == 2 and "No such option" in result.stderr


FULL = Path("/dev/full")  # Linux's device that is always full: every write fails with ENOSPC


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [["plan"], ["graph", "--format", "json"], ["validate"], ["generate", "--check"], ["diff"], ["schema"]],
    ids=lambda args: args[0],
)
def test_output_on_a_full_disk_is_one_line_and_exit_1(args):
    """`nexus plan > plan.txt` on a full disk ended in a traceback of click's echo."""
    where = [] if args == ["schema"] else ["-c", str(CATALOG)]
    with FULL.open("w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args, *where],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=QUICK * 6,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: could not write this command's output (No space left on device)")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr


def test_missing_catalog_is_a_user_error(tmp_path):
    stderr = refused("validate", cwd=tmp_path)
    assert "catalog.yaml: no such file" in stderr


@pytest.mark.parametrize("command", ["validate", "plan", "graph"])
def test_each_command_explains_catalog_in_its_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "--catalog" in result.stdout and "catalog file" in result.stdout


def test_help_shows_a_type_for_options_that_take_a_value_and_none_for_flags():
    """Typer gave every flag the type `<bool>`, as if `--detach` took a value."""
    commands = [c.name or c.callback.__name__.replace("_", "-") for c in cli.app.registered_commands]
    helps = {"": invoke("--help")} | {name: invoke(name, "--help") for name in commands}
    for name, result in helps.items():
        assert result.exit_code == 0, (name, result.stderr)
        assert "<bool>" not in result.stdout, (name, result.stdout)
    assert len(helps) > 10 and re.search(r"--detach +-d +Return once", helps["up"].stdout)
    assert re.search(r"--timeout +<float> ", helps["up"].stdout)


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("generate", "are created once and never touched; a generated file edited by hand stops the run"),
        ("up", "Logs go to .nexus/run/<run>/logs/. Attached (the default)"),
        ("diff", "(CI: origin/<base branch>)"),
    ],
)
def test_help_reflows_each_paragraph_to_the_terminal_and_keeps_angle_brackets(command, said):
    """The docstrings' line breaks are not the terminal's: at 80 columns a paragraph came out
    ragged (lines of 80, then 10 characters); a placeholder in angle brackets is kept."""
    result = CliRunner().invoke(cli.app, [command, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert any(said in line for line in result.stdout.splitlines()), result.stdout  # on one line, at 200


def test_plan_prints_the_waves_for_people():
    result = invoke("plan", "--catalog", str(CATALOG))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [int(re.match(r"wave +(\d+) ", x).group(1)) for x in lines] == list(range(1, len(lines) + 1))
    assert lines[0].split(None, 3)[2] == "Infrastructure"


@pytest.mark.parametrize(
    ("command", "option", "refused", "said"),
    [
        (["verify"], "--timeout", ["0", "-1", "nan", "inf"], "above 0"),
        (["up", "--detach"], "--timeout", ["0", "-1", "nan", "inf"], "above 0"),
        (["deploy", "--overlay", "dev"], "--timeout-per-wave", ["-1", "nan", "inf"], "0 or above"),  # 0: do not wait
    ],
)
def test_a_time_limit_that_is_not_a_number_of_seconds_is_a_usage_error(
    tmp_path: Path, command: list[str], option: str, refused: list[str], said: str
) -> None:
    """nan passed every range check and reached asyncio's deadline as a traceback."""
    for value in refused:
        result = run(*command, f"{option}={value}", "-c", str(tmp_path / "catalog.yaml"))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        flat = " ".join(line.strip("│ ") for line in result.stderr.splitlines())  # rich wraps the panel
        assert f"Invalid value for '{option}': {float(value)} is not a number of seconds {said}" in flat, flat


def test_a_named_pipe_is_read_whole_when_written_to_and_never_waited_on_for_ever(tmp_path: Path) -> None:
    """`--catalog <(...)` (a pipe with a writer) is read whole; a named pipe nothing writes to
    made open() wait for ever (validate, generate and new hung); nexus new never edits a pipe."""
    fifo = tmp_path / "catalog.yaml"
    os.mkfifo(fifo)
    for command in (["validate"], ["generate"], ["new", "kiosk", "--category", "platform", "--team", "core"]):
        result = run(*command, "-c", str(fifo))  # QUICK: a hang fails the test
        assert result.returncode == 1, result.stdout
        said = (
            "is not a regular file; nexus new edits the catalog file itself"
            if "new" in command
            else (f"error: {fifo}: is a named pipe that nothing wrote to")
        )
        assert said in result.stderr, result.stderr

    def write() -> None:
        with open(fifo, "w", encoding="utf-8") as f:  # waits for the reader, as a shell's <(...) does
            f.write(CATALOG.read_text(encoding="utf-8"))

    writer = threading.Thread(target=write)
    writer.start()
    result = run("validate", "-c", str(fifo))
    writer.join()
    assert result.returncode == 0 and "ok: 43 services" in result.stdout, result.stderr


def test_dash_reads_the_catalog_from_standard_input_where_no_folder_is_needed(tmp_path: Path) -> None:
    """`-c -` is standard input: validate, plan and graph read it, its problems placed in it; a
    command that keeps generated/ or .nexus/ beside the catalog says a pipe has no folder, and
    nothing is written; generate --out writes the same tree as from the file. Before, `-` was
    'no such file', and a pipe through /dev/stdin got 'cannot lock /proc/<pid>/fd/generated'."""
    text = CATALOG.read_text(encoding="utf-8")
    ok = nexus("validate", "-c", "-", input=text, cwd=tmp_path, timeout=QUICK)
    assert ok.returncode == 0 and ok.stdout.startswith("/dev/stdin: ok: 43 services"), ok.stderr
    assert json.loads(nexus("plan", "--json", "-c", "-", input=text, cwd=tmp_path).stdout)
    line = text.splitlines().index("    port: 3001") + 1  # auth-service's
    bad = nexus("validate", "-c", "-", input=text.replace("port: 3001", "port: three", 1), cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout
    assert bad.stderr.startswith(f"error: /dev/stdin:{line}:11: services.auth-service.port: "), bad.stderr
    commands = (["generate"], ["generate", "--check"], ["up", "--detach"], ["status"], ["down"], ["verify"], ["diff"])
    for command in commands:
        result = nexus(*command, "-c", "-", input=text, cwd=tmp_path, timeout=30)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert result.stderr.startswith("error: /dev/stdin: is a pipe with no folder"), (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == []  # nothing made where the command ran
    out = tmp_path / "elsewhere" / "generated"
    written = nexus("generate", "-c", "-", "--out", str(out), input=text, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    (tmp_path / "elsewhere" / "catalog.yaml").write_text(text, encoding="utf-8")
    same = nexus("generate", "--check", "-c", str(tmp_path / "elsewhere" / "catalog.yaml"))
    assert same.returncode == 0, same.stdout + same.stderr
