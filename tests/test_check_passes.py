"""Kept passes of the checks that look at each service on its own (nexus.checks.passes): the
service-code check and the Backstage check read a service's file again only when its bytes or
what the check reads of the catalog changed, and never keep a failure."""

from __future__ import annotations

import marshal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, synthetic

from nexus import checks, usercache, yamlread
from nexus.catalog import load_catalog, load_catalog_text
from nexus.checks import PASSES, kubernetes_schema
from nexus.checks import docs as docs_checks
from nexus.checks import ecosystem as ecosystem_checks
from nexus.checks import k8s as k8s_checks
from nexus.checks import mesh as mesh_checks
from nexus.checks import services as services_checks
from nexus.checks.kubernetes_schema import SchemaValidator
from nexus.checks.passes import Passes
from nexus.digest import of_text
from nexus.pipeline import generate
from nexus.render import RenderContext, render
from nexus.render.ecosystem import ROOT_INFO

Check = Callable[[RenderContext, dict[str, str], Passes], list[str]]


class Reads(dict[str, str]):
    """The rendered files, telling which ones a check read."""

    def __init__(self, files: dict[str, str]) -> None:
        super().__init__(files)
        self.read: set[str] = set()

    def __getitem__(self, path: str) -> str:
        self.read.add(path)
        return super().__getitem__(path)

    def get(self, path: str, default: Any = None) -> Any:
        self.read.add(path)
        return super().get(path, default)


@pytest.fixture(scope="module")
def shipped() -> tuple[RenderContext, dict[str, str]]:
    loaded = load_catalog(CATALOG)
    ctx = RenderContext(loaded.catalog, loaded.plan)
    return ctx, render(ctx)


def _context(change: Callable[[dict[str, Any]], None]) -> RenderContext:
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    change(data)
    loaded = load_catalog_text(yaml.safe_dump(data, sort_keys=False))
    return RenderContext(loaded.catalog, loaded.plan)


def _port(data: dict[str, Any]) -> None:
    data["services"]["auth-service"]["port"] += 17


def _team(data: dict[str, Any]) -> None:
    data["services"]["auth-service"]["team"] = "media"


# each check, the file of a service it reads, and a catalog edit it must see with the files unchanged
CHECKS: list[tuple[Check, str, Callable[[dict[str, Any]], None], str]] = [
    (services_checks.run, "services/{}/{}/settings.py", _port, "dependency URL for auth-service"),
    (ecosystem_checks.run, "services/{}/catalog-info.yaml", _team, "owner is 'group:core-platform'"),
]


@pytest.mark.parametrize(("check", "shape", "edit", "failure"), CHECKS, ids=["services", "ecosystem"])
def test_a_service_that_passed_with_the_same_inputs_is_not_read_again(
    shipped: tuple[RenderContext, dict[str, str]],
    check: Check,
    shape: str,
    edit: Callable[[dict[str, Any]], None],
    failure: str,
) -> None:
    ctx, rendered = shipped
    validator = SchemaValidator()  # where the passes are kept (in a run: the user's cache)

    def run(context: RenderContext, files: dict[str, str]) -> tuple[list[str], set[str]]:
        reads = Reads(files)
        failures = check(context, reads, Passes(validator, reads, {p: of_text(t) for p, t in files.items()}))
        return failures, {p for p in reads.read if p.startswith("services/")}

    def path(name: str) -> str:
        return shape.format(name, name.replace("-", "_"))

    every = {path(name) for name in ctx.catalog.services}
    assert run(ctx, rendered) == ([], every)
    assert run(ctx, rendered) == ([], set())  # every pass kept: no service's file read again

    # one file's bytes changed: that file is read again, and only it
    one = path("auth-service-v2")
    changed = {**rendered, one: rendered[one] + "\n"}
    assert run(ctx, changed) == ([], {one})

    # the same files, a catalog that says otherwise: the passes are not trusted, the files are read
    failures, read = run(_context(edit), rendered)
    assert any(failure in f for f in failures), failures
    assert read, "a catalog edit that the check reads must read the files again"

    # a failure is never kept: the same broken inputs fail again, read again
    broken = {**rendered, one: rendered[one].replace("user-auth", "nobody")}  # a dependency renamed
    first, read = run(ctx, broken)
    assert first and read == {one}
    assert run(ctx, broken) == (first, {one})


