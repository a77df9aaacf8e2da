"""The generated services are real: they start, answer their health endpoints, and carry any
catalog text intact into every kind of file."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CATALOG, MINIMAL, ROOT, dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from running import free_ports, status_code, until

from nexus.catalog import load_catalog, load_catalog_text
from nexus.checks import parses
from nexus.render import RenderContext, render

GENERATED = ROOT / "generated"


def test_every_generated_service_passes_its_own_tests() -> None:
    """Each service's generated tests start its real app (TestClient) and hit the four
    health endpoints; all 43 suites run in one pytest session."""
    services = sorted(p for p in (GENERATED / "services").iterdir() if p.is_dir())
    assert len(services) == 43
    path = os.pathsep.join([str(GENERATED / "runtime"), *map(str, services)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "-W",
            "ignore::DeprecationWarning",
            "services",
        ],
        cwd=GENERATED,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    assert passed == 4 * len(services)  # 3 health tests + the team's example test, per service


def _pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` line of a requirements or constraints file."""
    found = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", text, re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}  # PEP 503's names


def test_the_image_constraints_are_the_versions_nexus_is_tested_with() -> None:
    """runtime/constraints.txt (scripts/lock.sh) pins what a service's image installs at the
    versions of lock/nexus.txt: one fact, read from the lock. It holds only what the runtime and
    the services' tests pull in (naming.RUNTIME_DISTRIBUTIONS)."""
    from nexus.catalog import naming

    pins = _pins((GENERATED / "runtime" / "constraints.txt").read_text(encoding="utf-8"))
    lock = _pins((ROOT / "lock" / "nexus.txt").read_text(encoding="utf-8"))
    assert {"fastapi", "uvicorn", "httptools", "pydantic", "sqlalchemy", "pytest"} <= set(pins)
    assert {name: (v, lock.get(name)) for name, v in pins.items() if lock.get(name) != v} == {}
    assert set(pins) - set(naming.RUNTIME_DISTRIBUTIONS) == set()


def test_a_service_installs_as_its_dockerfile_installs_it_and_serves(tmp_path: Path) -> None:
    """The Dockerfile's own RUN line, in a fresh virtual environment over copies of what it
    COPYs: before, it installed the newest release of every dependency on the day an image was
    built, not what CI had run (a uvicorn that renamed what serve.BoundedHead extends would
    have broken images that CI never saw). Every installed version is the constraints' one,
    and the installed service serves."""
    service = GENERATED / "services" / "token-mgr"
    srv = tmp_path / "srv"
    shutil.copytree(GENERATED / "runtime", srv / "runtime")
    shutil.copytree(service, srv / "service")
    dockerfile = (service / "Dockerfile").read_text(encoding="utf-8")
    (run,) = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]
    args = shlex.split(run.removeprefix("RUN ").replace("/srv/", f"{srv}/"))
    assert args[:2] == ["pip", "install"] and "-c" in args, args
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-m", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    frozen = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    installed = {k: v for k, v in _pins(frozen).items() if k not in ("nexus-runtime", "token-mgr")}
    pins = _pins((srv / "runtime" / "constraints.txt").read_text(encoding="utf-8"))
    assert installed and {k: (v, pins.get(k)) for k, v in installed.items() if pins.get(k) != v} == {}
    (port,) = free_ports(1)
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "SHUTDOWN_DRAIN_SECONDS": "0"}
    proc = subprocess.Popen([python, "-m", "token_mgr"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        until(lambda: status_code(f"http://127.0.0.1:{port}/health") == 200, what="the installed token-mgr")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# prints, for every service package on the path, each setting's default as its README writes it
DEFAULTS_SCRIPT = """
import importlib, json, sys
out = {}
for package in sys.argv[1:]:
    fields = importlib.import_module(package + ".settings").Settings.model_fields
    out[package] = {
        # a URL reads back with the path '/' pydantic gives it
        name.upper(): str(f.default).lower() if isinstance(f.default, bool) else str(f.default).removesuffix("/")
        for name, f in fields.items()
        if f.default is not None and not f.is_required()
    }
print(json.dumps(out))
"""
README_SETTING = re.compile(r"^\| `([A-Z0-9_]+)` \| `([^`]*)`", re.M)


def test_each_service_readme_gives_its_settings_defaults_as_its_settings_class_has_them() -> None:
    """A service's README lists its settings and their defaults (the template writes them
    out: it cannot import the runtime); each one listed is read from the service's own
    Settings class, in a process of its own, and must be the same value."""
    services = sorted(p for p in (GENERATED / "services").iterdir() if p.is_dir())
    packages = [s.name.replace("-", "_") for s in services]
    result = subprocess.run(
        [sys.executable, "-c", DEFAULTS_SCRIPT, *packages],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(GENERATED / "runtime"), *map(str, services)])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    defaults = json.loads(result.stdout)
    compared = 0
    for service, package in zip(services, packages, strict=True):
        listed = dict(README_SETTING.findall((service / "README.md").read_text(encoding="utf-8")))
        known = {name: value for name, value in listed.items() if name in defaults[package]}
        assert known == {name: defaults[package][name] for name in known}, service.name
        compared += len(known)
    assert compared >= 10 * len(services)  # the platform's settings and each dependency's URL


# (environment, the one line the start stops with): each setting a service's own Settings gives
# a default of its own (port, retries, request timeout) keeps the runtime's rule for it
BAD_SETTINGS = [
    ({"RETRIES": "99"}, "auth-service: setting RETRIES: Input should be less than or equal to 5"),
    ({"PORT": "0"}, "auth-service: setting PORT: Input should be greater than or equal to 1"),
    (
        {"REQUEST_TIMEOUT_SECONDS": "-1"},
        "auth-service: setting REQUEST_TIMEOUT_SECONDS: Input should be greater than 0",
    ),
    (
        {"REQUEST_TIMEOUT_SECONDS": "inf"},
        "auth-service: setting REQUEST_TIMEOUT_SECONDS: Input should be a finite number",
    ),
    ({"RETRY_BACKOFF_SECONDS": "nan"}, "auth-service: setting RETRY_BACKOFF_SECONDS: Input should be a finite number"),
    (
        {"EVENT_BACKOFF_SECONDS": "[1, -1]"},
        "auth-service: setting EVENT_BACKOFF_SECONDS[1]: Input should be greater than or equal to 0",
    ),
    ({"EVENT_BACKOFF_SECONDS": "[1"}, 'auth-service: error parsing value for field "event_backoff_seconds"'),
    ({"LOG_LEVEL": "LOUD", "BROKER_PASSWORD": "[s3cret"}, "auth-service: setting LOG_LEVEL: Input should be 'DEBUG'"),
]


@pytest.mark.parametrize(("env", "said"), BAD_SETTINGS, ids=[",".join(e) for e, _ in BAD_SETTINGS])
def test_a_bad_setting_stops_the_start_with_one_line_naming_it(env: dict[str, str], said: str) -> None:
    """`python -m <service>` as its image runs it: exit 1, one line per bad setting, no traceback,
    and never the value itself (it may be a password). Before, the service's own ``retries: int``
    dropped the runtime's rule (RETRIES=99 ran), PORT=0 listened on a port the kernel chose, a
    timeout of inf or -1 was taken, and a bad value printed pydantic's traceback."""
    service = GENERATED / "services" / "auth-service"
    result = subprocess.run(
        [sys.executable, "-m", "auth_service"],
        cwd=service,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(GENERATED / "runtime"), str(service)]), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(said) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_critical_path_services_expose_their_flow_and_next_hop() -> None:
    loaded = load_catalog(CATALOG)
    for name, flow in loaded.catalog.flows.items():
        names = flow.names()
        for i, hop in enumerate(flow.hops):
            if not isinstance(hop, str):
                continue
            spec = (GENERATED / f"services/{hop}/{hop.replace('-', '_')}/spec.py").read_text()
            nxt = names[i + 1] if i + 1 < len(names) else None
            expected = f'"{name}": FlowHop(next="{nxt}"' if nxt else f'"{name}": FlowHop()'
            assert expected in spec, (hop, name)


