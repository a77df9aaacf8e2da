"""Every generated service keeps the contract its OpenAPI document states, as schemathesis judges
it: all its checks (status codes, media types, response schemas, headers, negative and positive
data, unsupported methods...) over every operation of all 43 services of the shipped catalog,
served by `nexus up` on loopback (the embedded host runs them all in one process).

The run is deterministic (a fixed seed, schemathesis's deterministic generation) and bounded
(MAX_EXAMPLES per operation in the fuzzing phase; the coverage phase adds its own boundary and
negative cases), so it takes tens of seconds, the same every time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import schemathesis
import yaml
from conftest import CATALOG
from running import platform, write_platform
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

MAX_EXAMPLES = 5
SEED = 20261127
# the settings of a run, in schemathesis.toml's own terms; every check is enabled by default
CONFIG = {"seed": SEED, "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True}}


@dataclass
class Outcome:
    operations: int = 0
    checks: int = 0
    failures: list[str] = field(default_factory=list)


def check(base_url: str) -> Outcome:
    """Run schemathesis's engine (what `schemathesis run` runs) against one service."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG))
    outcome = Outcome(operations=sum(len(methods) for methods in schema.raw_schema["paths"].values()))
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for nodes in event.recorder.checks.values():
                outcome.checks += len(nodes)
                failed = [n for n in nodes if n.status == Status.FAILURE]
                outcome.failures += [
                    f"{event.label}: {n.name}: {n.failure_info.failure.title if n.failure_info else ''}" for n in failed
                ]
        elif isinstance(event, events.FatalError | events.NonFatalError):
            outcome.failures.append(f"{type(event).__name__}: {getattr(event, 'info', event)}")
    return outcome


@pytest.mark.slow
def test_every_generated_service_keeps_its_openapi_contract(tmp_path, capsys) -> None:
    catalog = write_platform(tmp_path / "nexus", yaml.safe_load(CATALOG.read_text(encoding="utf-8")))
    with platform(catalog) as ports:
        began = time.monotonic()
        outcomes = {name: check(f"http://127.0.0.1:{port}") for name, port in sorted(ports.items())}
        seconds = time.monotonic() - began
    operations = sum(o.operations for o in outcomes.values())
    checks = sum(o.checks for o in outcomes.values())
    failures = sorted(
        {f"{name}: {f}" for name, o in outcomes.items() for f in o.failures}
    )  # a failure found in two phases, once
    with capsys.disabled():
        print(
            f"\nschemathesis: {len(outcomes)} services, {operations} operations, {checks} checks, {len(failures)} "
            f"failures, {seconds:.1f} s"
        )
    assert len(outcomes) == 43
    assert all(
        o.operations >= 5 and o.checks > 0 for o in outcomes.values()
    )  # the four health endpoints and the team's route, at least
    assert failures == [], "\n".join(failures[:40])
