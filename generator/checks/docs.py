"""Checks of the rendered docs: every link resolves (to a page and, with a #fragment, to an
anchor or heading on it), the services index has exactly the spec's rows, every service has
its page. Markdown is read as CommonMark does for what matters here: fenced code and code
spans hold no links."""

from __future__ import annotations

import bisect
import hashlib
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

import orjson

from ..render.context import RenderContext
from ..render.docs import INDEX
from ..render.text import md_cell, md_text
from ..yamlread import Memo
from .passes import NONE, Passes

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)")  # runs of equal, maximal length
_LINK = re.compile(r"(?<!\\)\[(?:\\.|[^\\\]])*\]\(([^()\s]*)\)")
_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
_HEADING = re.compile(r"^ {0,3}#{1,6} +(.*?)(?: +#+)? *$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str, spans: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; with ``spans``, code spans removed."""
    out, open_fence = [], ""
    for number, line in enumerate(text.split("\n"), 1):
        m = _FENCE.match(line) if "``" in line or "~~" in line else None
        if open_fence:
            if m and m.group(1)[0] == open_fence[0] and len(m.group(1)) >= len(open_fence):
                open_fence = ""
        elif m:
            open_fence = m.group(1)
        else:
            out.append((number, _CODE_SPAN.sub("", line) if spans and "`" in line else line))
    return out


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"<[^>]*>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every fragment a link into ``text`` may name: explicit ids and heading slugs."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text):
        found.update(_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def _relative_links(text: str) -> list[tuple[int, str]]:
    """A page's relative links: (line number, target), in the page's order."""
    return [
        (number, target)
        for number, line in prose_lines(text)
        for target in _LINK.findall(line)
        if not _URL.match(target)
    ]


def _links_and_anchors(text: str) -> bytes:
    """What a page's relative links name (each target once, sorted: its bare #fragments lie
    together) and the anchors a link into it may name, as JSON (orjson: the same bytes for
    the same links and anchors in any process, which the links' key hashes; marshal's bytes
    of equal data differ with how the data was made)."""
    return orjson.dumps([sorted({target for _, target in _relative_links(text)}), sorted(anchors(text))])


def _page(text: str) -> tuple[list[str], list[str]]:
    """A page's link targets and anchors, read once across runs (LINKS)."""
    targets, found = orjson.loads(LINKS(text))
    return targets, found


# each page read once across runs, by its text and this module's code (a page per service made
# reading them all a tenth of an edit's run at 10,000 services). Every run that keeps it asks
# for every page (the links' key, ``links``), so it keeps only those: the pages of earlier
# versions are never asked for again (kept, a working copy's grew with its edits: at 10,000
# services 69 MB after a day's, 45 MB fresh, read by every run)
LINKS = Memo(
    _links_and_anchors, salt=hashlib.blake2b(Path(__file__).read_bytes(), digest_size=16).digest(), keep_used=True
)
LINKS_CACHE = "doc-links"
PARALLEL_FROM = 2_000  # pages: below this, forking costs more than it saves


def is_page(path: str) -> bool:
    return path.startswith("docs/") and path.endswith(".md")


def prefetch(files: dict[str, str], paths: Iterable[str] | None = None) -> None:
    """Read the pages (of ``paths``, else all) not read before on every core, when they are many
    (a page per service)."""
    LINKS.prefetch((files[p] for p in (files if paths is None else paths) if is_page(p)), least=PARALLEL_FROM)


def broken_links(files: dict[str, str]) -> list[str]:
    """Every relative link in a docs page must name a rendered file, and an anchor in it."""
    pages = sorted(p for p in files if is_page(p))
    targets: dict[str, set[str]] = {}  # the anchors of each page linked to with a fragment
    # What is wrong with each target, by where it resolves from (its page's folder; the page
    # itself for a bare #fragment), each looked at once: 10,000 service pages in one folder
    # make 158,000 links of 31,000 kinds. A folder's targets are gathered a page at a time
    # (set.update), not link by link: a service added at 10,000 services, which checks every
    # link again, took 0.10 to 0.11 s here instead of 0.15 to 0.19.
    wrong: dict[tuple[str, str], str | None] = {}
    folders: dict[str, set[str]] = {}
    for path in pages:
        found, _ = _page(files[path])
        own = bisect.bisect_left(found, "#"), bisect.bisect_left(found, "$")  # the bare #fragments
        folder = folders.setdefault(posixpath.dirname(path), set())
        folder.update(found[: own[0]])
        folder.update(found[own[1] :])
        for target in found[own[0] : own[1]]:
            wrong[path, target] = _link_problem(files, targets, path, target)
    for base, found_there in folders.items():
        for target in found_there:
            wrong[base, target] = _link_problem(files, targets, base, target)
    if not any(wrong.values()):
        return []
    # each wrong link named where it is: the pages that have one read again, in their order
    failures: list[str] = []
    for path in pages:
        if not any(wrong[_base(path, t), t] for t in _page(files[path])[0]):
            continue
        for number, target in _relative_links(files[path]):
            problem = wrong[_base(path, target), target]
            if problem is not None:
                failures.append(f"{path}:{number}: link {target}: {problem}")
    return failures


def _base(page: str, target: str) -> str:
    """Where ``target``, linked from ``page``, resolves from: the page's folder, or the page
    itself for a bare #fragment."""
    return page if target.startswith("#") else posixpath.dirname(page)


def _link_problem(files: dict[str, str], targets: dict[str, set[str]], base: str, target: str) -> str | None:
    """What is wrong with ``target``, linked from the folder ``base`` (the page ``base`` itself
    for a bare #fragment); None when it resolves."""
    file, _, fragment = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(base, file)) if file else base
    if resolved.startswith("../") or resolved not in files:
        return f"no rendered file {resolved}"
    if fragment:
        if resolved not in targets:
            targets[resolved] = set(_page(files[resolved])[1])
        if fragment not in targets[resolved]:
            return f"{resolved} has no anchor #{fragment}"
    return None


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split as GFM does: on pipes not escaped by a backslash."""
    parts = [""]
    for token in re.findall(r"\\.|\||[^|\\]+|\\", row.strip()):
        if token == "|":
            parts.append("")
        else:
            parts[-1] += token
    # The outer pipes delimit the row; they do not add empty cells.
    if parts[0] == "" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]
    return [p.strip() for p in parts]


def expected_index(ctx: RenderContext) -> list[tuple[str, list[str]]]:
    """The services index's category headings and rows, derived from the catalog on its own."""
    cat = ctx.catalog
    out = []
    for key, category in cat.categories.items():
        members = sorted((s.port, n) for n, s in cat.services.items() if s.category == key)
        rows = [f"| {n} | {port} | {md_cell(cat.services[n].description)} | [{n}.md]({n}.md) |" for port, n in members]
        out.append((f"### {md_text(category.title)} ({len(members)})", rows))
    return out


