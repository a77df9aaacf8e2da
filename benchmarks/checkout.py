"""A benchmark measures the Nexus of the checkout it is run from, or refuses to run.

The import package `nexus` is the folder generator/ (pyproject.toml's package-dir), so a
checkout on sys.path or PYTHONPATH holds no `nexus` Python can find there: `import nexus`, and
`python -m nexus` in the processes a benchmark starts, give the installed one, which may be
another checkout's editable install or a release. Its figures would then be printed as this
tree's (a fresh clone benchmarked with the first checkout's virtual environment measures the
first checkout).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_from() -> Path | None:
    """The folder `import nexus` loads the package from; None when there is none."""
    spec = importlib.util.find_spec("nexus")
    return Path(spec.origin).resolve().parent if spec is not None and spec.origin else None


def require(root: Path = ROOT) -> None:
    """Exit with what to do unless `import nexus` gives ``root``'s generator/."""
    found = imported_from()
    if found != root / "generator":
        raise SystemExit(
            f"this benchmark measures the checkout it is in ({root}), but `import nexus` gives "
            f"{found or 'no Nexus'}: install this checkout first (pip install -e {root})"
        )
