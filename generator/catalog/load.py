"""Load stage: catalog bytes -> plain Python data plus the source position of every key.

PyYAML's own constructor loses positions, silently keeps the last of two duplicate keys,
recurses (a document nested a few thousand levels deep crashes it, and libyaml's C
composer segfaults at ~50,000), and expands aliases without limit ("billion laughs").
So we build the data here from libyaml's *event* stream, which is flat: one pass,
no recursion, positions recorded, duplicates and bombs refused. Scalar typing (int,
bool, null...) is still PyYAML's own resolver and constructor. A plain catalog (no alias, tag
or duplicate key: the usual one) is read faster by yamlread.plain, and its positions are
recorded only when a message needs them.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import yaml

from .. import usercache
from ..errors import CatalogError, Problem
from ..paths import open_catalog
from ..yamlread import FAST_LOADER, PARSED, Memo, Unusual, in_parts, plain

MAX_BYTES = 16 * 1024 * 1024  # a 10,000-service catalog is ~3 MB; anything near this is a mistake
MAX_DEPTH = 64  # the catalog's deepest real path is ~6 levels
MAX_EXPANDED_NODES = 5_000_000  # aliases may share structure, but not multiply it without bound

# Each part of a catalog (yamlread.in_parts: a section, a service) read once across runs, by its
# text: an edit reads again the service it changed. A part is read one level below the top
# (a service's entry under `services:`), so one level less deep is allowed in it; a top-level
# part that needs the last level is read whole, with the rest.
PARTS = Memo(
    partial(plain, text_keys=True, max_depth=MAX_DEPTH - 1, loader=FAST_LOADER),
    salt=PARSED.salt + b"catalog part, max depth %d" % MAX_DEPTH,
    keep_used=True,
)
PARTS_CACHE = "catalog-parts"
# characters: below this the whole text is read in less time than the memo's folder takes to
# read and keep (the shipped catalog: 2 ms against 5 to 10; 10,000 services: 0.24 s against 0.07)
PARTS_FROM = 256 * 1024

_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()
_STR = yaml.resolver.Resolver.DEFAULT_SCALAR_TAG

Path_ = tuple[str | int, ...]


Positions = dict[Path_, tuple[int, int]]


@dataclass
class Source:
    """The loaded document and where each of its parts came from."""

    data: Any
    file: str
    text: str
    # (values, keys): path -> (line, col) of the value at that path (1-based), and of the key
    # that names it; None until a message asks (``_located``)
    positions: tuple[Positions, Positions] | None = field(default=None, repr=False)

    @property
    def values(self) -> Positions:
        return self._located()[0]

    @property
    def keys(self) -> Positions:
        return self._located()[1]

    def _located(self) -> tuple[Positions, Positions]:
        """The positions, read from the text the first time they are asked for: only a message
        about a problem uses them, and recording one for every value was half of loading a
        large catalog (10,000 services: 0.48 s, 0.25 s without)."""
        if self.positions is None:
            located = _build(yaml.parse(self.text, Loader=FAST_LOADER), self.text, self.file, [])
            self.positions = (located.values, located.keys)
        return self.positions

    def where(self, path: Path_) -> tuple[int, int]:
        """Position of the value at ``path``, else of the nearest enclosing part we know."""
        for n in range(len(path), -1, -1):
            sub = tuple(path[:n])
            if sub in self.values:
                return self.values[sub]
        return (1, 1)

    def where_key(self, path: Path_) -> tuple[int, int]:
        return self.keys.get(tuple(path)) or self.where(path)

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        line, col = self.where_key(path) if key else self.where(path)
        return Problem(line, col, dotted(path), message, file=self.file)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class _Frame:
    container: Any
    path: Path_
    anchor: str | None
    mark: tuple[int, int]  # where the container starts
    pending_key: Any = None
    key_mark: tuple[int, int] | None = None
    has_key: bool = False
    size: int = 1


def _mark(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark  # the parser sets one on every event it emits
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _tag(event: yaml.ScalarEvent) -> str:
    tag = event.tag
    if tag is None or tag == "!":
        value = event.value
        if _PLAINLY_TEXT and (not event.implicit[0] or (value and value[0] not in _RESOLVED_FIRST)):
            # what the resolver would answer without a pattern to try: most of a catalog's
            # scalars are names and sentences, and asking it was an eighth of loading one
            return _STR
        tag = _resolver.resolve(yaml.ScalarNode, value, event.implicit)
    return tag


# The first characters PyYAML's implicit resolvers have patterns for; a plain scalar starting
# otherwise, or a quoted one, is text, as long as no resolver matches any first character (None)
# or a path (PyYAML's defaults have neither; another version might).
_RESOLVED_FIRST = frozenset(k for k in yaml.resolver.Resolver.yaml_implicit_resolvers if k)
_PLAINLY_TEXT = None not in yaml.resolver.Resolver.yaml_implicit_resolvers and not _resolver.yaml_path_resolvers


_MERGE = "tag:yaml.org,2002:merge"
_KINDS = {
    "int": "a number",
    "float": "a number",
    "bool": "true/false",
    "null": "null",
    "timestamp": "a date",
    "binary": "bytes",
}


def _key_problem(event: yaml.ScalarEvent, tag: str) -> str | None:
    """Why a scalar cannot be a mapping key as written; None for text.

    Every key of the catalog is a name, and PyYAML's YAML 1.1 types plain scalars: `on:` would
    become True, `0x1f:` and `017:` the numbers 31 and 15, silently renamed by str()."""
    if tag == _MERGE:
        return (
            "merge keys ('<<') are not supported: a merged key could not be located in an error message, and YAML 1.2 "
            "dropped them; write the keys out, or use an alias for a whole value (key: *anchor)"
        )
    if tag == _STR:
        return None
    token = event.value
    if event.tag not in (None, "!"):
        return (
            f"key {token!r} is tagged {tag.replace('tag:yaml.org,2002:', '!!')}; a key is a name (text), so remove "
            "the tag"
        )
    if not token:
        return "a key is empty (YAML reads it as null); write the name"
    kind = _KINDS.get(tag.rsplit(":", 1)[-1], tag)
    try:
        value = _scalar(event, tag)
        if isinstance(value, (bool, int, float)):
            kind = str(value).lower() if isinstance(value, bool) else f"the number {value}"
    except yaml.YAMLError:
        pass  # not even a valid one of its kind: say which kind
    return (
        f"key {token!r} is read by YAML as {kind}, not as the text {token!r}; a key is a name, so quote it "
        f'("{token}") if it is meant as written'
    )


def _scalar(event: yaml.ScalarEvent, tag: str) -> Any:
    if tag == _STR:
        # Most scalars are text, and for text PyYAML's constructor returns the value unchanged;
        # skipping it halves the load time of a large catalog.
        return event.value
    # libyaml's parser gives its own Mark type, with the same fields as PyYAML's (the stubs keep them apart)
    start, end = cast("yaml.Mark | None", event.start_mark), cast("yaml.Mark | None", event.end_mark)
    node = yaml.ScalarNode(tag, event.value, start, end, event.style)
    try:
        return _constructor.construct_object(node, deep=True)
    except (ValueError, KeyError, ArithmeticError) as exc:
        # PyYAML's scalar constructors let plain Python errors out (`!!int abc`, `2001-02-30`,
        # a 5,000-digit number); make them located YAML errors like the parser's own.
        shown = event.value if len(event.value) <= 40 else event.value[:37] + "..."
        short = tag.replace("tag:yaml.org,2002:", "!!")
        raise yaml.constructor.ConstructorError(
            None, None, f"'{shown}' is not a valid {short} ({exc}); quote it if it is meant as text", start
        ) from exc
    finally:
        # the constructor memoises every node it builds; ours are throw-away, so do not keep them
        _constructor.constructed_objects.clear()


class _TooDeep(CatalogError):
    """Our own nesting limit was reached (see load_text for why it is told apart)."""


def load_text(text: str, file: str = "catalog.yaml", *, space: str | None = None) -> Source:
    """Build the document from YAML text. Raises CatalogError for anything unusable.

    A catalog of plain mappings, lists and scalars, the usual one, is read by yamlread.plain,
    its positions left for a message to ask for; with ``space`` (an output folder's space in
    the user's cache, usercache.Shards), part by part, each part read once across runs
    (PARTS, yamlread.in_parts). Anything else it leaves (an alias, a tag, a duplicate key, a
    key that is not text, deep nesting, a YAML error) is read by ``_build``, which records
    every position and finds every problem."""
    readers = (partial(_in_parts, space=space), _plain) if space is not None and len(text) >= PARTS_FROM else (_plain,)
    for read in readers:
        try:
            data = read(text)
        except (Unusual, yaml.YAMLError):
            continue
        return _whole(Source(data, file, text))
    problems: list[Problem] = []  # found before a YAML error stops the reading: reported with it
    try:
        return _whole(_build(yaml.parse(text, Loader=FAST_LOADER), text, file, problems))
    except yaml.MarkedYAMLError as exc:
        # libyaml scans up to 1,024 characters ahead of the events it hands us (a '[' may start
        # a mapping key), so on a line of ~1,000 '[' its own nesting limit (1,000 levels since
        # libyaml 0.2.6) stops it before our MAX_DEPTH check has seen the 65th level. Whatever it
        # said, read the text before the place it stopped once more: the end of the text ends
        # the look-ahead, so our limit, when it is what the text breaks, is met there and gives
        # our message. Only a refused document pays, at libyaml's speed.
        stop = exc.problem_mark or exc.context_mark
        if stop is not None and stop.index > 0:
            try:
                _build(yaml.parse(text[: stop.index], Loader=FAST_LOADER), text, file, [])
            except _TooDeep as deep:
                raise deep from exc
            except (CatalogError, yaml.YAMLError):
                pass  # the cut text is broken in its own way: the first error stands
        line, col = (stop.line + 1, stop.column + 1) if stop else (0, 0)
        what = exc.problem or "invalid YAML"
        hint = _yaml_hint(what, text, stop, exc.context_mark)
        raise CatalogError([*problems, Problem(line, col, "", f"invalid YAML: {what}{hint}", file=file)]) from exc


def _build(events: Any, text: str, file: str, problems: list[Problem]) -> Source:
    """The data and its positions from a stream of YAML events (flat: no recursion).

    Problems that do not stop the reading (duplicate keys) are added to ``problems``.
    """
    src = Source(data=None, file=file, text=text, positions=({}, {}))
    values, keys = src.values, src.keys
    anchors: dict[str, tuple[Any, int]] = {}
    stack: list[_Frame] = []
    expanded = 0
    documents = 0

    def fail(mark: tuple[int, int], path: Path_, message: str) -> CatalogError:
        return CatalogError([*problems, Problem(mark[0], mark[1], dotted(path), message, file=file)])

    def attach(value: Any, mark: tuple[int, int], size: int, new: int | None = None) -> Path_ | None:
        """Put a finished value into the enclosing container; return its path, None for a key.

        ``size`` is the node count of the value (what an alias to it would expand to); ``new``
        is how many of those nodes are counted here for the first time, when not all of them.
        """
        nonlocal expanded
        expanded += size if new is None else new
        if expanded > MAX_EXPANDED_NODES:
            raise fail(
                mark,
                stack[-1].path if stack else (),
                "aliases expand to more than 5,000,000 nodes (a YAML alias bomb?); write the data out instead of "
                "nesting aliases",
            )
        if not stack:
            src.data = value
            values[()] = mark
            return ()
        top = stack[-1]
        top.size += size
        if isinstance(top.container, list):
            path = (*top.path, len(top.container))
            top.container.append(value)
            values[path] = mark
            return path
        if not top.has_key:
            if isinstance(value, (dict, list)):
                raise fail(mark, top.path, "a mapping key must be a plain value, not a mapping or a list")
            top.pending_key, top.key_mark, top.has_key = value, mark, True
            return None
        key, key_mark = top.pending_key, top.key_mark or mark
        skey = key if isinstance(key, str) else str(key)
        path = (*top.path, skey)
        if skey in top.container:
            first = keys.get(path, (0, 0))
            problems.append(
                Problem(
                    key_mark[0],
                    key_mark[1],
                    dotted(path),
                    f"duplicate key '{skey}' (first defined at line {first[0]}); YAML would silently keep only the "
                    "last one, so merge the two or rename one",
                    file=file,
                )
            )
        else:
            top.container[skey] = value
            keys[path] = key_mark
            values[path] = mark
        top.has_key = False
        return path

    try:
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise fail(
                        _mark(event),
                        (),
                        "the catalog must be one YAML document; remove the '---' that starts a second one",
                    )
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    mark = _mark(event)
                    message = f"nesting deeper than {MAX_DEPTH} levels; the catalog never needs more than a few"
                    raise _TooDeep([*problems, Problem(mark[0], mark[1], dotted(stack[-1].path), message, file=file)])
                container: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
                parent_path = stack[-1].path if stack else ()
                top = stack[-1] if stack else None
                if top is not None and isinstance(top.container, dict) and top.has_key:
                    path: Path_ = (*parent_path, str(top.pending_key))
                elif top is not None and isinstance(top.container, list):
                    path = (*parent_path, len(top.container))
                else:
                    path = parent_path
                stack.append(_Frame(container, path, event.anchor, _mark(event)))
                values.setdefault(path, _mark(event))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frame = stack.pop()
                if frame.anchor:
                    anchors[frame.anchor] = (frame.container, frame.size)
                # at its own start (a container used as a key has no path of its own); its
                # children were counted as they came, so only the container itself is new
                attach(frame.container, frame.mark, frame.size, new=1)
            elif isinstance(event, yaml.ScalarEvent):
                tag = _tag(event)
                top = stack[-1] if stack else None
                if (
                    top is not None
                    and isinstance(top.container, dict)
                    and not top.has_key
                    and (why := _key_problem(event, tag))
                ):
                    at = _mark(event)
                    problems.append(Problem(at[0], at[1], dotted((*top.path, event.value)), why, file=file))
                    value: Any = event.value  # go on with the key as written, to report the rest too
                else:
                    value = _scalar(event, tag)
                if event.anchor:
                    anchors[event.anchor] = (value, 1)
                attach(value, _mark(event), 1)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise fail(
                        _mark(event),
                        stack[-1].path if stack else (),
                        f"alias *{event.anchor} names no anchor defined before it",
                    )
                value, size = anchors[event.anchor]
                top = stack[-1] if stack else None
                if (
                    top is not None
                    and isinstance(top.container, dict)
                    and not top.has_key
                    and not isinstance(value, (str, dict, list))
                ):
                    at = _mark(event)
                    problems.append(
                        Problem(
                            at[0],
                            at[1],
                            dotted((*top.path, str(value))),
                            f"key *{event.anchor} is {value!r}, not text; a key is a name, so write it out",
                            file=file,
                        )
                    )
                    value = str(value)
                attach(value, _mark(event), size)
    except yaml.MarkedYAMLError:
        raise  # load_text translates it, after telling libyaml's nesting limit from ours
    except yaml.reader.ReaderError as exc:
        raise CatalogError([*problems, _not_allowed(exc, text, file)]) from exc
    except yaml.YAMLError as exc:  # other unmarked errors (rare): keep the text, drop the traceback
        raise CatalogError([*problems, Problem(0, 0, "", f"invalid YAML: {exc}", file=file)]) from exc

    if problems:
        raise CatalogError(problems)
    return src


def _plain(text: str) -> Any:
    return plain(text, text_keys=True, max_depth=MAX_DEPTH, loader=FAST_LOADER)


def _in_parts(text: str, space: str) -> Any:
    PARTS.load(usercache.Shards.space(bytes, bytes, space, "memos", f"{PARTS_CACHE}-{PARTS.version}"))
    try:
        return in_parts(text, PARTS)
    finally:
        PARTS.save()  # what was read: the parts of a text read whole after all are kept too


def _whole(src: Source) -> Source:
    """``src`` when it is a catalog's shape (a mapping with something in it), else why not."""
    if src.data is None or src.data == {}:  # `{}` says nothing more than an empty file
        raise CatalogError(
            [
                Problem(
                    0,
                    0,
                    "",
                    "the catalog is empty; it must be a mapping with at least 'platform', 'teams', 'categories', "
                    "'stages' and 'services'",
                    file=src.file,
                )
            ]
        )
    if not isinstance(src.data, dict):
        kind = "a list" if isinstance(src.data, list) else f"a single value ({type(src.data).__name__})"
        raise CatalogError(
            [
                Problem(
                    1,
                    1,
                    "",
                    f"the catalog is {kind}; it must be a mapping of sections such as 'platform:' and 'services:'",
                    file=src.file,
                )
            ]
        )
    return src


def _yaml_hint(problem: str, text: str, mark: Any, context: Any) -> str:
    """libyaml's messages are terse; add what a person needs to fix the two commonest slips."""
    char = text[mark.index] if mark is not None and 0 <= mark.index < len(text) else ""
    if char == "\t" or "\\t" in problem:
        return " (a tab; YAML indents with spaces only, so replace it with spaces)"
    if "expected ',' or" in problem and context is not None:
        return f" (the bracket opened at line {context.line + 1}, column {context.column + 1} is not closed)"
    return ""


# what a character YAML refuses is, by its Unicode category (YAML allows tab, line breaks and
# every printable character; the reader refuses the rest before anything is parsed)
_REFUSED_KINDS = {"Cc": "a control character", "Cs": "a lone surrogate", "Cn": "a noncharacter"}


def _not_allowed(exc: yaml.reader.ReaderError, text: str, file: str) -> Problem:
    """A character YAML does not allow, where it is. libyaml's reader names it by code point
    and a byte offset into the UTF-8 text (PyYAML's own reader by a character offset), never a
    line: the reader refuses the character wherever it stands, so the first in the text is the
    one it met."""
    code = exc.character
    index = text.find(chr(code)) if isinstance(code, int) else -1
    if index < 0:
        return Problem(0, 0, "", f"invalid YAML: {exc.reason}", file=file)
    line, col = _line_col(text, index)
    kind = _REFUSED_KINDS.get(unicodedata.category(text[index]), "a character YAML does not allow")
    return Problem(line, col, "", f"character U+{code:04X} ({kind}) is not allowed in YAML; remove it", file=file)


def _line_col(text: str, index: int) -> tuple[int, int]:
    """The 1-based line and column (in characters, as an editor counts them) of ``index``."""
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def load_file(path: str | Path, raw: bytes | None = None, *, space: str | None = None) -> Source:
    """Read and load a catalog file, refusing oversized or non-UTF-8 input before parsing.
    ``raw``: the file's bytes, when the caller read them already (and hashed them: what it
    loads is then exactly what it hashed, whatever the file holds by now). ``space``: see
    ``load_text``."""
    p = Path(path)
    name = str(path)
    try:
        size = len(raw) if raw is not None else p.stat().st_size
        if raw is None and size <= MAX_BYTES:
            # read at most one byte past the limit: a pipe or /dev/zero has no size to check
            with os.fdopen(open_catalog(p), "rb") as f:
                raw = f.read(MAX_BYTES + 1)
                if not raw and stat.S_ISFIFO(os.fstat(f.fileno()).st_mode):
                    raise CatalogError([Problem(0, 0, "", "is a named pipe that nothing wrote to", file=name)])
            size = max(size, len(raw))
        if size > MAX_BYTES:
            raise CatalogError(
                [
                    Problem(
                        0,
                        0,
                        "",
                        f"the file is {size / 1e6:.1f} MB; a catalog is at most {MAX_BYTES // (1024 * 1024)} MiB "
                        "(10,000 services take about 3 MB)",
                        file=name,
                    )
                ]
            )
    except FileNotFoundError as exc:
        raise CatalogError(
            [
                Problem(
                    0,
                    0,
                    "",
                    "no such file; pass --catalog PATH or run from the folder that holds catalog.yaml",
                    file=name,
                )
            ]
        ) from exc
    except IsADirectoryError as exc:
        raise CatalogError([Problem(0, 0, "", "is a directory; pass the catalog file itself", file=name)]) from exc
    except OSError as exc:
        raise CatalogError([Problem(0, 0, "", f"cannot be read: {exc.strerror}", file=name)]) from exc
    assert raw is not None  # read above, or refused as too large
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")  # every byte before the first wrong one is UTF-8
        line, col = _line_col(before, len(before))
        raise CatalogError(
            [Problem(line, col, "", f"byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8", file=name)]
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    return load_text(text, name, space=space)
