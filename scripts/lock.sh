#!/usr/bin/env bash
# Writes the locks from the ranges: lock/nexus.txt from pyproject.toml (Nexus with its dev extra,
# which holds every other extra) and lock/tools.txt from lock/tools.in. Plain requirements files
# that the pip every Python ships installs (`pip install -c lock/nexus.txt -e '.[dev]'`); uv
# writes them because it resolves one lock for every platform and Python >= 3.11 (--universal),
# where pip-tools resolves for the machine it runs on only, and in seconds, not minutes.
#   bash scripts/lock.sh                 after changing a range: keeps every pin that still fits
#   bash scripts/lock.sh --upgrade       the newest releases (after `bash .ci/run --latest` passed)
#   bash scripts/lock.sh -P NAME         one package to its newest release
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh  # uv is one of the tools
compile=(.tools/bin/uv pip compile --quiet --universal --python-version 3.11 --custom-compile-command "bash scripts/lock.sh" "$@")
"${compile[@]}" pyproject.toml --extra dev -o lock/nexus.txt
"${compile[@]}" lock/tools.in -o lock/tools.txt
