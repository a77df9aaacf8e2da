"""yamlread: the fast builder reads exactly what PyYAML's libyaml loader reads, and the memo's
workers leave exactly what reading in turn would."""

from __future__ import annotations

import concurrent.futures
import errno
import marshal
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus import digest, parallel, usercache, yamlread
from nexus.catalog import load_catalog
from nexus.checks import k8s as k8s_checks
from nexus.render import k8s as render_k8s
from nexus.render import mesh as render_mesh
from nexus.render.context import RenderContext


def pyyaml(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def same(text: str) -> None:
    """Both read the same data, types and key order included (repr tells True from 1 and 1.0)."""
    try:
        expected: Any = repr(pyyaml(text))
    except (yaml.YAMLError, ValueError) as exc:
        with pytest.raises(type(exc)):
            yamlread.load(text)
        return
    assert repr(yamlread.load(text)) == expected, text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: 1\na: 2\n", "a key written twice"),
        ("3: int key\n", "a key that is not text"),
        ("a: [[[1]]]\n", "deeper than three levels"),
        ("a: " + "9" * 5000 + "\n", "a number Python will not make"),
    ],
)
def test_plain_leaves_to_its_caller_what_the_catalog_reader_must_locate(text: str, why: str) -> None:
    with pytest.raises(yamlread.Unusual):
        yamlread.plain(text, text_keys=True, max_depth=3)
    assert yamlread.plain("a: [[1]]\nb: {c: d}\n", text_keys=True, max_depth=3) == {"a": [[1]], "b": {"c": "d"}}


def test_every_shipped_yaml_document_reads_the_same() -> None:
    paths = sorted(p for p in (ROOT / "generated").rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    chunks = [c for p in paths for c in yamlread.split(p.read_text(encoding="utf-8"))]
    assert len(paths) > 150 and len(chunks) > 500
    for chunk in chunks:
        same(chunk)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "just text\n",
        "a: 1\nb: 1.5\nc: true\nd: ~\ne: null\nf:\ng: '1'\nh: \"true\"\n",
        # YAML 1.1 as PyYAML reads it: yes/on are booleans, 017 octal, 0x1f hex, 1:20 base 60, 1_000
        "a: yes\nb: off\nc: 017\nd: 0x1f\ne: 1:20\nf: 1_000\ng: .inf\nh: -.Inf\ni: .NaN\nj: 0b101\n",
        "when: 2001-12-14t21:59:43.10-05:00\nday: 2002-12-14\n",  # timestamps: PyYAML's own
        "base: &b {x: 1}\nother: *b\n",  # anchor and alias
        "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n",  # merge key
        "a: !!str 12\nb: !!float 1\nc: !!binary aGVsbG8=\n",  # explicit tags
        "? [1, 2]\n: list key\n",  # a key PyYAML refuses (unhashable)
        "~: null key\ntrue: bool key\n1.5: float key\n3: int key\n",
        "a: 1\na: 2\n",  # a duplicate: the last wins
        "- a\n- {b: [1, {c: d}]}\n- []\n- {}\n",
        "a: |\n  line\n  more\nb: >\n  folded\n  text\n",
        "one: 1\n---\ntwo: 2\n",  # two documents: PyYAML's error
        "a: [unclosed\n",  # a syntax error: the same error type
        "a: !custom 1\n",  # an unknown tag: PyYAML's error
        "a: 'x'\n...\n",
        "a: " + "9" * 5000 + "\n",  # more digits than Python turns into a number: PyYAML's ValueError
    ],
)
def test_every_yaml_feature_reads_as_pyyaml_reads_it(text: str) -> None:
    same(text)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["yes", "No", "on", "017", "0x1f", "1:20", "~", "null", ".inf", "2002-12-14", "<<", "=", "-"]),
)
_data = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_data, st.sampled_from([None, True, False]))
def test_any_dumped_data_reads_the_same(data: Any, flow: bool | None) -> None:
    same(yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True))


