"""`nexus diff`: what a catalog change does, as a reviewer wants to see it on a pull request.
(Not to be confused with write.compare, generated/ against the render, or cluster.drift,
a live object against its manifest.)

The base catalog is read from git (`git show REF:./catalog.yaml`), both catalogs are validated
and rendered with this checkout's templates, and the two are compared as data: services, ports,
edges with the teams on both sides, the connections the network policy allows, and the
generated files that would change. `as_markdown` is the PR comment, `as_dict` the JSON.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import Loaded, load_catalog, load_catalog_text
from ..errors import DiffError
from ..paths import catalog_folder
from ..render import RenderContext, render
from ..render.context import make_env
from ..render.services import team_owned
from ..render.text import md_cell

# Fields of a service compared one by one (port, edges and the stage are reported on their own).
_FIELDS = (
    "category",
    "team",
    "description",
    "uses",
    "externals",
    "session_affinity",
    "websocket",
    "autoscaling",
    "resources",
)


@dataclass
class Review:
    base: str
    services_added: list[dict[str, Any]] = field(default_factory=list)
    services_removed: list[dict[str, Any]] = field(default_factory=list)
    ports_changed: list[dict[str, Any]] = field(default_factory=list)
    services_changed: list[dict[str, Any]] = field(default_factory=list)
    edges_added: list[dict[str, Any]] = field(default_factory=list)
    edges_removed: list[dict[str, Any]] = field(default_factory=list)
    edges_changed: list[dict[str, Any]] = field(default_factory=list)
    allowed_added: list[dict[str, str]] = field(default_factory=list)
    allowed_removed: list[dict[str, str]] = field(default_factory=list)
    sections_changed: list[str] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=lambda: {"added": [], "changed": [], "removed": []})

    @property
    def empty(self) -> bool:
        return not any(v for k, v in asdict(self).items() if k not in ("base", "files")) and not any(
            self.files.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cross_team_edges_added": [e for e in self.edges_added if e["cross_team"]]}


GIT_TIMEOUT = 60  # seconds: reading one file at a ref is instant in a full clone


def read_base(ref: str, catalog: str | Path) -> str:
    """The catalog file as it is at git ``ref``."""
    path = Path(catalog).resolve()
    catalog_folder(catalog)  # refuses a catalog read from a pipe: it has no folder, nor history
    if ref.startswith("-"):  # git would read it as one of its options (--output=FILE writes a file)
        raise DiffError(f"--base {ref!r} is not a git ref (none starts with '-'); pass a branch, tag or commit")
    try:
        result = subprocess.run(
            ["git", "show", f"{ref}:./{path.name}"], cwd=path.parent, capture_output=True, timeout=GIT_TIMEOUT
        )
    except FileNotFoundError as exc:
        raise DiffError("git is not installed; nexus diff reads the base catalog with `git show`") from exc
    except subprocess.TimeoutExpired as exc:  # a partial clone fetching, a credential prompt
        raise DiffError(f"`git show {ref}:./{path.name}` took over {GIT_TIMEOUT} s; nothing was compared") from exc
    if result.returncode != 0:
        reason = (result.stderr.decode("utf-8", "replace").strip().splitlines() or ["git show failed"])[-1]
        raise DiffError(
            f"cannot read {path.name} at '{ref}': {reason.removeprefix('fatal: ')} (pass --base with a branch, tag or "
            "commit that has the catalog)"
        )
    try:
        return result.stdout.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DiffError(f"{path.name} at '{ref}' is not UTF-8") from exc


def _service_row(loaded: Loaded, name: str) -> dict[str, Any]:
    svc = loaded.catalog.services[name]
    return {
        "name": name,
        "port": svc.port,
        "team": svc.team,
        "category": svc.category,
        "stage": loaded.plan.stage_of[name],
    }


def _edges(loaded: Loaded) -> dict[tuple[str, str], str]:
    return {(name, dep): e.kind for name, s in loaded.catalog.services.items() for dep, e in s.depends_on.items()}


def allowed(loaded: Loaded) -> dict[tuple[str, str], str]:
    """Every connection the network policy allows, with the catalog entry that allows it:
    each edge, each service's infrastructure, outside -> the gateway, and declared externals."""
    cat = loaded.catalog
    pairs: dict[tuple[str, str], str] = dict.fromkeys(_edges(loaded), "depends_on")
    for name, svc in cat.services.items():
        pairs.update({(name, comp): "uses" for comp in svc.uses})
        pairs.update({(name, f"external:{ext}"): "externals" for ext in svc.externals})
    pairs[("outside", cat.platform.gateway)] = "gateway"
    return pairs


