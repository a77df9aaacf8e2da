"""Checks of the files other tools read (Backstage descriptors, CODEOWNERS), read back from
the rendered text rather than trusted."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from ..catalog import naming
from ..render.context import RenderContext
from ..render.ecosystem import (
    CODEOWNERS,
    DOCS_ANNOTATION,
    OUT_DIR,
    ROOT_INFO,
    handle,
    service_info_path,
)
from ..yamlread import split
from .documents import get, items, load_yaml, mapping
from .passes import NONE, Passes


def reads(path: str) -> bool:
    """Whether this check reads the file's YAML documents (through yamlread.PARSED)."""
    return path == ROOT_INFO or (path.startswith("services/") and path.endswith("/catalog-info.yaml"))


def _load_all(text: str) -> list[Any]:
    """The file's documents, each read once across runs (yamlread.PARSED: a Component per
    service made this check a tenth of an edit's run at 10,000 services)."""
    return [d for d in (load_yaml(chunk) for chunk in split(text)) if d is not None]


def run(ctx: RenderContext, files: dict[str, str], passes: Passes = NONE) -> list[str]:
    """Each Component names its team as owner and exactly the catalog's dependencies; every
    reference resolves to an entity rendered here; CODEOWNERS gives each service folder to
    its team's handle, one line each. With ``passes``, a service whose descriptor, catalog
    entry and the entities and pages it may name are those of a pass is not read again."""
    cat = ctx.catalog
    failures: list[str] = []
    entities: set[str] = set()
    try:
        for doc in _load_all(files.get(ROOT_INFO, "")):
            entities.add(f"{doc['kind'].lower()}:{doc['metadata']['name']}")
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        failures.append(f"{ROOT_INFO}: not a list of Backstage entities: {exc}".replace("\n", " "))
    docs_rendered = any(p.startswith(f"{naming.SERVICE_DOCS}/") for p in files)
    # What a passing descriptor's references may resolve to, in every pass's key: the root's
    # entities (its owner's group, its System, the resources it uses), and its own docs page
    # (the one its annotation may name). The components it depends on are the catalog's (in the
    # key), each checked on its own: a service added or removed elsewhere changes no other
    # service's key (at 10,000 services every descriptor was read again, 0.5 s of a service added).
    roots = hashlib.blake2b("\0".join(sorted(entities)).encode(), digest_size=16).hexdigest()
    components: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    for name, svc in sorted(cat.services.items()):
        path = service_info_path(name)
        if path not in files:
            failures.append(f"{name}: {path} was not rendered")
            continue
        page = naming.service_page(name)
        keys[name] = key = passes.key(
            "ecosystem",
            name,
            [path],
            f"{svc.team}\0{sorted(svc.depends_on)}\0{sorted(svc.uses)}\0{roots}\0{docs_rendered}\0{page in files}",
        )
        if key in passes:  # its descriptor parsed, and passed what follows, with these very inputs
            entities.add(f"component:{name}")
            continue
        try:
            (doc,) = _load_all(files[path])
        except (ValueError, yaml.YAMLError) as exc:
            failures.append(f"{name}: {path}: not one YAML document: {exc}".replace("\n", " "))
            continue
        doc = mapping(doc)
        components[name] = doc
        entities.add(f"component:{name}")
        spec = mapping(doc.get("spec"))
        own: list[str] = []
        if doc.get("kind") != "Component" or get(doc, "metadata", "name") != name:
            own.append(f"{name}: {path}: not the Component '{name}'")
        if spec.get("owner") != f"group:{svc.team}":
            own.append(f"{name}: {path}: owner is {spec.get('owner')!r}, the catalog says team {svc.team}")
        want = {f"component:{d}" for d in svc.depends_on} | {f"resource:{u}" for u in svc.uses}
        depends = [str(d) for d in items(spec.get("dependsOn"))]
        if set(depends) != want:
            own.append(f"{name}: {path}: dependsOn {sorted(depends)} differs from the catalog's {sorted(want)}")
        docs = str(get(doc, "metadata", "annotations", DOCS_ANNOTATION) or "")
        if docs_rendered and docs != f"{OUT_DIR}/{page}":
            own.append(f"{name}: {path}: docs annotation points at {docs}, not at its own page {OUT_DIR}/{page}")
        elif docs_rendered and page not in files:
            own.append(f"{name}: {path}: docs annotation points at {docs}, which is not generated")
        if own:
            failures += own
            del keys[name]  # never kept: checked again next run
    for name, doc in components.items():
        spec = mapping(doc.get("spec"))
        refs = [str(spec.get("owner")), f"system:{spec.get('system')}", *map(str, items(spec.get("dependsOn")))]
        broken = [
            f"{name}: {service_info_path(name)}: reference {ref} names no rendered entity"
            for ref in refs
            if ref not in entities
        ]
        failures += broken
        if not broken and name in keys:
            passes.add(keys[name])

    rules: dict[str, list[str]] = {}
    for number, line in enumerate(files.get(CODEOWNERS, "").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            pattern, *owners = line.split()
            if any(o.startswith("#") for o in owners):
                failures.append(f"{CODEOWNERS}:{number}: a comment after the owners; GitHub reads no comment there")
            rules.setdefault(pattern, []).extend(owners)
    for name, svc in sorted(cat.services.items()):
        pattern = f"/{OUT_DIR}/services/{name}/"
        if rules.get(pattern) != [handle(cat, svc.team)]:
            failures.append(
                f"{name}: {CODEOWNERS}: {pattern} is owned by {rules.get(pattern)}, expected "
                f"[{handle(cat, svc.team)}] (team {svc.team})"
            )
    return failures