def test_documents_read_on_every_core_are_the_documents_read_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """yamlread.prefetch (many documents: workers, one per core) leaves exactly what reading
    each in turn would: the same data under the same keys, nothing for a document that does
    not parse (reading it in the run reports the error), and the same checks' verdict."""
    loaded = load_catalog(CATALOG)
    ctx = RenderContext(loaded.catalog, loaded.plan)
    components = {p: t for p, t in render_mesh.render(ctx).items() if p.startswith("k8s/components/")}
    files = {**render_k8s.render(ctx), **components}
    texts = [chunk for p, t in sorted(files.items()) if p.startswith(k8s_checks.READS) for chunk in yamlread.split(t)]
    broken = "kind: [unclosed\n"
    fresh = yamlread.Memo(yamlread.PARSED.function)
    monkeypatch.setattr(yamlread, "PARSED", fresh)
    monkeypatch.setattr(yamlread, "PARALLEL_FROM", 10)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    yamlread.prefetch([*texts, broken])
    assert len(texts) > 100 and fresh.added
    assert fresh.key(broken) not in fresh.entries
    for text in texts:
        assert marshal.loads(fresh.entries[fresh.key(text)]) == pyyaml(text)
    assert k8s_checks.run(ctx, files) == []
    with pytest.raises(yaml.YAMLError):
        fresh(broken)


