"""Check stage: rendered files are verified before a byte is written.

One module per render area reads that area's output back and compares it with the catalog
(services, docs, ecosystem, k8s, mesh); ``parses`` covers every file. ``check`` runs them
all and raises one OutputCheckError listing every failure. Checks import the renderers'
data (paths, tables), never the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

import yaml

from .. import usercache, yamlread
from ..digest import known
from ..errors import OutputCheckError
from ..parallel import ordered_map
from ..render.context import RenderContext
from ..yamlread import PARSED, Memo, check_syntax, prefetch, split
from . import docs, ecosystem, events, k8s, mesh, pyshape, services
from .kubernetes_schema import SchemaValidator, held
from .passes import NONE, Passes

# Checks of one area that need no schemas: (ctx, files, passes) -> failures; those that look at
# each service on its own keep its passes (checks.passes)
AREA_CHECKS: tuple[Callable[[RenderContext, dict[str, str], Passes], list[str]], ...] = (
    services.run,
    docs.run,
    ecosystem.run,
    events.run,
)

MEMO_READS = (".yaml", ".yml", ".md")  # the files the memos below read

# what the checks read once across runs, each kept in the user's cache folder under its name
MEMOS: tuple[tuple[Memo, str], ...] = (
    (PARSED, yamlread.CACHE_NAME),
    (yamlread.FILES, yamlread.FILES_CACHE),
    (yamlread.LARGE, yamlread.LARGE_CACHE),
    (docs.LINKS, docs.LINKS_CACHE),
    (k8s.BASE_FILES, k8s.BASE_CACHE),
    (k8s.KUSTOMIZATIONS, k8s.KUSTOMIZATIONS_CACHE),
    (k8s.OUTCOMES, k8s.OUTCOMES_CACHE),
)


def _documents_read(path: str) -> bool:
    """Files whose YAML documents the checks read one by one (yamlread.PARSED): the mesh's and
    the overlays' (the base files are read whole: k8s.BASE_FILES), and the Backstage descriptors."""
    return (path.startswith(k8s.READS) and not k8s.in_base(path)) or ecosystem.reads(path)


def unverified(files: dict[str, str], verified: frozenset[str]) -> Iterable[str]:
    """The paths of ``files`` not ``verified``, in order: after an edit a few of 160,000, found
    by one set difference (in C) rather than a lookup per path."""
    return sorted(files.keys() - verified) if verified else files.keys()


def parses(
    files: dict[str, str],
    verified: frozenset[str] = frozenset(),
    validator: SchemaValidator | None = None,
    read_elsewhere: tuple[str, ...] = (),
    digests: Mapping[str, str] | None = None,
) -> list[str]:
    """Every Python, YAML and JSON file parses (except those already ``verified``, and YAML
    (.yaml) under ``read_elsewhere``: folders whose every document a check reads in full, reporting
    what does not parse). With ``validator``, a text whose exact bytes parsed before (its
    ``seen`` hashes, kept between runs) is not parsed again: most of a catalog's files survive
    an edit, wherever they are (named by their SHA-256 when ``digests`` has it). Many files are
    parsed on every core (parallel.ordered_map)."""
    todo: list[tuple[str, str]] = []
    keys: list[str | None] = []
    for path in unverified(files, verified):
        if not path.endswith((".py", ".yaml", ".yml", ".json")):
            continue
        if read_elsewhere and path.endswith(".yaml") and path.startswith(read_elsewhere):
            continue
        key = (
            validator.key(f"parses\0{path.rsplit('.', 1)[1]}\0{held(files, path, digests)}")
            if validator is not None
            else None
        )
        if validator is not None and validator.passed(key):
            continue
        todo.append((path, files[path]))
        keys.append(key)
    failures: list[str] = []
    for key, failure in zip(keys, ordered_map(_syntax_error, todo, least=PARALLEL_FROM), strict=True):
        if failure is not None:
            failures.append(failure)
        elif validator is not None and key is not None:
            validator.keep(key)
    return failures


PARALLEL_FROM = 20_000  # files (about 1,300 services): below this, forking costs more than it saves
PARALLEL_RUNS = yamlread.PARALLEL_FROM // yamlread.RUN  # runs of documents: as many documents


def _syntax_error(item: tuple[str, str]) -> str | None:
    """Why the file at ``path`` does not parse as its kind (by its suffix); None when it does."""
    path, text = item
    try:
        if path.endswith(".py"):
            pyshape.parses(text, filename=path)
        elif path.endswith((".yaml", ".yml")):
            # libyaml's parser is the syntax check; building Python objects would triple the
            # cost, and the Kubernetes checks read the manifests' content anyway
            check_syntax(text)
        elif path.endswith(".json"):
            json.loads(text)
    except (SyntaxError, yaml.YAMLError, ValueError) as exc:
        return f"{path}: does not parse: {exc}".replace("\n", " ")
    return None


