"""Load stage: YAML text -> data with positions; hostile and malformed YAML refused, located."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from broken import at
from conftest import CATALOG, MINIMAL, dump, synthetic
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.catalog import load
from nexus.catalog.load import load_file, load_text
from nexus.errors import CatalogError
from nexus.yamlread import Memo

# its services last: a service added at the end is a part of its own
MINIMAL_TEXT = dump({**{k: v for k, v in MINIMAL.items() if k != "services"}, "services": MINIMAL["services"]})


def problems_of(text: str) -> list:
    with pytest.raises(CatalogError) as info:
        load_text(text, "catalog.yaml")
    return info.value.problems


def test_loads_the_same_data_as_pyyaml(minimal):
    assert load_text(dump(minimal)).data == MINIMAL


def test_records_the_position_of_values_and_keys(minimal):
    text = dump(minimal)
    src = load_text(text)
    for path, needles in [
        (("services", "auth", "port"), ("\n  auth:\n", "4001")),
        (("flows", "watch", "hops", 2), ("watch:", "external: cdn")),
        (("stages", 1, "services", 0), ("name: core", "- auth", "auth")),
        (("platform", "gateway"), ("gateway: ", "gateway\n")),
    ]:
        assert f"catalog.yaml:{src.where(path)[0]}:{src.where(path)[1]}" == at(text, *needles), path
    assert src.where_key(("services", "media")) == tuple(
        int(x) for x in at(text, "\n  media:\n", "media").split(":")[1:]
    )


def _full(text: str) -> load.Source:
    """What the reader that records every position reads (the one a problem goes to)."""
    return load._build(yaml.parse(text, Loader=load.FAST_LOADER), text, "catalog.yaml", [])


def test_a_plain_catalog_is_located_only_when_a_message_asks(minimal, monkeypatch):
    text = dump(minimal)
    located = _full(text)
    full = []
    monkeypatch.setattr(load, "_build", lambda *args: full.append(args) or located)
    src = load_text(text)
    assert src.positions is None and full == []  # read by yamlread.plain: nothing located yet
    port = src.where(("services", "auth", "port"))
    assert len(full) == 1 and src.positions == located.positions
    assert f"catalog.yaml:{port[0]}:{port[1]}" == at(text, "\n  auth:\n", "4001")
    src.where_key(("services", "media"))
    assert len(full) == 1  # located once


def test_the_shipped_and_a_synthetic_catalog_read_the_same_either_way():
    for text in (CATALOG.read_text(encoding="utf-8"), synthetic(300)):
        fast = load_text(text)
        assert fast.positions is None
        assert repr(fast.data) == repr(_full(text).data)  # repr: True is not 1, key order kept


def test_an_edit_reads_again_only_the_part_it_changed(tmp_path, monkeypatch):
    """With a cache space, each part of the catalog (a section, a service) is read once across
    runs: an edit reads the service it changed, and what is kept is the catalog's parts as
    they are now (an earlier version of a part is not kept). In a cache folder of its own: a
    new space starts from the most recently used one, which a test before it in the same
    worker may have filled with the very sections of the synthetic catalog."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    memo = Memo(load.PARTS.function, load.PARTS.salt, keep_used=True)
    monkeypatch.setattr(load, "PARTS", memo)
    monkeypatch.setattr(load, "PARTS_FROM", 0)
    read: list[str] = []
    function = memo.function
    monkeypatch.setattr(memo, "function", lambda part: read.append(part) or function(part))
    path = tmp_path / "catalog.yaml"
    text = synthetic(40)
    space = tmp_path.name  # this test's own space in the cache folder

    def run(catalog: str) -> list[str]:
        path.write_text(catalog, encoding="utf-8")
        memo.entries.clear()  # a new process: only what the cache folder holds
        memo.used.clear()
        read.clear()
        assert load_file(path, space=space).data == load_text(catalog).data
        return list(read)

    parts = run(text)
    assert "".join(parts) == text and len(parts) > 40  # each section's entries, each service: once
    assert run(text) == []
    edited = text.replace("description: Synthetic service 7\n", "description: Edited\n")
    assert edited != text
    (part,) = run(edited)
    assert part.startswith("  svc-00007:\n") and "description: Edited\n" in part
    assert run(edited) == [] and len(memo.entries) == len(parts)


