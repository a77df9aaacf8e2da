"""The Python Nexus generates is held to Nexus's own rules: its lint and format rules
(templates/lint/ruff.toml, which Nexus's pyproject.toml extends and `nexus generate` copies to
generated/ruff.toml) and mypy's strict mode. ruff and mypy themselves judge the committed tree,
trees of hostile names and texts, and the lines whose layout depends on the catalog
(nexus.render.pycode lays them out as `ruff format` does)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import MINIMAL, ROOT, dump, nexus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.catalog import messages
from nexus.paths import LINT_RULES
from nexus.render.pycode import line_length, py_call, py_imports, py_str, py_text_arg, py_tuple

RUFF = [sys.executable, "-m", "ruff"]


def _ruff(folder: Path) -> str:
    """What ruff says of the Python under ``folder`` (lint, then format), with the ruff.toml
    found there as a team running it in its service's folder finds it; empty when all is clean."""
    check = subprocess.run(
        [*RUFF, "check", "--no-cache", "--output-format", "concise", "."], cwd=folder, capture_output=True, text=True
    )
    form = subprocess.run([*RUFF, "format", "--check", "--no-cache", "."], cwd=folder, capture_output=True, text=True)
    said = "" if check.returncode == 0 else check.stdout + check.stderr
    return said + ("" if form.returncode == 0 else form.stdout + form.stderr)


def _mypy(tree: Path, scratch: Path) -> str:
    """What mypy says of every service package under ``tree`` (a generated/ folder), run with
    Nexus's own settings for its code (pyproject.toml's strict mode and pydantic plugin);
    empty when it finds nothing."""
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    config = scratch / "mypy.ini"
    config.write_text(
        f"[mypy]\nstrict = {ours['strict']}\nplugins = {', '.join(ours['plugins'])}\nexplicit_package_bases = True\n",
        encoding="utf-8",
    )
    services = sorted(p for p in (tree / "services").iterdir() if p.is_dir())
    packages = [arg for s in services for arg in ("-p", s.name.replace("-", "_"))]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", os.devnull, *packages],
        cwd=tree,
        env={**os.environ, "MYPYPATH": os.pathsep.join([str(tree / "runtime"), *map(str, services)])},
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else done.stdout + done.stderr


