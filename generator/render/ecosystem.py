"""Render area: files other tools read. A Backstage `catalog-info.yaml` per service (a Component
owned by its team, depending on what the catalog says), one root `catalog-info.yaml` with the
System, the teams as Groups and the infrastructure as Resources (so every reference resolves),
and a `CODEOWNERS` derived from the teams.

Everything is built as data and dumped with PyYAML (no template): any catalog text comes out
as valid YAML, and the checks below read the files back rather than trusting the renderer.

Where CODEOWNERS lives: GitHub reads it only from `.github/`, the repository root or `docs/`,
never from `generated/`. It is rendered here, like every derived file, so that it is checked
and guarded against drift; its patterns are written relative to the repository root, so the
file works verbatim once copied to `.github/CODEOWNERS` (docs/ci.md says how to keep the copy
current). We do not ship that copy: the default handles (@<platform>/<team>) must exist as
GitHub teams first, or GitHub marks every line as an error.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..catalog.models import Catalog
from .context import GENERATED_HEADER, RenderContext

API_VERSION = "backstage.io/v1alpha1"
DOCS_ANNOTATION = "nexus.example.com/docs-path"  # the domain of the catalog's own schema $id
CODEOWNERS = "CODEOWNERS"
ROOT_INFO = "catalog-info.yaml"
OUT_DIR = "generated"  # where `nexus generate` writes, relative to the repository root


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml, as FAST_LOADER


def handle(cat: Catalog, team: str) -> str:
    """The team's GitHub handle: its own `handle`, else @<platform name>/<team name>."""
    return cat.teams[team].handle or f"@{cat.platform.name}/{team}"


def platform_owner(cat: Catalog) -> str:
    """Who owns what belongs to no one service (the catalog, the System, the infrastructure):
    the team that runs the gateway, the platform's front door."""
    return cat.services[cat.platform.gateway].team


def service_info_path(name: str) -> str:
    return f"services/{name}/catalog-info.yaml"


def _dump(*documents: dict[str, Any]) -> str:
    body = yaml.dump_all(documents, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100, explicit_start=len(documents) > 1)
    return f"# {GENERATED_HEADER}\n{body}"


def component(cat: Catalog, name: str) -> dict[str, Any]:
    svc = cat.services[name]
    return {
        "apiVersion": API_VERSION,
        "kind": "Component",
        "metadata": {
            "name": name,
            "description": svc.description,
            "annotations": {DOCS_ANNOTATION: f"{OUT_DIR}/docs/services/{name}.md"},
            "tags": [svc.category],
        },
        "spec": {
            "type": "service",
            "lifecycle": "production",
            "owner": f"group:{svc.team}",
            "system": cat.platform.name,
            "dependsOn": [f"component:{dep}" for dep in sorted(svc.depends_on)] + [f"resource:{comp}" for comp in sorted(svc.uses)],
        },
    }


def root_documents(cat: Catalog) -> list[dict[str, Any]]:
    owner = f"group:{platform_owner(cat)}"
    location = {
        "apiVersion": API_VERSION,
        "kind": "Location",
        "metadata": {"name": cat.platform.name, "description": f"Every {cat.platform.name} entity rendered by nexus; register this one file."},
        "spec": {"targets": [f"./{service_info_path(n)}" for n in sorted(cat.services)]},
    }
    system = {
        "apiVersion": API_VERSION,
        "kind": "System",
        "metadata": {"name": cat.platform.name, "description": f"The {cat.platform.name} platform: {len(cat.services)} services from catalog.yaml."},
        "spec": {"owner": owner},
    }
    groups = []
    for name, team in sorted(cat.teams.items()):
        slug = handle(cat, name).lstrip("@")
        metadata: dict[str, Any] = {"name": name}
        if "/" in slug:  # an organisation's team, not a single user
            metadata["annotations"] = {"github.com/team-slug": slug}
        groups.append({"apiVersion": API_VERSION, "kind": "Group", "metadata": metadata, "spec": {"type": "team", "profile": {"displayName": team.title, "email": team.contact}, "children": []}})
    resources = [
        {
            "apiVersion": API_VERSION,
            "kind": "Resource",
            "metadata": {"name": name, "description": comp.description},
            "spec": {"type": comp.kind, "owner": owner, "system": cat.platform.name},
        }
        for name, comp in sorted(cat.infrastructure.items())
    ]
    return [location, system, *groups, *resources]


def codeowners(cat: Catalog) -> str:
    lines = [
        f"# {GENERATED_HEADER}",
        "# GitHub reads CODEOWNERS only from .github/, the repository root or docs/: copy this file to",
        "# .github/CODEOWNERS. Patterns are relative to the repository root; the last match wins.",
        "# A comment must be a line of its own (GitHub does not allow one after the owners).",
        "",
        "# The catalog and everything generated belong to the team that runs the gateway...",
        f"/catalog.yaml {handle(cat, platform_owner(cat))}",
        f"/{OUT_DIR}/ {handle(cat, platform_owner(cat))}",
        "",
        "# ...and each service's folder to its team.",
    ]
    lines += [f"/{OUT_DIR}/services/{name}/ {handle(cat, svc.team)}" for name, svc in sorted(cat.services.items())]
    return "\n".join(lines) + "\n"


def render(ctx: RenderContext) -> dict[str, str]:
    cat = ctx.catalog
    out = {service_info_path(name): _dump(component(cat, name)) for name in sorted(cat.services)}
    out[ROOT_INFO] = _dump(*root_documents(cat))
    out[CODEOWNERS] = codeowners(cat)
    return out