@pytest.mark.parametrize(
    "text",
    [
        MINIMAL_TEXT + "  auth:\n    port: 1\n",  # a service twice, in two parts
        MINIMAL_TEXT + "  extra: &x {port: 1}\n  more: *x\n",  # an alias to another part
        MINIMAL_TEXT + "  extra:\n    port: [1\n",  # a YAML error in one part
        MINIMAL_TEXT + "  extra:\n    port: " + "[" * 63 + "]" * 63 + "\n",  # too deep in the whole
        MINIMAL_TEXT.replace("services:", "services: &s"),
    ],
    ids=["duplicate", "alias", "yaml-error", "too-deep", "anchor"],
)
def test_a_catalog_read_in_parts_is_read_or_refused_as_when_read_whole(text, tmp_path, monkeypatch):
    """Whatever the parts cannot read as the whole text reads, the whole text is read: the same
    data, or the same problems at the same places."""
    monkeypatch.setattr(load, "PARTS_FROM", 0)

    def result(space):
        try:
            return load_text(text, space=space).data
        except CatalogError as exc:
            return [(p.line, p.column, p.path, p.message) for p in exc.problems]

    assert result(tmp_path.name) == result(None)


@pytest.mark.parametrize(
    "text",
    [
        "platform: &p {name: x}\nother: *p\n",  # an anchor and an alias
        "platform: !!str x\n",  # a tag
        "platform:\n  date: 2001-12-14\n",  # a timestamp
        "a: {" * 65 + "b: 1" + "}" * 65 + "\n",  # deeper than MAX_DEPTH
    ],
)
def test_what_the_plain_reader_leaves_is_read_located(text):
    """Anything yamlread.plain leaves is read by the reader that records positions, at once."""
    if text.startswith("a: {"):
        (problem,) = problems_of(text)
        assert f"nesting deeper than {load.MAX_DEPTH} levels" in problem.message
        return
    src = load_text(text)
    assert src.positions is not None and src.data == _full(text).data


def test_position_of_a_missing_part_is_its_nearest_parent(minimal):
    src = load_text(dump(minimal))
    assert src.where(("services", "auth", "no-such-key")) == src.where(("services", "auth"))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: 3001", 3001),
        ("a: '3001'", "3001"),
        ("a: true", True),
        ("a: yes", True),  # YAML 1.1, as PyYAML reads it
        ("a: ~", None),
        ("a: 0x10", 16),
        ("a: 1.5", 1.5),
        ("a: x # comment", "x"),
    ],
)
def test_scalars_are_typed_as_pyyaml_types_them(text, value):
    assert load_text(text).data == {"a": value}


def test_text_is_kept_exactly():
    value = "He said \"{{ name }}\" {% if x %}: yes # not a comment, 'single' \\ é"
    assert load_text(dump({"d": value})).data == {"d": value}


# -- duplicate keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "needles", "first_line"),
    [
        ("a: 1\nb: 2\na: 3\n", "a", ("b: 2\n", "a"), 1),
        ("services:\n  x:\n    port: 1\n    port: 2\n", "services.x.port", ("port: 2",), 3),
        ("s:\n  x: {k: hard, j: soft, k: soft}\n", "s.x.k", ("j: soft, ", "k"), 2),
        ("l:\n- a: 1\n  a: 1\n", "l[0].a", ("\n  a: 1", "a"), 2),
    ],
    ids=["top-level", "nested", "flow-mapping", "in-a-list"],
)
def test_duplicate_keys_are_rejected(text, path, needles, first_line):
    (problem,) = problems_of(text)
    assert problem.path == path
    assert f"catalog.yaml:{problem.line}:{problem.column}" == at(text, *needles)
    assert (
        f"duplicate key '{path.rsplit('.', 1)[-1].split(']')[-1]}' (first defined at line {first_line})"
        in problem.message
    )


