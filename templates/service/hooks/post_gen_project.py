"""Run by cookiecutter after rendering: a service that uses no PostgreSQL gets no migrations
folder (nexus generate applies the same rule: local_extensions.uses_postgres)."""

import json
import shutil

# a raw single-quoted literal (kept by ruff format's skip): tojson writes double quotes as they are
# and a single quote as \u0027

if "postgres" not in {r["engine"] for r in json.loads(r'{{ cookiecutter.resources|tojson }}').values()}:  # fmt: skip
    shutil.rmtree("migrations")
