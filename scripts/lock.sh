#!/usr/bin/env bash
# Writes the locks from the ranges: lock/nexus.txt from pyproject.toml (Nexus with its dev extra,
# which holds every other extra) and lock/tools.txt from lock/tools.in. Plain requirements files
# that the pip every Python ships installs (README: `pip install -c lock/nexus.txt ...`); uv
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
# What a service's image installs (the runtime, its dependencies) and its tests add (the service
# template's `test` extra), at the versions of lock/nexus.txt, which Nexus's CI runs the runtime
# with: the Dockerfile installs with `-c runtime/constraints.txt`, so an image built next year
# gets what was tested, not the newest release of each.
python3 -c '
import re
text = open("templates/service/{{cookiecutter.name}}/pyproject.toml").read()
print("\n".join(r.strip(" \"") for r in re.search(r"^test = \[(.*)\]$", text, re.M).group(1).split(",")))
' | "${compile[@]}" templates/runtime/pyproject.toml - -c lock/nexus.txt -o templates/runtime/constraints.txt

# Each pin of lock/nexus.txt is for the Pythons Nexus supports only. On an older Python pip then
# skips the pins, reaches Nexus's own requires-python first (README installs `-e .` before
# `-e '.[dev]'` for that) and says so in one line, instead of a conflict about some pin that has
# no release for that Python.
python3 - lock/nexus.txt <<'EOF'
import re
import sys
import tomllib

path = sys.argv[1]
supported = tomllib.load(open("pyproject.toml", "rb"))["project"]["requires-python"]  # ">=3.11"
marker = f"python_version {supported[:2]} '{supported[2:]}'"
pin = re.compile(r"^([A-Za-z0-9._-]+==[^\s;]+)(?: ; (.+))?$", re.M)
text = open(path).read()
with open(path, "w") as out:
    out.write(pin.sub(lambda m: f"{m[1]} ; {marker}" + (f" and ({m[2]})" if m[2] else ""), text))
EOF