def test_any_memo_filled_on_every_core_holds_what_computing_in_turn_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memo.prefetch (the docs pages' links, the base files, the documents) keeps for each text
    what the function gives in turn, whichever worker computed it, and nothing for a text the
    function refuses (computed again in the run, which reports it)."""
    from nexus.checks import docs

    def links_or_refuse(text: str) -> Any:
        if "refuse" in text:
            raise ValueError("refused")
        return docs.LINKS.function(text)

    pages = [f"# Page {i}\n\nSee [other](other.md#part-{i % 7}) and `code [x](y)`.\n" for i in range(60)]
    memo = yamlread.Memo(links_or_refuse)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 3)
    memo.prefetch([*pages, "refuse this"], least=10)
    assert memo.added and memo.key("refuse this") not in memo.entries
    assert [marshal.loads(memo.entries[memo.key(p)]) for p in pages] == [docs.LINKS.function(p) for p in pages]
    assert [memo(p) for p in pages] == [docs.LINKS.function(p) for p in pages]


def _dies_in_a_worker(parent: int) -> int:
    if os.getpid() != parent:
        os._exit(1)  # as the kernel's out-of-memory killer would end it
    return 42


def test_work_on_every_core_is_done_in_turn_when_a_worker_cannot_start_or_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel.ordered_map and beside never end a run with a traceback because of the workers:
    a fork that fails (no memory, a process limit) or a worker killed gives the result computed
    here instead."""
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    parent = os.getpid()
    assert parallel.ordered_map(_dies_in_a_worker, [parent] * 4, least=1) == [42] * 4
    assert parallel.beside(lambda: _dies_in_a_worker(parent), worth=True)() == 42

    class NoFork(concurrent.futures.ProcessPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    # parallel imports the pool where it forks one (parallel._pool)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", NoFork)
    assert parallel.beside(lambda: os.getpid(), worth=True)() == parent
    assert parallel.ordered_map(lambda x: (x, os.getpid()), [1, 2, 3], least=1) == [
        (1, parent),
        (2, parent),
        (3, parent),
    ]


def test_a_memo_keys_a_text_by_its_name_whether_or_not_the_name_is_known() -> None:
    """digest.known hands the check stage's memos the names digest.of_files gave the files: the key
    is the same as hashing the text, only that text object is known, and nothing stays known after."""
    memo = yamlread.Memo(str.upper, salt=b"test")
    text, twin = "kind: A\n" * 100, "".join(["kind: A\n"] * 100)  # equal, but two objects
    hashed = memo.key(text)
    with digest.known([(text, digest.of_text(text))]):
        assert memo.key(text) == hashed == memo.key(twin)
    # a name given for a text is used as given: only by identity, never by looking the text up
    with digest.known([(text, "0" * 64)]):
        assert memo.key(text) != hashed
        assert memo.key(twin) == hashed
        with digest.known([(text, "1" * 64)]):  # nested: the outer name stays until the outer ends
            assert digest.of_text(text) == "0" * 64
        assert digest.of_text(text) == "0" * 64
    assert memo.key(text) == hashed and digest.of_text(text) == digest.of_bytes(text.encode())


def test_a_large_texts_documents_and_runs_are_made_once_while_the_checks_read() -> None:
    """yamlread.held: inside it, a large text (a file over every service) is split and cut in
    runs once, by its very object, however many checks ask; an equal text made anew, a small
    one, or any text outside it is split afresh; the parts are the same either way."""
    docs = [f"kind: Rule\nmetadata:\n  name: rule-{i}\nspec: {{}}\n" for i in range(3000)]
    text = "---\n".join(docs)
    twin = "---\n".join(docs)
    assert len(text) >= yamlread.HELD_FROM
    outside = yamlread.split(text)
    assert yamlread.split(text) is not outside
    with yamlread.held():
        first, runs = yamlread.split(text), yamlread.runs(text)
        assert yamlread.split(text) is first and yamlread.runs(text) is runs
        assert yamlread.split(twin) is not first and yamlread.split(twin) == first
        with yamlread.held():  # nested: still held, until the outer one ends
            assert yamlread.split(text) is first
        assert yamlread.runs(text, first) is runs
        small = "kind: A\n---\nkind: B\n"
        assert yamlread.split(small) is not yamlread.split(small)
    assert first == outside and "---".join(runs) == text
    assert yamlread.split(text) is not first and not yamlread._SPLITS and not yamlread._RUNS


# -- a block mapping read in parts (yamlread.in_parts) -------------------------------------------------


def whole(text: str) -> Any:
    return yamlread.plain(text, text_keys=True, max_depth=64)


def in_parts(text: str) -> Any:
    """What in_parts reads, each part read by plain (as the catalog's memo does); the parts, in
    order, are the text."""
    parts: list[str] = []
    data = yamlread.in_parts(
        text, lambda part: parts.append(part) or yamlread.plain(part, text_keys=True, max_depth=63)
    )
    assert "".join(parts) == text
    assert len(parts) > 1
    return data


def outcome(read: Any, text: str) -> str:
    try:
        return repr(read(text))  # repr: True is not 1, and the keys' order counts
    except (yamlread.Unusual, yaml.YAMLError) as exc:
        return type(exc).__name__


def refused(outcome: str) -> bool:
    return outcome == "Unusual" or outcome.endswith("Error")


SERVICES = "platform:\n  name: x\nservices:\n  a:\n    port: 1\n"


@pytest.mark.parametrize(
    "text",
    [
        SERVICES + "  b:\n    port: 2\n",
        "# a comment first\n\n" + SERVICES + "  # a comment between\n\n# and at the left\n  b: {port: 2}\n",
        SERVICES + "  b: |+\n    kept\n\n\n  c:\n    port: 3\n",  # a block scalar keeping its blank lines
        SERVICES + "  b:\n    note: |\n      no line break at the end",  # the text's end, as it is
        SERVICES + "  b: plain\n   continued\n  c: 1\n",  # a plain scalar on two lines
        SERVICES + "  b: |2\n      indented\n  c: 1\n",  # an explicit indentation
        "services:    # a comment after the key\n  a: 1\n  b: 2\n",
        "stages:\n- name: one\n  services:\n  - a\nservices:\n  a: 1\n",  # a list at the key's indentation
        "platform: x\nservices: {a: 1}\nflows: []\n",  # values on the key's line: a part each
        # a list's items, each a part (a Prometheus configuration's scrape jobs)
        "global:\n  x: 1\njobs:\n  - name: a\n    targets:\n      - b\n  - name: c\n",
        "jobs:\n  # a comment\n  - a\n\n# at the left\n  -\n    x: 1\n  - - nested\n    - list\n",
        "jobs:\n    - note: |\n        kept\n\n    - plain\n      continued\n    - 3\n",
        "jobs:\n  - a\nrule_files:\n  - b\n  - c\n",
    ],
)
def test_a_mapping_read_in_parts_is_the_mapping_read_whole(text: str) -> None:
    assert outcome(in_parts, text) == outcome(whole, text) and "Error" not in outcome(whole, text)


@pytest.mark.parametrize(
    "text",
    [
        SERVICES + '    note: "open\n  b: 2"\n',  # a quoted scalar over a line that looks like a key
        SERVICES + "    note: 'it''s\n  b: 2'\n",
        SERVICES + "    uses: [x,\n  b: y]\n",  # a flow list over such a line
        SERVICES + "    uses: {x: 1,\n  b: y}\n",
        SERVICES + '    note: "open\nb: 2"\n',  # ... and over one at the left
        SERVICES + "  b: &same {port: 2}\n  c: *same\n",  # an alias to another part
        SERVICES + "  a:\n    port: 2\n",  # a key twice, in two parts
        SERVICES + "platform: again\n",
        SERVICES + "  b: !!str 2\n",  # a tag
        SERVICES + "---\nother: 1\n",  # a second document
        SERVICES + "...\n",
        "%YAML 1.1\n---\n" + SERVICES,  # a directive
        SERVICES.replace("\n", "\r\n"),
        SERVICES + " b: 2\n",  # indented less than the entries
        SERVICES + "\tb: 2\n",  # a tab
        "- a\n- b\n",  # not a mapping
        "? [complex]\n: key\n" + SERVICES,
        SERVICES + "  1: typed key\n",
        SERVICES + "  yes: typed key\n",
        SERVICES + "  b:\n    deep: " + "[" * 62 + "]" * 62 + "\n",  # deeper than 64 levels in the whole
        "",
        "# only a comment\n",
        "jobs:\n  - a\n  b: 1\n",  # items and keys alike at one indentation
        "jobs:\n  b: 1\n  - a\n",
        "jobs:\n  - a\n -b\n",
        "jobs:\n  - a\n - b\n",  # an item indented less
        "jobs:\n  - &x b\n  - *x\n",  # an alias to another item
        'jobs:\n  - "open\n  - b"\n',  # a quoted scalar over an item's line
        "jobs:\n  - [a,\n  - b]\n",  # a flow list over one
        "jobs:\n  - a\n  - a\n",  # the same item twice: a list may
        "jobs: &all\n  - a\n",  # an anchor on the list
    ],
)
def test_a_mapping_read_in_parts_is_read_whole_or_not_at_all(text: str) -> None:
    """What the parts could read otherwise than the whole text reads is refused (the caller
    reads it whole); what is read is what the whole text holds."""
    got = outcome(in_parts, text)
    assert refused(got) or got == outcome(whole, text), text


_TOKENS = [
    '"',
    "'",
    "[",
    "]",
    "{",
    "}",
    "|",
    "|+",
    ">-",
    "#",
    ": ",
    ":",
    "\n",
    "\n  ",
    "\n    ",
    "\n ",
    "- ",
    "&a ",
    "*a",
    "!!str ",
    "---\n",
    "...\n",
    "\t",
    "\r\n",
    "x: y\n",
    "\n  svc: 1\n",
    "\n\n",
    "? ",
    "<<: ",
]


@pytest.mark.parametrize(
    "shipped", [CATALOG, ROOT / "generated" / "observability" / "prometheus.yml"], ids=["catalog", "scrape jobs"]
)
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_shipped_yaml_broken_anywhere_reads_in_parts_as_whole_or_not_at_all(shipped: Path, data: st.DataObject) -> None:
    """Characters that open, close or continue YAML's constructs, put anywhere into the shipped
    catalog or the local Prometheus configuration (a list of scrape jobs, read a job at a time:
    yamlread.large), and a few characters cut: reading in parts gives what reading the whole
    gives, or is refused."""
    text = shipped.read_text(encoding="utf-8")
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(text)), st.sampled_from(_TOKENS), st.integers(0, 4)), max_size=4)
    )
    for at, token, cut in edits:
        at = min(at, len(text))
        text = text[:at] + token + text[at + cut :]
    got = outcome(in_parts, text)
    assert refused(got) or got == outcome(whole, text)


