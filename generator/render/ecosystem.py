"""Render area: files other tools read. A Backstage `catalog-info.yaml` per service (a Component
owned by its team, depending on what the catalog says), one root `catalog-info.yaml` with the
System, the teams as Groups and the infrastructure as Resources (so every reference resolves),
and a `CODEOWNERS` derived from the teams.

The views are built here as data and laid out by templates/ecosystem/, like every manifest:
catalog text goes through yaml_str, and nexus.checks.ecosystem reads the files back rather
than trusting the renderer.

Where CODEOWNERS lives: GitHub reads it only from `.github/`, the repository root or `docs/`,
never from `generated/`. It is rendered here, like every derived file, so that it is checked
and guarded against drift; its patterns are written relative to the repository root, so the
file works verbatim once copied to `.github/CODEOWNERS` (docs/ci.md says how to keep the copy
current). We do not ship that copy: the default handles (@<platform>/<team>) must exist as
GitHub teams first, or GitHub marks every line as an error.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..catalog import naming
from ..catalog.models import Catalog
from .context import GENERATED_HEADER, RenderContext

API_VERSION = "backstage.io/v1alpha1"
DOCS_ANNOTATION = "nexus.example.com/docs-path"  # the domain of the catalog's own schema $id
CODEOWNERS = "CODEOWNERS"
ROOT_INFO = "catalog-info.yaml"
OUT_DIR = "generated"  # where `nexus generate` writes, relative to the repository root


def handle(cat: Catalog, team: str) -> str:
    """The team's GitHub handle: its own `handle`, else @<platform name>/<team name>."""
    return cat.teams[team].handle or f"@{cat.platform.name}/{team}"


def platform_owner(cat: Catalog) -> str:
    """Who owns what belongs to no one service (the catalog, the System, the infrastructure):
    the team that runs the gateway, the platform's front door."""
    return cat.services[cat.platform.gateway].team


def service_info_path(name: str) -> str:
    return f"services/{name}/catalog-info.yaml"


def component(cat: Catalog, name: str) -> dict[str, Any]:
    svc = cat.services[name]
    return {
        "name": name,
        "description": svc.description,
        "docs": f"{OUT_DIR}/{naming.service_page(name)}",
        "category": svc.category,
        "team": svc.team,
        "depends_on": [f"component:{dep}" for dep in sorted(svc.depends_on)]
        + [f"resource:{comp}" for comp in sorted(svc.uses)],
    }


def root_view(cat: Catalog) -> dict[str, Any]:
    groups = []
    for name, team in sorted(cat.teams.items()):
        slug = handle(cat, name).lstrip("@")
        # an organisation's team (org/team), not a single user, is annotated with its slug
        groups.append(
            {"name": name, "title": team.title, "contact": team.contact, "team_slug": slug if "/" in slug else None}
        )
    return {
        "targets": [f"./{service_info_path(n)}" for n in sorted(cat.services)],
        "service_count": len(cat.services),
        "owner": f"group:{platform_owner(cat)}",
        "groups": groups,
        "resources": [
            {"name": n, "description": c.description, "kind": c.kind} for n, c in sorted(cat.infrastructure.items())
        ],
    }


def render(ctx: RenderContext) -> dict[str, str]:
    cat = ctx.catalog
    common: dict[str, Any] = {"header": GENERATED_HEADER, "api_version": API_VERSION}
    kept = ctx.kept("ecosystem")  # a service's descriptor depends on its own view (component) alone
    out = {
        service_info_path(name): ctx.template_kept(
            kept,
            "ecosystem/component.yaml.j2",
            service=name,
            view=partial(component, cat, name),
            docs_annotation=DOCS_ANNOTATION,
            **common,
        )
        for name in sorted(cat.services)
    }
    kept.save()
    out[ROOT_INFO] = ctx.template(
        "ecosystem/catalog-info.yaml.j2", **root_view(cat), platform=cat.platform.name, **common
    )
    out[CODEOWNERS] = ctx.template(
        "ecosystem/CODEOWNERS.j2",
        header=GENERATED_HEADER,
        out_dir=OUT_DIR,
        platform_owner=handle(cat, platform_owner(cat)),
        services=[(name, handle(cat, svc.team)) for name, svc in sorted(cat.services.items())],
    )
    return out