def test_every_duplicate_key_is_reported():
    problems = problems_of("a: 1\na: 2\nb:\n  c: 1\n  c: 2\nb: 3\n")
    assert [(p.line, p.path) for p in problems] == [(2, "a"), (5, "b.c"), (6, "b")]


# -- malformed and hostile documents ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("", None, r"the catalog is empty"),
        ("# nothing but a comment\n", None, r"the catalog is empty"),
        ("~\n", None, r"the catalog is empty"),
        ("just text\n", "1:1", r"the catalog is a single value \(str\)"),
        ("3001\n", "1:1", r"the catalog is a single value \(int\)"),
        ("- a\n- b\n", "1:1", r"the catalog is a list"),
        ("a: 1\n---\nb: 2\n", "2:1", r"must be one YAML document"),
        ("a:\n\tb: 1\n", "2:1", r"a tab; YAML indents with spaces only"),
        ("a: [1, 2\nb: 3\n", "2:2", r"the bracket opened at line 1, column 4 is not closed"),
        ("a: {b: 1\n", "2:1", r"invalid YAML"),
        ("a: 'open\n", "2:1", r"invalid YAML: found unexpected end of stream"),
        ("a: *nowhere\n", "1:4", r"alias \*nowhere names no anchor defined before it"),
        ("? [a, b]\n: 1\n", "1:3", r"a mapping key must be a plain value"),
        ("x:\n  a: 1\n  ? {b: 1}\n  : 2\n", "3:5", r"a mapping key must be a plain value"),
        ("a: !!python/object:os.system x\n", "1:4", r"could not determine a constructor"),
        ("a: !!int abc\n", "1:4", r"'abc' is not a valid !!int"),
        ("a: !!bool maybe\n", "1:4", r"'maybe' is not a valid !!bool"),
        ("a: 2001-02-30\n", "1:4", r"'2001-02-30' is not a valid !!timestamp \(day is out of range"),
        ("a: " + "9" * 5000 + "\n", "1:4", r"is not a valid !!int"),
        ("{}\n", None, r"the catalog is empty"),
        ("0x1f: 1\n", "1:1", r"key '0x1f' is read by YAML as the number 31, not as the text '0x1f'"),
        ("s:\n  017: 1\n", "2:3", r"key '017' is read by YAML as the number 15"),
        (
            "on: 1\n",
            "1:1",
            r"key 'on' is read by YAML as true, not as the text 'on'; a key is a name, so quote it \(\"on\"\)",
        ),
        ("s: {1.5: x}\n", "1:5", r"key '1\.5' is read by YAML as the number 1\.5"),
        ("~: 1\n", "1:1", r"key '~' is read by YAML as null"),
        ("2001-01-01: 1\n", "1:1", r"key '2001-01-01' is read by YAML as a date"),
        ("!!int 7: 1\n", "1:1", r"key '7' is tagged !!int; a key is a name \(text\), so remove the tag"),
        ("a: &n 5\nb: {*n : 1}\n", "2:5", r"key \*n is 5, not text"),
        (
            "a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\n",
            "3:3",
            r"merge keys \('<<'\) are not supported.*use an alias for a whole value \(key: \*anchor\)",
        ),
        # libyaml names these by a byte offset, never a line: the column counts characters
        ("a: é\nb: x\x00y\n", "2:5", r"^character U\+0000 \(a control character\) is not allowed in YAML; remove it$"),
        ("a: 🙂🙂\nb: \x7f\n", "2:4", r"^character U\+007F \(a control character\) is not allowed"),
        ("# a\x1b[1mbold\x1b[0m comment\na: 1\n", "1:4", r"^character U\+001B \(a control character\)"),
        ("a: '\ufffe'\n", "1:5", r"^character U\+FFFE \(a noncharacter\) is not allowed"),
    ],
    ids=[
        "empty",
        "only-comment",
        "null",
        "scalar-text",
        "scalar-number",
        "list",
        "two-documents",
        "tab",
        "unclosed-bracket",
        "unclosed-brace",
        "unclosed-quote",
        "unknown-alias",
        "complex-key",
        "complex-key-nested",
        "python-tag",
        "bad-int",
        "bad-bool",
        "bad-date",
        "huge-int",
        "empty-mapping",
        "key-hexadecimal",
        "key-octal",
        "key-on",
        "key-float",
        "key-null",
        "key-date",
        "key-tagged",
        "key-alias",
        "merge-key",
        "control-character",
        "control-character-after-an-emoji",
        "control-character-in-a-comment",
        "noncharacter",
    ],
)
def test_unusable_documents_are_refused_with_a_location(text, where, message):
    (problem,) = problems_of(text)
    if where is None:
        assert problem.line == 0 and str(problem).startswith("catalog.yaml: ")
    else:
        assert f"{problem.line}:{problem.column}" == where
        assert str(problem).startswith(f"catalog.yaml:{where}:")
    assert re.search(message, problem.message), problem.message


