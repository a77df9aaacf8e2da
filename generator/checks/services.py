"""Checks of the rendered service code: every dependency URL in a service's settings names the
right service and port, and every catalog dependency has one (read back from settings.py)."""

from __future__ import annotations

import re

from ..catalog.naming import pkg
from ..render.context import RenderContext

_URL = re.compile(r'^    (\w+)_url: AnyHttpUrl = AnyHttpUrl\("http://([a-z0-9-]+):(\d+)"\)', re.M)


def run(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    """Every dependency URL in a service's settings names the right service and port, and
    every catalog dependency has one."""
    failures: list[str] = []
    cat = ctx.catalog
    for name, svc in sorted(cat.services.items()):
        path = f"services/{name}/{pkg(name)}/settings.py"
        text = files.get(path)
        if text is None:
            failures.append(f"{name}: {path} was not rendered")
            continue
        found = {host: (field, int(port)) for field, host, port in _URL.findall(text)}
        for dep in svc.depends_on:
            want = (pkg(dep), cat.services[dep].port)
            if found.get(dep) != want:
                failures.append(
                    f"{name}: {path}: dependency URL for {dep} is {found.get(dep)}, expected field {want[0]}_url -> http://{dep}:{want[1]}"
                )
        for extra in sorted(set(found) - set(svc.depends_on)):
            failures.append(f"{name}: {path}: URL setting for {extra}, which is not a dependency in the catalog")
    return failures