def index_rows(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    """The services index lists exactly the catalog's services, under the right categories."""
    if INDEX not in files:
        return [f"{INDEX}: missing"]
    found: list[tuple[str, list[str]]] = []
    section, in_table = "", False
    # Code spans are kept: GFM splits a row into cells before it looks for them.
    for _, line in prose_lines(files[INDEX], spans=False):
        if line.startswith("## "):
            section = line
        elif section != "## Service Categories":
            continue
        elif line.startswith("### "):
            found.append((line, []))
        elif line.startswith("| Service |"):
            in_table = bool(found)
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|--"):
            found[-1][1].append(line)
    failures = []
    expected = expected_index(ctx)
    if [h for h, _ in found] != [h for h, _ in expected]:
        failures.append(
            f"{INDEX}: category headings {[h for h, _ in found]} differ from the catalog's {[h for h, _ in expected]}"
        )
    # Compared by position: two categories may share a title.
    for i, (heading, rows) in enumerate(expected):
        got = found[i][1] if i < len(found) and found[i][0] == heading else []
        # looked up in sets: a category of 1,000 services compared row lists a million times
        have, want = set(got), set(rows)
        failures.extend(
            f"{INDEX}: {cells(row)[0]}: row missing under '{heading}' (expected {row})"
            for row in rows
            if row not in have
        )
        failures.extend(f"{INDEX}: unexpected row under '{heading}': {row}" for row in got if row not in want)
        if sorted(got) == sorted(rows) and got != rows:
            failures.append(f"{INDEX}: rows under '{heading}' are not in port order")
    return failures


def missing_pages(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    return [
        f"docs/services/{n}.md: {n}: page missing"
        for n in sorted(ctx.catalog.services)
        if f"docs/services/{n}.md" not in files
    ]


def links(files: dict[str, str], passes: Passes = NONE) -> list[str]:
    """``broken_links``, unless it passed with the same pages' links and anchors (each page's
    LINKS result) among the same files (a link may name any of them): kept in
    ``passes`` as one pass across pages. At 10,000 services an edit that moves no link (a
    description: 26 pages change) checked 158,000 links again, a fifth of a second; the key
    is a tenth of that."""
    found = _links_key(files) if passes.keeps else ""
    key = passes.key("docs-links", "", (), found) if found else ""
    if key and key in passes:
        return []
    failures = broken_links(files)
    if key and not failures:
        passes.add(key)
    return failures


def _links_key(files: dict[str, str]) -> str:
    digest = hashlib.blake2b("\0".join(files).encode(), digest_size=16)
    for path in files:
        if is_page(path):
            found = LINKS(files[path])
            digest.update(b"\0" + path.encode() + b"\0" + len(found).to_bytes(8, "little") + found)
    return digest.hexdigest()


def run(ctx: RenderContext, files: dict[str, str], passes: Passes = NONE) -> list[str]:
    """Pre-write checks for this area: one line per failure, naming the service and the file.
    The links' pass is kept across pages (``links``); a page's text is read once across runs
    (LINKS)."""
    return [*missing_pages(ctx, files), *index_rows(ctx, files), *links(files, passes)]
