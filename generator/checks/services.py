"""Checks of the rendered service code: every dependency URL in a service's settings names the
right service and port, and every catalog dependency has one (read back from settings.py)."""

from __future__ import annotations

import re

from ..catalog.naming import pkg
from ..render.context import RenderContext
from .passes import NONE, Passes

# One line, or the URL on a line of its own where a long name makes ruff split it (pycode.py_call)
_URL = re.compile(r'^    (\w+)_url: AnyHttpUrl = AnyHttpUrl\(\s*"http://([a-z0-9-]+):(\d+)",?\s*\)', re.M)


def run(ctx: RenderContext, files: dict[str, str], passes: Passes = NONE) -> list[str]:
    """Every dependency URL in a service's settings names the right service and port, and
    every catalog dependency has one. With ``passes``, a service whose settings and
    dependencies' ports passed before is not read again."""
    failures: list[str] = []
    cat = ctx.catalog
    for name, svc in sorted(cat.services.items()):
        path = f"services/{name}/{pkg(name)}/settings.py"
        if path not in files:
            failures.append(f"{name}: {path} was not rendered")
            continue
        want = {dep: (pkg(dep), cat.services[dep].port) for dep in svc.depends_on}
        key = passes.key("services", name, [path], repr(sorted(want.items())))
        if key in passes:
            continue
        found = {host: (field, int(port)) for field, host, port in _URL.findall(files[path])}
        own = [
            f"{name}: {path}: dependency URL for {dep} is {found.get(dep)}, expected field {field}_url -> http://{dep}:{port}"
            for dep, (field, port) in want.items()
            if found.get(dep) != (field, port)
        ]
        own += [
            f"{name}: {path}: URL setting for {extra}, which is not a dependency in the catalog"
            for extra in sorted(set(found) - set(svc.depends_on))
        ]
        if not own:
            passes.add(key)
        failures += own
    return failures