class Prepared:
    """What the checks keep between runs in the user's cache folder (with ``cache``, not
    ``strict``): the hashes of manifests that passed the Kubernetes schemas, and the memos.
    Reading them needs no rendered file, so a run reads them while the render's worker
    finishes its last area (render's ``meanwhile``): at 10,000 services 0.15 to 0.2 s the
    main process otherwise spent after the render."""

    def __init__(self, space: str, *, strict: bool = False, cache: bool = False) -> None:
        self.space = space  # the output folder's (RenderContext.space)
        self.validator = SchemaValidator()
        folder = usercache.folder() if cache and not strict else None
        # the passes, a set per output folder as the memos are (kubernetes_schema.SchemaValidator.save)
        self.passes = usercache.Shards.space(str, str, space, PASSES) if folder is not None else None
        self._folder = folder
        self._loaded = False

    @property
    def seeded(self) -> bool:
        """Whether the memos ``load`` read started from another space's (a new checkout's first
        run): they keep only what this run reads."""
        return self._loaded and any(memo.seeded for memo, _ in MEMOS)

    def load(self) -> None:
        """Read what is kept; once (called again, nothing more is read)."""
        if self._loaded or self.passes is None or self._folder is None:
            return
        self._loaded = True
        self.validator.load(self.passes)
        # the passes of every output folder were one file here before they were a set per folder
        usercache.drop(self._folder / "k8s-schema")
        for memo, name in MEMOS:
            memo.load(usercache.Shards.space(bytes, bytes, self.space, "memos", f"{name}-{memo.version}"))
            # each memo was one file under its name here before it was sharded under memos/:
            # at 10,000 services 220 MB that no run reads any more
            usercache.drop(self._folder / name)

    def save(self) -> None:
        """Keep what this run's checks found, for the next run (nothing without a cache)."""
        if self.passes is not None:
            self.validator.save(self.passes)
            for memo, _ in MEMOS:
                memo.save()


PASSES = "passes"  # the cache folder of the checks' passes, a space per output folder


def check(
    ctx: RenderContext,
    files: dict[str, str],
    *,
    strict: bool = False,
    verified: frozenset[str] = frozenset(),
    cache: bool = False,
    digests: Mapping[str, str] | None = None,
    prepared: Prepared | None = None,
) -> None:
    """Raise OutputCheckError listing every failure; return quietly when all pass.

    ``verified`` names files whose exact bytes already passed these checks in an earlier run
    (the caller knows it from its own record, never from anything in the output tree):
    per-file checks skip them, so a run that changes little checks little. Checks across files
    (ports, URLs, policy, waves) always run. With ``cache``, the hashes of manifests that passed
    the Kubernetes schemas are kept between runs in the user's cache folder. ``strict`` ignores
    both and checks everything from scratch (CI runs it). ``digests``: each file's SHA-256, when
    the caller has them (write.compare): the checks' keys name the files by them. ``prepared``:
    what is kept, made with these ``strict`` and ``cache`` and perhaps read already (Prepared)."""
    verified = frozenset() if strict else verified
    if prepared is None:
        prepared = Prepared(ctx.space, strict=strict, cache=cache)
    prepared.load()
    validator = prepared.validator
    # the files' names (SHA-256) are known: the memos key the files they read (YAML, Markdown) by
    # them, unhashed
    read = ((files[path], name) for path, name in digests.items() if path.endswith(MEMO_READS)) if digests else ()
    with known(read), yamlread.held():
        failures = _every_check(ctx, files, validator, verified, prepared.passes is not None, digests, prepared.seeded)
    if failures:
        raise OutputCheckError(failures)
    prepared.save()


def _every_check(
    ctx: RenderContext,
    files: dict[str, str],
    validator: SchemaValidator,
    verified: frozenset[str],
    cached: bool,
    digests: Mapping[str, str] | None,
    seeded: bool,
) -> list[str]:
    # what the checks read, on every core at once when it is much (each says how much); the
    # Kubernetes checks across files first: on a large catalog they run in a worker, beside
    # everything else here, and take longest (at 10,000 services the rest waited for them)
    k8s.prefetch(files)
    across = k8s.start(ctx, files, validator=validator, digests=digests, seeded=seeded)
    failures: list[str] = []
    try:
        # the Kubernetes checks read every k8s/ document and name any that does not parse:
        # walking them here as well was a fifth of a cold run's checks at 5,000 services
        failures += parses(
            files,
            verified,
            validator if cached else None,
            read_elsewhere=(k8s.READS,),
            digests=digests,
        )
        # the documents and pages the checks here read: those of verified files were read and
        # kept when they passed (a memo that lost them reads them in the run, and keeps them)
        changed = unverified(files, verified)
        read = [p for p in changed if _documents_read(p)]
        # a file of many documents is read a run of them at a time (checks.documents): those
        # runs, not each of its documents as well (at 10,000 services 20,000 monitors and rules,
        # held twice by a cold run, and each looked up by a service added)
        runs = {p: yamlread.runs(files[p], chunks) for p in read if len(chunks := split(files[p])) >= yamlread.RUN}
        prefetch(chunk for p in read if p not in runs for chunk in split(files[p]))
        yamlread.FILES.prefetch((run for found in runs.values() for run in found), least=PARALLEL_RUNS)
        docs.prefetch(files, changed)
        passes = Passes(validator, files, digests) if cached else NONE
        for area in AREA_CHECKS:
            failures.extend(area(ctx, files, passes))
        mesh_failures = mesh.run(ctx, files, validator=validator, digests=digests, verified=verified)
    finally:
        failures.extend(across())  # waited for whatever happened, so no worker outlives the run
    failures.extend(mesh_failures)
    return failures