def _description_of(spec_py: str) -> str:
    for node in ast.walk(ast.parse(spec_py)):
        if isinstance(node, ast.keyword) and node.arg == "description":
            return ast.literal_eval(node.value)
    raise AssertionError("no description in spec.py")


# Any printable text, with the characters that break naive templating over-represented.
pieces = st.one_of(
    st.sampled_from(
        ["{{", "}}", "{%", "%}", "{#", "'", '"', ": ", "#", "\n", "|", "\\", "`", "é", "漢", "🚀", "---", "- "]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=5),
)
nasty = st.lists(pieces, min_size=1, max_size=12).map("".join).filter(lambda s: s.strip() != "")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(description=nasty)
def test_any_description_comes_out_intact_and_every_file_parses(description: str) -> None:
    minimal = copy.deepcopy(MINIMAL)
    minimal["services"]["auth"]["description"] = description
    loaded = load_catalog_text(dump(minimal))
    assert loaded.catalog.services["auth"].description == description
    files = render(RenderContext(loaded.catalog, loaded.plan))
    assert parses(files) == []
    assert _description_of(files["services/auth/auth/spec.py"]) == description
    readme = files["services/auth/README.md"]
    quoted = "\n".join(
        line[2:] if line.startswith("> ") else line[1:] for line in readme.splitlines() if line.startswith(">")
    )
    assert quoted == "\n".join(line.rstrip() for line in description.splitlines())


def test_files_parsed_on_every_core_fail_as_they_fail_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """parses() over many files (parallel.ordered_map: forked workers) names the same broken
    files, in the same order, as parsing them one after the other, and remembers exactly the
    ones that passed."""
    from nexus import checks, parallel
    from nexus.checks.kubernetes_schema import SchemaValidator

    loaded = load_catalog(CATALOG)
    files = render(RenderContext(loaded.catalog, loaded.plan))
    broken = {
        "services/auth/auth/spec.py": "def (:\n",
        "docs/broken.json": "{not json",
        "services/media/catalog-info.yaml": "a: [unclosed\n",
    }
    files = {**files, **broken}
    serial = checks.parses(files, validator=(one := SchemaValidator()))
    monkeypatch.setattr(checks, "PARALLEL_FROM", 10)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 3)
    assert checks.parses(files, validator=(other := SchemaValidator())) == serial
    assert [f.split(":")[0] for f in serial] == sorted(broken, key=list(files).index)
    assert one.seen == other.seen and len(one.seen) > 500