def _edge_row(loaded: Loaded, source: str, target: str, kind: str) -> dict[str, Any]:
    teams = loaded.catalog.services
    a, b = teams[source].team, teams[target].team
    return {"source": source, "target": target, "kind": kind, "source_team": a, "target_team": b, "cross_team": a != b}


def _files(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        # a team-owned file that exists is never rewritten by generate, whatever it would render
        "changed": sorted(p for p in set(after) & set(before) if after[p] != before[p] and not team_owned(p)),
        "removed": sorted(set(before) - set(after)),
    }


def compare(base: Loaded, head: Loaded, base_ref: str, *, cache: bool = False) -> Review:
    """Everything that differs between two validated catalogs."""
    d = Review(base=base_ref)
    old, new = base.catalog.services, head.catalog.services
    d.services_added = [_service_row(head, n) for n in sorted(set(new) - set(old))]
    d.services_removed = [_service_row(base, n) for n in sorted(set(old) - set(new))]
    for name in sorted(set(old) & set(new)):
        if old[name].port != new[name].port:
            d.ports_changed.append({"name": name, "before": old[name].port, "after": new[name].port})
        before = {f: _plain(getattr(old[name], f)) for f in _FIELDS} | {"stage": base.plan.stage_of[name]}
        after = {f: _plain(getattr(new[name], f)) for f in _FIELDS} | {"stage": head.plan.stage_of[name]}
        d.services_changed.extend(
            {"name": name, "field": f, "before": before[f], "after": after[f]} for f in before if before[f] != after[f]
        )

    e_old, e_new = _edges(base), _edges(head)
    d.edges_added = [_edge_row(head, *pair, e_new[pair]) for pair in sorted(set(e_new) - set(e_old))]
    d.edges_removed = [_edge_row(base, *pair, e_old[pair]) for pair in sorted(set(e_old) - set(e_new))]
    d.edges_changed = [
        {**_edge_row(head, *pair, e_new[pair]), "before": e_old[pair]}
        for pair in sorted(set(e_old) & set(e_new))
        if e_old[pair] != e_new[pair]
    ]

    a_old, a_new = allowed(base), allowed(head)
    d.allowed_added = [{"source": s, "target": t, "because": a_new[(s, t)]} for s, t in sorted(set(a_new) - set(a_old))]
    d.allowed_removed = [
        {"source": s, "target": t, "because": a_old[(s, t)]} for s, t in sorted(set(a_old) - set(a_new))
    ]

    b_data = base.catalog.model_dump(by_alias=True, exclude={"services"})
    h_data = head.catalog.model_dump(by_alias=True, exclude={"services"})
    d.sections_changed = sorted(k for k in b_data.keys() | h_data.keys() if b_data.get(k) != h_data.get(k))

    d.files = _files(
        render(RenderContext(base.catalog, base.plan, cache=cache)),
        render(RenderContext(head.catalog, head.plan, cache=cache)),
    )
    return d


def _plain(value: Any) -> Any:
    return value.model_dump(by_alias=True) if hasattr(value, "model_dump") else value


def review(catalog: str | Path = "catalog.yaml", base: str = "HEAD") -> Review:
    """Compare the catalog file with the same file at git ref ``base``."""
    head = load_catalog(catalog)
    base_loaded = load_catalog_text(read_base(base, catalog), f"{base}:{Path(catalog).name}")
    return compare(base_loaded, head, base, cache=True)


# -- output ---------------------------------------------------------------------------------------


def as_json(d: Review) -> str:
    return json.dumps(d.as_dict(), indent=2, ensure_ascii=False) + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return md_cell(value)


def as_markdown(d: Review, *, max_files: int = 200) -> str:
    """The diff as a pull-request comment (templates/authoring/review.md.j2)."""
    env = make_env()
    env.filters["value_cell"] = _cell
    text = env.get_template("authoring/review.md.j2").render(
        d=d,
        cross=[e for e in d.edges_added if e["cross_team"]],
        n_files=sum(len(v) for v in d.files.values()),
        listed=[(change, p) for change in ("added", "changed", "removed") for p in d.files[change]],
        max_files=max_files,
        plural=_plural,
    )
    return text.rstrip("\n") + "\n"