def test_a_large_document_is_read_again_by_the_parts_an_edit_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """yamlread.large reads a Prometheus configuration of 2,000 scrape jobs as reading it whole
    does (yamlread.load), and after one job's port is edited reads that job alone again; a text
    in_parts refuses is read whole, errors and all."""
    job = '  - job_name: "s{0}"\n    static_configs:\n      - targets: ["127.0.0.1:{0}"]\n'
    jobs = "".join(job.format(i) for i in range(2000))
    text = "global:\n  scrape_interval: 30s\nscrape_configs:\n" + jobs
    assert len(text) >= yamlread.LARGE_FROM
    monkeypatch.setattr(yamlread, "LARGE", yamlread.Memo(yamlread.plain, salt=b"test"))
    calls: list[str] = []
    function = yamlread.LARGE.function
    monkeypatch.setattr(yamlread.LARGE, "function", lambda part: calls.append(part) or function(part))
    assert yamlread.large(text) == yamlread.load(text)
    assert len(calls) == 3 + 2000  # the sections' keys, the global entry and every job
    calls.clear()
    edited = text.replace('"127.0.0.1:1234"', '"127.0.0.1:4321"')
    assert yamlread.large(edited) == yamlread.load(edited) != yamlread.load(text)
    assert calls == [job.format(1234).replace(":1234", ":4321")]
    broken = text.replace('"s7"', '"s7', 1)
    with pytest.raises(yaml.YAMLError) as whole:
        yaml.load(broken, Loader=yamlread.FAST_LOADER)
    with pytest.raises(yaml.YAMLError) as parts:
        yamlread.large(broken)
    assert str(parts.value) == str(whole.value)


