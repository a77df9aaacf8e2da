"""Run by cookiecutter after rendering: a service that uses no PostgreSQL gets no migrations
folder (nexus generate applies the same rule: local_extensions.uses_postgres)."""

import json
import shutil

if "postgres" not in {r["engine"] for r in json.loads("{{ cookiecutter.resources|tojson }}").values()}:
    shutil.rmtree("migrations")
