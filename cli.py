"""The `nexus` command: parses arguments, calls the library, prints. Nothing else lives here.

Heavy modules (jinja2, httpx, rich tables, the kubernetes client) are imported inside the
commands that need them, so `nexus validate` costs little more than starting Python.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from generator.errors import NexusError

class _Boundary(TyperGroup):
    """The one error boundary: a NexusError is a user error, printed plainly, exit 1.

    It sits on the command group (not in main()) so that CliRunner in the tests sees exactly
    what a person at a terminal sees.
    """

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except NexusError as exc:
            text = str(exc)
            typer.echo(f"error: {text}" if "\n" not in text else f"error:\n{text}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Boundary,
    name="nexus",
    help="Run a fleet of microservices from one declaration (catalog.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CatalogOpt = Annotated[
    Path,
    typer.Option("--catalog", "-c", help="The catalog file. generated/ and templates/ are found beside it.", dir_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text for people.")]


def _load(catalog: Path):  # noqa: ANN202 - returns generator.catalog.Loaded
    from generator.catalog import load_catalog

    return load_catalog(catalog)


@app.command()
def validate(catalog: CatalogOpt = Path("catalog.yaml")) -> None:
    """Check the catalog: schema, names, ports, references, cycles, stage order, critical paths.

    Exit 0 when consistent, 1 with every problem listed (file:line:col, key path, fix) otherwise.
    """
    loaded = _load(catalog)
    cat = loaded.catalog
    edges = sum(len(s.depends_on) for s in cat.services.values())
    typer.echo(f"{catalog}: ok: {len(cat.services)} services, {edges} edges, {len(cat.stages)} stages, {len(loaded.plan.waves)} waves, {len(cat.flows)} flows")


@app.command()
def plan(catalog: CatalogOpt = Path("catalog.yaml"), as_json: JsonOpt = False) -> None:
    """Show the deployment waves: the spec's stages in order, each split by hard dependencies."""
    loaded = _load(catalog)
    p = loaded.plan
    if as_json:
        typer.echo(json.dumps(p.as_dict(), indent=2))
        return
    stages = {s.name: s.title for s in loaded.catalog.stages}
    for wave in p.waves:
        members = [*wave.infrastructure, *wave.services]
        typer.echo(f"wave {wave.number:>2}  {stages[wave.stage]:<18} {', '.join(members)}")


class GraphFormat(str, Enum):
    json = "json"
    mermaid = "mermaid"
    dot = "dot"


@app.command()
def graph(
    catalog: CatalogOpt = Path("catalog.yaml"),
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", help="json (for tools), mermaid or dot (for pictures).")] = GraphFormat.json,
) -> None:
    """Print the dependency graph: services with stage and wave, and every edge with its kind."""
    from generator.graph import FORMATS

    loaded = _load(catalog)
    typer.echo(FORMATS[fmt.value](loaded.catalog, loaded.plan), nl=False)


@app.command()
def generate(
    catalog: CatalogOpt = Path("catalog.yaml"),
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: generated/ beside the catalog).", file_okay=False)] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 listing every missing, stale, extra or hand-edited file.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite hand-edited generated files (a copy goes to .nexus/backups/).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Also run the slow checks (full schema validation of every manifest, uncached).")] = False,
) -> None:
    """Render services, Kubernetes manifests and docs from the catalog, check them, then write.

    Unchanged files are not rewritten; files a team owns (routes.py) are created once and never
    touched; a generated file edited by hand stops the run unless --force.
    """
    from generator.generate import generate as run

    result = run(catalog, out, check_only=check, force=force, strict=strict)
    where = result.out
    if check:
        typer.echo(f"{where}: up to date ({len(result.files)} files)")
    elif result.touched:
        typer.echo(f"{where}: {len(result.touched)} files written or removed, {len(result.files)} in all")
        for path in result.touched[:20]:
            typer.echo(f"  {path}")
        if len(result.touched) > 20:
            typer.echo(f"  ... and {len(result.touched) - 20} more")
    else:
        typer.echo(f"{where}: nothing to do ({len(result.files)} files up to date)")


@app.command()
def schema() -> None:
    """Print the catalog's JSON Schema (generated from the models; editors use it to validate)."""
    from generator.schema import schema_json

    typer.echo(schema_json(), nl=False)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