HEAD = ("apiVersion", "kind")


def test_the_heading_of_every_shipped_document_is_what_reading_it_whole_gives() -> None:
    """yamlread.heading reads a document only as far as its apiVersion and kind: for every
    document Nexus ships they are what reading the document whole gives."""
    paths = sorted(p for p in (ROOT / "generated").rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    chunks = [c for p in paths for c in yamlread.split(p.read_text(encoding="utf-8"))]
    headed = 0
    for chunk in chunks:
        data = pyyaml(chunk)
        whole = {k: data[k] for k in HEAD if k in data} if isinstance(data, dict) else {}
        assert all(isinstance(v, str) for v in whole.values()), chunk
        assert yamlread.heading(chunk, HEAD) == whole, chunk
        headed += len(whole) == 2
    assert headed > 400  # the manifests, the mesh's and the monitoring's objects


@pytest.mark.parametrize(
    ("text", "head"),
    [
        ("apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n", {"apiVersion": "v1", "kind": "ConfigMap"}),
        # in any order, past values that are lists and mappings, however deep
        ("kind: K\nspec: {x: [1, {y: [2, 3]}], z: {}}\nlist: []\napiVersion: v1\n", {"kind": "K", "apiVersion": "v1"}),
        ("'apiVersion': \"v1\"\nkind: 'K'\n", {"apiVersion": "v1", "kind": "K"}),  # quoted: their text
        ("kind: 1\napiVersion: true\n", {"kind": "1", "apiVersion": "true"}),  # as written, not typed
        ("apiVersion: v1\nkind:\n  nested: x\nother: y\n", {"apiVersion": "v1"}),  # a mapping: left out
        ("apiVersion: v1\nkind: [a, b]\n", {"apiVersion": "v1"}),
        ("apiVersion: v1\n", {"apiVersion": "v1"}),
        ("apiVersion: v1\napiVersion: v2\nkind: K\n", {"apiVersion": "v1", "kind": "K"}),  # the first
        ("- a\n- b\n", {}),
        ("just text\n", {}),
        ("", {}),
        ("# a comment\n", {}),
        # the rest is never read: what does not parse there is the checks' to say
        ("apiVersion: v1\nkind: K\nbroken: [unclosed\n", {"apiVersion": "v1", "kind": "K"}),
        ("apiVersion: v1\nkind: K\n---\nsecond: document\n", {"apiVersion": "v1", "kind": "K"}),
        # what reading the document whole would tell otherwise: left to it
        ("a: [unclosed\napiVersion: v1\nkind: K\n", None),
        ("apiVersion: &a v1\nkind: K\n", None),
        ("base: &b {x: 1}\napiVersion: v1\nkind: K\n", None),
        ("base: {x: *b}\napiVersion: v1\nkind: K\n", None),
        ("apiVersion: !!str v1\nkind: K\n", None),
        ("? [1, 2]\n: x\napiVersion: v1\nkind: K\n", None),
    ],
)
def test_a_heading_reads_the_top_level_scalars_or_leaves_the_document_to_a_whole_reading(
    text: str, head: dict[str, str] | None
) -> None:
    assert yamlread.heading(text, HEAD) == head


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n",
        "one: 1\n---\ntwo: 2\n",  # every document
        "a: [unclosed\n",
        "a: 1\n---\nb: [unclosed\n",  # a broken second document
        "a: 1\n b: 2\n",
        "key: 'unterminated\n",
        "a: !custom 1\n",  # a tag unknown to PyYAML's constructor: well-formed, only not loadable
        "base: &b {x: 1}\nother: *b\n",
        "- a\n-b: [\n",
        "",
    ],
)
def test_a_syntax_check_fails_as_walking_the_events_fails(text: str) -> None:
    """yamlread.check_syntax (libyaml's raw_parse, in C) fails exactly where walking the parser's
    events fails, with the same error type; so does its fallback for a loader without it."""

    def walked(loader: Any) -> type[Exception] | None:
        try:
            for _ in yaml.parse(text, Loader=loader):
                pass
        except yaml.YAMLError as exc:
            return type(exc)
        return None

    def checked(loader: Any) -> type[Exception] | None:
        try:
            yamlread.check_syntax(text, loader)
        except yaml.YAMLError as exc:
            return type(exc)
        return None

    assert hasattr(yamlread.FAST_LOADER(""), "raw_parse")  # the C path is the one taken
    assert checked(yamlread.FAST_LOADER) == walked(yamlread.FAST_LOADER)
    assert checked(yaml.SafeLoader) == walked(yaml.SafeLoader)
    assert (checked(yamlread.FAST_LOADER) is None) == (checked(yaml.SafeLoader) is None)