def test_without_passes_every_service_is_read_each_time(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    """Called on its own (or under --strict) a check keeps nothing."""
    ctx, rendered = shipped
    for check, shape, _, _ in CHECKS:
        for _ in range(2):
            reads = Reads(rendered)
            assert check(ctx, reads, Passes()) == []
            assert {p for p in reads.read if p.startswith("services/")} == {
                shape.format(n, n.replace("-", "_")) for n in ctx.catalog.services
            }


def test_a_backstage_pass_is_not_trusted_once_the_entities_it_may_name_change(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    """A descriptor's references resolve against the root's entities and the other services: the
    same descriptor, a root without the System it names, is read again and fails."""
    ctx, rendered = shipped
    validator = SchemaValidator()

    def run(files: dict[str, str]) -> list[str]:
        return ecosystem_checks.run(ctx, files, Passes(validator, files, {p: of_text(t) for p, t in files.items()}))

    assert run(rendered) == []
    root = "---".join(d for d in rendered[ROOT_INFO].split("---") if "\nkind: System\n" not in d)
    assert root != rendered[ROOT_INFO]
    failures = run({**rendered, ROOT_INFO: root})
    assert len([f for f in failures if "reference system:" in f]) == len(ctx.catalog.services), failures


def test_a_backstage_pass_holds_while_others_come_and_go_and_its_own_page_stays(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    """A descriptor's pass is kept by what it may name: the root's entities and its own docs
    page. A service added elsewhere reads no other descriptor again (at 10,000 services every
    one was read again); its own page gone, it is read again and fails; an annotation naming
    another page than its own fails, that page rendered or not."""
    ctx, rendered = shipped
    validator = SchemaValidator()

    def run(context: RenderContext, files: dict[str, str]) -> tuple[list[str], set[str]]:
        reads = Reads(files)
        failures = ecosystem_checks.run(
            context, reads, Passes(validator, reads, {p: of_text(t) for p, t in files.items()})
        )
        return failures, {p for p in reads.read if p.startswith("services/")}

    assert run(ctx, rendered)[0] == []

    def add(data: dict[str, Any]) -> None:
        entry = {"port": 3075, "category": "streaming", "team": "media", "description": "Ticket sales"}
        data["services"]["ticket-office"] = {**entry, "depends_on": {"auth-service": "hard"}}

    added = _context(add)
    assert run(added, render(added)) == ([], {"services/ticket-office/catalog-info.yaml"})

    page, info = "docs/services/auth-service.md", "services/auth-service/catalog-info.yaml"
    failures, read = run(ctx, {p: t for p, t in rendered.items() if p != page})
    assert read == {info} and failures == [
        f"auth-service: {info}: docs annotation points at generated/{page}, which is not generated"
    ]

    elsewhere = {**rendered, info: rendered[info].replace(f"generated/{page}", "generated/docs/README.md")}
    failures, read = run(ctx, elsewhere)
    wrong = "docs annotation points at generated/docs/README.md"
    assert read == {info} and failures == [f"auth-service: {info}: {wrong}, not at its own page generated/{page}"]


def test_the_links_pass_holds_while_no_page_moves_a_link_or_an_anchor_and_no_file_goes(
    shipped: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs' links are checked across pages, so their pass is one for all of them: kept while
    every page's link targets and anchors and the set of files are the same (a page's prose
    edited: a description, lines added), and not trusted once a link's target, an anchor or a
    file goes or comes."""
    ctx, rendered = shipped
    validator = SchemaValidator()
    checked: list[int] = []
    real = docs_checks.broken_links

    def counted(files: dict[str, str]) -> list[str]:
        checked.append(1)
        return real(files)

    monkeypatch.setattr(docs_checks, "broken_links", counted)

    def run(files: dict[str, str]) -> list[str]:
        checked.clear()
        failures = docs_checks.run(ctx, files, Passes(validator, files, {p: of_text(t) for p, t in files.items()}))
        return failures if checked else ["(pass kept)", *failures]

    assert run(rendered) == []
    assert run(rendered) == ["(pass kept)"]

    page = "docs/services/auth-service.md"
    prose = rendered[page].replace("\n## ", "\nA line of prose edited by hand.\n\n## ", 1)
    assert prose != rendered[page]
    # the prose moved every later link down a line: a pass names no line (a failure, never
    # kept, is found with its line), so the same targets and anchors keep it
    assert run({**rendered, page: prose}) == ["(pass kept)"]
    # a link added to the prose: checked again
    linked = prose.replace("A line of prose edited by hand.", "See [the map](../architecture/service-map.md).")
    assert run({**rendered, page: linked}) == []
    assert run({**rendered, page: linked}) == ["(pass kept)"]
    # its description edited, as the catalog would: the same links on the same lines, the same anchors
    same_lines = rendered[page].replace("Primary authentication service", "Authentication, edited", 1)
    assert same_lines != rendered[page]
    assert run({**rendered, page: same_lines}) == ["(pass kept)"]

    # a file linked to is gone: checked again, and its links fail, every time (a failure is never kept)
    target = "docs/architecture/service-map.md"
    without = {p: t for p, t in rendered.items() if p != target}
    failures = run(without)
    assert failures and all(f"no rendered file {target}" in f for f in failures), failures
    assert run(without) == failures

    # an anchor linked to is gone
    index = "docs/services/README.md"
    no_anchor = {**rendered, index: rendered[index].replace('<a id="category-streaming"></a>', "")}
    failures = run(no_anchor)
    assert failures and all("has no anchor #category-streaming" in f for f in failures), failures

    # a file the links may name but none does: added, the pass is not trusted either
    assert run({**rendered, "docs/extra.json": "{}"}) == []


def test_the_links_pass_is_not_kept_without_a_cache(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, rendered = shipped
    broken = {**rendered, "docs/README.md": rendered["docs/README.md"] + "\n[gone](nowhere.md)\n"}
    for _ in range(2):
        assert docs_checks.run(ctx, rendered, Passes()) == []
        assert [f for f in docs_checks.run(ctx, broken, Passes()) if "nowhere.md" in f]


def test_whole_passes_found_are_kept_by_a_save_that_keeps_what_its_run_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the validator cache's limit (every run at 10,000 services: 110,000 documents) a save
    keeps only what its run used. A whole check's pass that a run found (the mesh checks', the
    Kubernetes checks' and so the pass across files it stands for) is used: the run after the
    one that found them checks nothing again. A new checkout's first run, whose memos start
    from another's and keep only what it uses, checks each service's manifests by their kept
    outcomes even so, and its first edit checks the service it changed alone. Before, the
    mesh's pass was dropped by the run that found it, and that first edit checked all of them."""
    monkeypatch.setattr(kubernetes_schema, "CACHE_LIMIT", 0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "catalog.yaml").write_bytes(CATALOG.read_bytes())
    generate(tmp_path / "a" / "catalog.yaml")
    ran: list[str] = []
    for module, name in ((mesh_checks, "_run"), (k8s_checks, "_complete"), (k8s_checks, "_check_and_keep")):
        original = getattr(module, name)
        monkeypatch.setattr(
            module,
            name,
            lambda *a, _f=original, _n=name, **k: ran.append(_n) or _f(*a, **k),  # type: ignore[misc]
        )
    generate(tmp_path / "b" / "catalog.yaml")  # a second checkout: every pass found
    assert "_complete" not in ran and "_check_and_keep" not in ran
    for memo in (yamlread.FILES, k8s_checks.KUSTOMIZATIONS, k8s_checks.OUTCOMES):
        # the new checkout's memos keep what the first one's do (they started from them)
        assert memo.shards is not None and memo.shards.folder is not None
        kept = {}
        for name in "ab":
            own = memo.shards.folder.with_name(usercache.name_of(tmp_path / name / "generated"))
            shards = usercache.Shards(own, bytes, bytes)
            kept[name] = shards.load().keys()
            assert not shards.seeded  # its own entries, not read from another space's
        assert kept["b"] == kept["a"] and kept["a"]
    ran.clear()
    catalog = tmp_path / "b" / "catalog.yaml"
    text = catalog.read_text(encoding="utf-8")
    at = text.index("description:", text.index("\nservices:"))
    catalog.write_text(text[:at] + 'description: "Edited"' + text[text.index("\n", at) :], encoding="utf-8")
    generate(catalog)  # files of the checks across files unchanged: their passes hold
    assert ran == ["_check_and_keep"]  # the edited service's manifests


def test_another_projects_runs_leave_this_ones_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The passes are kept per output folder, as the memos are: past the cache's limit a run
    keeps only what it used, and with one set for every project a run of another catalog
    dropped this one's, so that its next edit parsed every file again (at 10,000 services
    1.6 s more). Here that edit parses the edited service's files alone."""
    monkeypatch.setattr(kubernetes_schema, "CACHE_LIMIT", 0)
    for name, text in (("a", CATALOG.read_text(encoding="utf-8")), ("b", synthetic(40))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "catalog.yaml").write_text(text, encoding="utf-8")
        generate(tmp_path / name / "catalog.yaml")
    folder = usercache.folder(PASSES)
    assert folder is not None
    assert {p.name for p in folder.iterdir()} >= {usercache.name_of(tmp_path / n / "generated") for n in "ab"}
    parsed: list[str] = []
    real = checks._syntax_error
    monkeypatch.setattr(checks, "_syntax_error", lambda item: parsed.append(item[0]) or real(item))
    catalog = tmp_path / "a" / "catalog.yaml"
    text = catalog.read_text(encoding="utf-8")
    at = text.index("description:", text.index("\nservices:"))
    name = text[text.rindex("\n  ", 0, text.rindex(":\n", 0, at)) + 3 : text.rindex(":\n", 0, at)]
    catalog.write_text(text[:at] + 'description: "Edited"' + text[text.index("\n", at) :], encoding="utf-8")
    generate(catalog)
    assert parsed and all(f"/{name}/" in p or p.endswith(f"/{name}.yaml") for p in parsed), parsed


def test_the_kept_passes_read_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a save keeps a load reads back, the implied passes with their passes; what is not a
    pass is not read as one."""
    monkeypatch.setattr(kubernetes_schema, "CACHE_LIMIT", 0)
    kept = usercache.Shards(tmp_path / "passes", str, str)
    (tmp_path / "passes").mkdir()
    before = SchemaValidator()
    before.keep("run", implying="across")
    before.keep("across", "dropped")
    assert before.passed("run")
    before.save(kept)  # past the limit: what this run used (all three)
    after = SchemaValidator()
    after.load(usercache.Shards(tmp_path / "passes", str, str))
    assert after.seen == {"run", "across", "dropped"} and after.implied == {"run": "across"}
    after.passed("run")  # used, and the pass it implies with it
    after.save(kept)
    again = SchemaValidator()
    again.load(usercache.Shards(tmp_path / "passes", str, str))
    assert again.seen == {"run", "across"} and again.implied == {"run": "across"}
    usercache.write(tmp_path / "passes" / "all", marshal.dumps({"old": 1, "kept": "", 2: ""}))
    odd = SchemaValidator()
    odd.load(usercache.Shards(tmp_path / "passes", str, str))
    assert odd.seen == {"kept"} and odd.implied == {}
    usercache.write(tmp_path / "passes" / "all", b'{"seen": ["a"]}')  # not marshal: no pass
    broken = SchemaValidator()
    broken.load(usercache.Shards(tmp_path / "passes", str, str))
    assert broken.seen == set() and broken.implied == {}