def test_every_retyped_key_is_reported_in_one_run_at_its_token():
    text = "services:\n  0x1f: {}\n  017: {}\n  on: {}\n  fine: {}\n"
    problems = problems_of(text)
    assert [(p.line, p.column, p.path) for p in problems] == [
        (2, 3, "services.0x1f"),
        (3, 3, "services.017"),
        (4, 3, "services.on"),
    ]


@pytest.mark.parametrize("text", ["'0x1f': 1\n", '"017": 1\n', "!!str on: 1\n", "'<<': 1\n"])
def test_keys_written_as_text_stay_as_written(text):
    ((key, value),) = load_text(text).data.items()
    assert key == yaml.safe_load(text).popitem()[0] and isinstance(key, str) and value == 1


def _bomb(levels: int = 10, width: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_before_it_expands():
    # 10**10 strings if expanded; the guard counts what aliases would expand to
    (problem,) = problems_of(_bomb())
    assert problem.line > 0
    assert "alias bomb" in problem.message


def test_the_alias_limit_counts_nodes_not_nesting(monkeypatch):
    # a big alias-free catalog must never look like a bomb: each node counts once, however deep
    monkeypatch.setattr(load, "MAX_EXPANDED_NODES", 1000)
    deep_and_plain = "".join(f"k{i}: {{a: {{b: {{c: {{d: [1, 2, 3]}}}}}}}}\n" for i in range(60))  # 781 nodes, 6 deep
    assert len(load_text(deep_and_plain).data) == 60
    with pytest.raises(CatalogError, match="alias bomb"):
        load_text("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(f"b{i}: *a\n" for i in range(120)))


def test_aliases_that_share_a_little_structure_are_fine():
    data = load_text("base: &b {cpu: 100m}\nx: *b\ny: *b\n").data
    assert data["x"] == data["y"] == {"cpu": "100m"}


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_refused_not_recursed(opener):
    depth = 5000
    if opener == "- ":
        text = "".join("  " * i + "- \n" for i in range(depth))  # block style: a list in a list...
    else:
        closer = "]" if opener == "[" else "}"
        text = opener * depth + "1" + closer * depth + "\n"
    (problem,) = problems_of(text)
    assert f"nesting deeper than {load.MAX_DEPTH} levels" in problem.message
    assert problem.line >= 1


class _Refusing(yaml.SafeLoader):
    """A parser that, like libyaml since 0.2.6, refuses a document before handing over the events
    that would reach our limit, in words of its own."""

    def check_event(self, *choices):
        if self.tokens_taken == 0 and "[" * 200 in self.buffer:
            where = self.buffer.index("[" * 200) + 199  # at the 200th level, as libyaml at its 1,000th
            mark = yaml.Mark("catalog.yaml", where, 0, where, None, None)
            raise yaml.scanner.ScannerError("while scanning", mark, "some words of a future version", mark)
        return super().check_event(*choices)


@pytest.mark.parametrize("depth", [200, 100_000])
def test_deep_nesting_gets_our_message_whatever_the_parser_says(monkeypatch, depth):
    monkeypatch.setattr(load, "FAST_LOADER", _Refusing)
    (problem,) = problems_of("a:\n  b: " + "[" * depth + "]" * depth + "\n")
    # the 63rd '[' opens level 65 (the two mappings are levels 1 and 2); it sits in the 62nd list
    assert (problem.line, problem.column, problem.path) == (2, 6 + 62, "a.b" + "[0]" * 61)
    assert f"nesting deeper than {load.MAX_DEPTH} levels" in problem.message
    # any other refusal is passed on as the parser worded it, with its place
    (problem,) = problems_of("a: 1  # " + "[" * 200 + "\n")
    assert (problem.line, problem.column) == (1, 8 + 200)
    assert problem.message == "invalid YAML: some words of a future version"


def test_nesting_up_to_the_limit_is_fine():
    lists = load.MAX_DEPTH - 1  # inside the top-level mapping
    assert load_text("a: " + "[" * lists + "]" * lists).data["a"] is not None
    with pytest.raises(CatalogError, match="nesting deeper"):
        load_text("a: " + "[" * (lists + 1) + "]" * (lists + 1))


# -- files ----------------------------------------------------------------------------------------


def test_non_utf8_bytes_are_located(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(CatalogError, match=re.escape(f"{path}:2:7: byte 0xe9 is not UTF-8")):
        load_file(path)


def test_byte_order_mark_is_accepted(tmp_path, minimal):
    path = tmp_path / "catalog.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + dump(minimal).encode())
    assert load_file(path).data == MINIMAL


def test_oversized_file_is_refused_unread(tmp_path):
    path = tmp_path / "catalog.yaml"
    with path.open("wb") as f:
        f.truncate(load.MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(CatalogError, match=r"the file is 16\.8 MB; a catalog is at most 16 MiB"):
        load_file(path)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_input_is_refused_after_the_limit():
    # stat() says 0 bytes for a device or a pipe; reading must still stop at the limit
    with pytest.raises(CatalogError, match=r"a catalog is at most 16 MiB"):
        load_file("/dev/zero")


@pytest.mark.parametrize(("make", "message"), [("missing", r"no such file"), ("directory", r"is a directory")])
def test_unreadable_paths_are_user_errors(tmp_path, make, message):
    path = tmp_path / "catalog.yaml"
    if make == "directory":
        path.mkdir()
    with pytest.raises(CatalogError, match=message) as info:
        load_file(path)
    assert info.value.problems[0].file == str(path)


@settings(max_examples=2000, deadline=None)
@given(
    value=st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            ["", "~", "null", "yes", "No", "on", "0x1f", "017", "1e3", ".inf", "-.5", "2001-02-03", "<<", "="]
        ),
    ),
    plain=st.booleans(),
    tag=st.sampled_from([None, "!"]),
)
def test_a_scalars_tag_is_the_one_pyyamls_resolver_gives(value: str, plain: bool, tag: str | None) -> None:
    """load._tag skips PyYAML's resolver where it has no pattern to try (a quoted scalar, a
    plain one whose first character no pattern starts with): the same tag either way."""
    event = yaml.ScalarEvent(None, tag, (plain, not plain), value)
    assert load._tag(event) == yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (plain, not plain))