def test_every_shipped_yaml_file_is_well_formed() -> None:
    paths = sorted(p for p in (ROOT / "generated").rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in paths:
        yamlread.check_syntax(path.read_text(encoding="utf-8"))


_DOCUMENT = (
    st.lists(st.sampled_from(["a", ":", " ", "\t", "\n", "-", "x: 1\n", "- y\n", "#", "'"]), max_size=12)
    .map("".join)
    .filter(lambda t: not any(line.rstrip(" \t") == "---" for line in t.split("\n")))
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_DOCUMENT, max_size=200), st.lists(st.sampled_from(["---", "--- ", "---\t"]), min_size=1))
def test_a_texts_runs_hold_its_documents_in_order(documents: list[str], separators: list[str]) -> None:
    """yamlread.runs cuts a text's documents into runs and joins each run's again: splitting the
    runs gives back exactly the documents of the text, in order, whatever its separators."""
    text = documents[0] if documents else ""
    for number, document in enumerate(documents[1:]):
        text += "\n" + separators[number % len(separators)] + "\n" + document
    assert [d for run in yamlread.runs(text) for d in yamlread.split(run)] == yamlread.split(text)


def test_a_document_added_changes_the_runs_around_it_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a run ends depends on the documents alone: one document added to 2,000 leaves every
    run but the one it lands in (and the next, where it ends a run) as it was."""
    monkeypatch.setattr(yamlread, "RUN", 16)
    documents = [f"kind: ServiceMonitor\nmetadata:\n  name: svc-{n:05d}\n" for n in range(2000)]
    before = yamlread.runs("---\n".join(documents))
    after = yamlread.runs("---\n".join([*documents[:1000], "kind: Extra\n", *documents[1000:]]))
    assert len(before) > 50
    assert len(set(after) - set(before)) <= 2 and len(set(before) - set(after)) <= 2


def test_a_file_read_by_runs_again_is_neither_split_nor_hashed_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A memo read by runs (yamlread.by_runs) indexes a file's runs by the file's name: the same
    file read again, in this run or the next (the index is kept with the runs), gives the same
    data without being cut in runs or having any text hashed; one whose runs are not all held,
    or another file, is read by its runs again and indexed anew. ``prefetch_runs`` reads the
    runs of the files not indexed alone."""
    monkeypatch.setattr(yamlread, "RUN", 8)
    docs = [f"kind: Rule\nmetadata:\n  name: rule-{i}\n" for i in range(300)]
    text, other = "---\n".join(docs), "---\n".join([*docs[:150], "kind: Extra\n", *docs[150:]])
    cut, hashed = [], []
    runs, of_bytes = yamlread.runs, digest.of_bytes
    monkeypatch.setattr(yamlread, "runs", lambda t, d=None: cut.append(t) or runs(t, d))
    monkeypatch.setattr(digest, "of_bytes", lambda b: hashed.append(b) or of_bytes(b))
    expected = yamlread.every(text)

    memo = yamlread.Memo(yamlread.every, salt=b"test")
    memo.load(usercache.Shards(tmp_path, bytes, bytes))
    with digest.known([(text, of_bytes(text.encode())), (other, of_bytes(other.encode()))]):
        assert yamlread.by_runs(memo, text) == expected
        assert cut == [text] and len(hashed) == len(runs(text)) > 20  # each run hashed, the file named
        cut.clear(), hashed.clear()
        assert yamlread.by_runs(memo, text) == expected
        assert cut == [] and hashed == []
        memo.save()

        again = yamlread.Memo(yamlread.every, salt=b"test")  # the next run
        again.load(usercache.Shards(tmp_path, bytes, bytes))
        assert yamlread.by_runs(again, text) == expected
        assert cut == [] and hashed == []

        a_run = next(k for k in again.entries if len(again.entries[k]) != 16 * len(runs(text)))
        del again.entries[a_run]  # a run's result not held: read by runs again
        assert yamlread.by_runs(again, text) == expected
        assert cut == [text]
        cut.clear()
        assert yamlread.by_runs(again, text) == expected and cut == []

        assert yamlread.by_runs(again, other) == yamlread.every(other)
        assert cut == [other]
        cut.clear()
        fresh = yamlread.Memo(yamlread.every, salt=b"test")
        fresh.load(usercache.Shards(tmp_path, bytes, bytes))
        with_extra = "---\n".join([*docs, "kind: Last\n"])
        fresh.prefetch_runs([text, with_extra])
        assert cut == [with_extra]
        cut.clear()
        assert yamlread.by_runs(fresh, with_extra) == yamlread.every(with_extra) and cut == []