def _formatted(source: str) -> str:
    """``source`` as `ruff format` writes it, under the generated code's rules."""
    done = subprocess.run(
        [*RUFF, "format", "--config", str(LINT_RULES), "--stdin-filename", "generated.py", "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_committed_tree_is_ruff_clean_and_formatted_by_its_own_ruff_toml() -> None:
    generated = ROOT / "generated"
    assert (generated / "ruff.toml").read_text(encoding="utf-8").endswith(LINT_RULES.read_text(encoding="utf-8"))
    assert tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["extend"] == (
        LINT_RULES.relative_to(ROOT).as_posix()
    )
    assert _ruff(generated) == ""


def test_every_committed_service_package_passes_mypy_strict_as_nexus_does(tmp_path: Path) -> None:
    assert _mypy(ROOT / "generated", tmp_path) == ""


LONG = "a" * 62 + "z"  # the longest service name a catalog takes (a DNS-1035 label)
MEDIA = "m" * 62 + "z"


def _hostile(description: str) -> dict:
    """The minimal catalog with every name as long as a name can be (services, a database,
    event channels and a message's field), and ``description``."""
    text = dump(MINIMAL)
    for name, long in (("auth", LONG), ("media", MEDIA), ("postgres", "p" * 62 + "z")):
        text = re.sub(rf"\b{name}\b", long, text)
    data = yaml.safe_load(text)
    data["services"][LONG]["description"] = description
    data["infrastructure"]["nats"] = {"kind": "message-queue", "description": "NATS", "port": 4222}
    data["stages"][0]["infrastructure"].append("nats")
    for service in (LONG, MEDIA, "gateway"):
        data["services"][service].setdefault("uses", []).append("nats")
    message = {"version": 12, "fields": {"f" * 63: "list[string]", "at": "datetime"}}
    data["events"] = {
        "c" * 62 + "z": {"kind": "pubsub", "description": description, "message": message, "publishers": [LONG]},
        "d" * 62 + "z": {"kind": "queue", "description": "D", "message": message, "publishers": [LONG, MEDIA]},
        "e" * 62 + "z": {"kind": "stream", "description": "E", "message": message, "publishers": [LONG]},
    }
    for channel in data["events"].values():
        channel["subscribers"] = [MEDIA, "gateway"] if channel["kind"] == "pubsub" else [LONG]
    return data


def _generate_into(folder: Path, data: dict) -> Path:
    """The tree `nexus generate --strict` writes for ``data`` beside its catalog in ``folder``:
    every check it runs before writing passes on it, however long the names."""
    (folder / "catalog.yaml").write_text(dump(data), encoding="utf-8")
    done = nexus("generate", "--strict", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "generated"


def test_the_longest_names_and_a_long_description_give_ruff_clean_code(tmp_path: Path) -> None:
    """Every name 63 characters long (services, a flow's next hop, a database, channels) and a
    description of many lines' length: lines ruff would split are split as it splits them, none
    too long, imports wrapped as its import sorting wraps them."""
    words = 'It said "stop" at the gate, then the night\'s 漢字 jobs ran; ' * 8
    tree = _generate_into(tmp_path, _hostile(words.strip()))
    spec = (tree / "services" / LONG / LONG / "spec.py").read_text(encoding="utf-8")
    media = (tree / "services" / MEDIA / MEDIA / "spec.py").read_text(encoding="utf-8")
    # the shapes this test is about
    assert "description=(\n" in spec and "Resource(\n" in spec and "Dependency(\n" in media
    settings_py = (tree / "services" / "gateway" / "gateway" / "settings.py").read_text(encoding="utf-8")
    assert "AnyHttpUrl(\n" in settings_py
    events = (tree / "services" / LONG / LONG / "events.py").read_text(encoding="utf-8")
    assert "from .messages import (\n" in events and "publishes=(\n" in events and " = Publication(\n" in events
    assert _ruff(tree) == ""
    assert max(len(line) for line in spec.splitlines()) <= line_length()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert _mypy(tree, scratch) == ""


pieces = st.one_of(
    st.sampled_from(["'", '"', " ", "  ", "\\", "\n", "\t", "é", "漢", "🚀", "e\u0301", "\u200b", "x" * 40, "{", "#"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
)
texts = st.lists(pieces, min_size=1, max_size=40).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, indent=st.sampled_from([4, 8]))
def test_a_text_argument_is_laid_out_as_ruff_lays_it_out_and_reads_back_exactly(text: str, indent: int) -> None:
    line = py_text_arg(text, "description", indent)
    source = f"f(\n{line}\n)\n" if indent == 4 else f"def g():\n    f(\n{line}\n    )\n"
    assert _formatted(source) == source
    call = ast.parse(source).body[0]
    call = call.body[0] if isinstance(call, ast.FunctionDef) else call
    assert ast.literal_eval(call.value.keywords[0].value) == text  # type: ignore[attr-defined]


names = st.from_regex(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


def _call(name: str) -> tuple[str, list[str]]:
    return ("Dependency", [py_str(name), py_str("hard"), "setting=" + py_str(name.replace("-", "_") + "_url")])


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.one_of(names.map(_call), names.map(lambda n: n.replace("-", "_").upper())), max_size=3))
def test_a_tuple_of_calls_or_names_is_laid_out_as_ruff_lays_it_out(items: list) -> None:
    source = "SPEC = ServiceSpec(\n" + py_tuple(items, "dependencies", 4) + "\n)\n"
    assert _formatted(source) == source


channels = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda c: "--" not in c)


@settings(max_examples=200, deadline=None)
@given(consumed=st.lists(st.tuples(channels, st.integers(1, 12)), min_size=1, max_size=5, unique_by=lambda c: c[0]))
def test_imports_are_sorted_and_wrapped_as_ruff_sorts_and_wraps_them(consumed: list[tuple[str, int]]) -> None:
    """A service's events.py imports one model per channel and one handler module per consumed
    channel; the names come from the channels (``ZV1`` reads as a constant to isort, ``AbV1`` as a
    class, ``on_a1`` sorts before ``on_a_b``)."""
    models = [messages.model_class(channel, version) for channel, version in consumed]
    handlers = [f"on_{messages.snake(channel)}" for channel, _ in consumed]
    source = py_imports([(".messages", models), *((f".handlers.{h}", [f"handle as {h}"]) for h in handlers)]) + "\n"
    checked = subprocess.run(
        [*RUFF, "check", "--config", str(LINT_RULES), "--select", "I", "--stdin-filename", "generated.py", "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout
    assert _formatted(source) == source


@settings(max_examples=100, deadline=None)
@given(name=names, port=st.integers(1024, 65535))
def test_a_long_assignment_is_split_as_ruff_splits_it(name: str, port: int) -> None:
    field = py_call([py_str(f"http://{name}:{port}")], name.replace("-", "_") + "_url: AnyHttpUrl = AnyHttpUrl", 4)
    source = f"class Settings:\n{field}\n"
    assert _formatted(source) == source


@pytest.mark.parametrize(
    ("text", "literal"),
    [("plain", '"plain"'), ('say "hi"', "'say \"hi\"'"), ('it\'s "x"', "'it\\'s \"x\"'"), ("a'b\"", '"a\'b\\""')],
)
def test_a_string_is_quoted_as_ruff_quotes_it(text: str, literal: str) -> None:
    assert py_str(text) == literal
    assert ast.literal_eval(literal) == text
    assert _formatted(f"x = {literal}\n") == f"x = {literal}\n"
