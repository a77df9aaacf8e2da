"""The project's own set-up: README's two commands are the ones CI runs."""

from __future__ import annotations

import re

from conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < text.index("\n## "), "README.md must start with its commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_install_and_the_test_command() -> None:
    install, tests = _readme_commands()
    assert install.startswith("pip install -e '.[dev]'") and install.endswith("nexus generate")
    assert "pytest" in tests


def test_ci_runs_exactly_the_readme_commands_plus_the_drift_check() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace(" -q -e ", " -e ")  # CI installs quietly
    install, tests = _readme_commands()
    assert install.split(" && ")[0] in ci  # the install half; CI checks drift instead of writing
    assert tests in ci
    assert "nexus generate --check" in ci