def test_files_read_by_runs_are_read_as_whole_files_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlays' documents, the components' Kustomizations and the monitors and rules the
    mesh check reads, each kept by runs of documents: the same data as the whole file gives,
    and for a document that does not parse, the very error reading the whole file raises (its
    line in the file, not in the run)."""
    from nexus.checks import documents as checked

    monkeypatch.setattr(yamlread, "RUN", 4)
    monkeypatch.setattr(checked, "RUN", 4)
    loaded = load_catalog(CATALOG)
    ctx = RenderContext(loaded.catalog, loaded.plan)
    files = {**render_k8s.render(ctx), **render_mesh.render(ctx)}
    many = {p: t for p, t in files.items() if p.startswith("k8s/") and len(yamlread.split(t)) >= 8}
    assert any(p.startswith("k8s/overlays/") for p in many) and any("monitoring" in p for p in many)
    for path, text in many.items():
        assert yamlread.mappings(text) == [d for d in map(pyyaml, yamlread.split(text)) if isinstance(d, dict)], path
        assert yamlread.by_runs(k8s_checks.KUSTOMIZATIONS, text) == k8s_checks.kustomizations(text), path
        whole = [(d.text, d.data) for d in checked.documents(path, text)]
        assert whole == [(c, pyyaml(c)) for c in yamlread.split(text) if isinstance(pyyaml(c), dict)], path
        chunks = yamlread.split(text)
        broken = "---".join([*chunks[:5], "\nkind: [unclosed\n", *chunks[5:]])
        for read in (yamlread.mappings, lambda t: yamlread.by_runs(k8s_checks.KUSTOMIZATIONS, t)):
            with pytest.raises(yaml.YAMLError) as found:
                read(broken)
            with pytest.raises(yaml.YAMLError) as expected:
                (yamlread.every if read is yamlread.mappings else k8s_checks.kustomizations)(broken)
            assert str(found.value) == str(expected.value)
