"""Run a service's Alembic migrations (its team-owned ``migrations/`` folder) up to head.

Before the service starts: `nexus up` runs it once for every service using PostgreSQL, and in
Kubernetes it is the Deployment's init container::

    python -m nexus_runtime.migrate /srv/service/migrations   # the URL from POSTGRES_URL

The URL is handed to Alembic as a value, never written to an ini file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from .resources import sqlalchemy_url, with_password
from .settings import secrets_dir


def upgrade(migrations: Path, url: str) -> None:
    """Apply every migration in ``migrations`` not yet applied to the database at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["url"] = sqlalchemy_url(url)
    command.upgrade(config, "head")


def main(argv: list[str]) -> int:
    """``migrate FOLDER`` (URL from $POSTGRES_URL, or the variable --url-from names), or
    ``migrate --many``: a JSON object {folder: url} on stdin (what `nexus up` sends: no URL in argv)."""
    if argv[:1] == ["--many"]:
        for folder, url in sorted(json.load(sys.stdin).items()):
            upgrade(Path(folder), url)
            print(f"migrated {folder}", flush=True)
        return 0
    if not argv or argv[0].startswith("-"):
        print("usage: python -m nexus_runtime.migrate FOLDER [--url-from VARIABLE] | --many", file=sys.stderr)
        return 2
    variable = argv[2] if argv[1:2] == ["--url-from"] and len(argv) > 2 else "POSTGRES_URL"
    url = os.environ.get(variable)
    if not url:
        print(f"migrate: {variable} is not set; it holds the database URL", file=sys.stderr)
        return 2
    # In Kubernetes the password is a file beside the service's other settings (settings.secrets_dir):
    # POSTGRES_URL's is postgres_password.
    folder = secrets_dir()
    password = Path(folder, variable.lower().removesuffix("_url") + "_password") if folder else None
    if password is not None and password.is_file():
        url = with_password(url, password.read_text(encoding="utf-8").strip())
    upgrade(Path(argv[0]), url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
