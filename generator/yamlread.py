"""Reading YAML: libyaml's loader, a faster builder for the documents Nexus rendered itself, and
a memo that keeps what was read between runs and reads on every core when there is much to read.

Every module that reads YAML takes its loader from here (``FAST_LOADER``). The catalog has its
own event reader (catalog.load: positions for error messages); rendered output is read with
``load``.
"""

from __future__ import annotations

import hashlib
import itertools
import marshal
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from . import usercache
from .digest import of_text
from .parallel import ordered_map

# libyaml's C loader where PyYAML was built with it: the same YAML, about ten times faster.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_SEPARATOR = re.compile(r"^---[ \t]*$", re.M)


def split(text: str) -> list[str]:
    """A rendered file's documents' texts (templates never put '---' in a value). A large
    text's, while the checks read (``held``), are made once: the caller must not change them."""
    found = _held(_SPLITS, text)
    if found is not None:
        return found
    # most files are one document: a substring search answers for them three times faster than
    # the expression (10,000 Backstage descriptors on every edit: 58 -> 19 ms)
    documents = _SEPARATOR.split(text) if "---" in text else [text]
    return _hold(_SPLITS, text, documents)


# Each large text's documents (``split``) and runs (``runs``), by the very text object, while
# ``held`` holds them: a file over every service (a monitoring file of 10,000 rules, an
# overlay's 10,000 patches) is split by several checks, in this process and in the workers
# forked meanwhile, and each split of the 16 MB rules file took 0.07 s of a port edit.
_SPLITS: dict[int, tuple[str, list[str]]] = {}
_RUNS: dict[int, tuple[str, list[str]]] = {}
_holding = False
HELD_FROM = 64 * 1024  # characters: a smaller text is split again about as fast as it is looked up


@contextmanager
def held() -> Iterator[None]:
    """While inside, ``split`` and ``runs`` make each large text's parts once (then dropped)."""
    global _holding
    outer, _holding = _holding, True
    try:
        yield
    finally:
        _holding = outer
        if not outer:
            _SPLITS.clear()
            _RUNS.clear()


def _held(memo: dict[int, tuple[str, list[str]]], text: str) -> list[str] | None:
    found = memo.get(id(text)) if _holding and len(text) >= HELD_FROM else None
    return found[1] if found is not None and found[0] is text else None


def _hold(memo: dict[int, tuple[str, list[str]]], text: str, parts: list[str]) -> list[str]:
    if _holding and len(text) >= HELD_FROM:
        memo[id(text)] = (text, parts)  # the text held with them: its identity stays its own
    return parts


_STR = yaml.resolver.Resolver.DEFAULT_SCALAR_TAG
# plain scalars this builder types itself, with PyYAML's own resolver and constructors; any other
# tag (a timestamp, a merge key, '=') goes to PyYAML's loader whole
_TYPED = frozenset(f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null"))
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()


class Unusual(Exception):
    """Something the fast builder (``plain``) leaves to a fuller reader."""


def load(text: str) -> Any:
    """``yaml.load(text, Loader=FAST_LOADER)``, the same data, in about half the time.

    Why by hand: PyYAML builds a node tree from libyaml's events and then walks it in Python
    with a constructor made for every YAML feature; that walk was most of a cold run's checks
    (100,000 manifests at 10,000 services: 42 s of CPU). The manifests we render use none of the
    features it is for, so this builds the dicts and lists straight from the events, types
    plain scalars with PyYAML's own resolver and constructors (YAML 1.1, as PyYAML reads it),
    and hands anything else (an anchor, an alias, a tag, a merge key, several documents) to
    PyYAML whole. tests/test_yamlread.py compares the two on every shipped file and on
    documents that use each of those features."""
    try:
        return plain(text)
    except Unusual:
        return yaml.load(text, Loader=FAST_LOADER)


def plain(text: str, *, text_keys: bool = False, max_depth: int | None = None, loader: Any = FAST_LOADER) -> Any:
    """The data of a YAML document of plain mappings, lists and scalars, typed as PyYAML types
    them; raises Unusual for anything else: an anchor, an alias, a tag, a merge key, a key that
    is not text or a whole number (with ``text_keys``: not text), a key written twice, nesting
    deeper than ``max_depth``, several documents, a scalar PyYAML's constructor refuses. A
    caller that must say more about those reads the text its own way then (catalog.load:
    positions and every problem). ``loader``: the parser's class, the one that reader uses."""
    parser = loader(text)
    try:
        typed: dict[str, Any] = {}  # plain scalar -> its value: resolving is the costly part, values repeat
        stack: list[Any] = []  # open containers
        keys: list[Any] = []  # each open mapping's key waiting for its value (_NO_KEY: none)
        result: Any = None
        documents = 0
        while parser.check_event():
            event = parser.get_event()
            kind = type(event)
            if kind is ScalarEvent:
                if event.anchor is not None or event.tag not in (None, "!"):
                    raise Unusual
                value: Any = event.value
                if event.implicit[0]:  # plain: typed by its text
                    found = typed.get(value, typed)
                    if found is typed:
                        tag = _resolver.resolve(yaml.ScalarNode, value, (True, False))
                        if tag == _STR:
                            found = sys.intern(value) if len(value) <= _SHARED else value
                        elif tag in _TYPED:
                            try:
                                found = _constructor.construct_object(yaml.ScalarNode(tag, value), deep=True)
                            except (ValueError, KeyError, ArithmeticError) as exc:
                                raise Unusual from exc  # a 5,000-digit number: what it is, the caller's reader says
                            finally:
                                _constructor.constructed_objects.clear()
                        else:
                            raise Unusual
                        typed[value] = found
                    value = found
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.anchor is not None or event.tag is not None:
                    raise Unusual
                if max_depth is not None and len(stack) >= max_depth:
                    raise Unusual
                stack.append({} if kind is MappingStartEvent else [])
                keys.append(_NO_KEY)
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                value = stack.pop()
                keys.pop()
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise Unusual  # PyYAML's own error: expected a single document
                continue
            elif kind in _IGNORED:
                continue
            else:  # an alias
                raise Unusual
            if not stack:
                result = value
            elif type(top := stack[-1]) is list:
                top.append(value)
            elif (key := keys[-1]) is _NO_KEY:
                if type(value) is not str and (text_keys or type(value) is not int):
                    raise Unusual  # a key PyYAML may type differently or refuse (null, a list)
                keys[-1] = sys.intern(value) if type(value) is str else value
            elif key in top:
                raise Unusual  # PyYAML keeps the last; the catalog refuses it, saying where both are
            else:
                top[key] = value
                keys[-1] = _NO_KEY
        return result
    finally:
        parser.dispose()


_NO_KEY = object()


def check_syntax(text: str, loader: Any = FAST_LOADER) -> None:
    """Raise yaml.YAMLError where ``text`` (every document of it) is not well-formed YAML; build
    nothing. libyaml's parser runs over the whole text in C (its ``raw_parse``: 0.1 s for the
    12 MB of a 10,000-service alerting file, against 0.46 s for the same events made into
    Python objects one by one, as ``yaml.parse`` hands them out); a loader without it walks
    the events."""
    parser = loader(text)
    try:
        raw = getattr(parser, "raw_parse", None)
        if raw is not None:
            raw()
        else:
            while parser.check_event():
                parser.get_event()
    finally:
        parser.dispose()


def heading(text: str, keys: tuple[str, ...], loader: Any = FAST_LOADER) -> dict[str, str] | None:
    """The text of each of ``keys`` that the top-level mapping of the YAML document ``text`` gives
    a scalar value, read by libyaml's parser only as far as the last of them is found: a
    manifest's apiVersion and kind come first, and the rest of it is never parsed (a tenth of
    ``load`` for a ServiceMonitor). A key missing, or given a list or a mapping, is left out;
    a document that is not a mapping has none of them. Only the first document is read (``split``
    separates them). None where ``load`` would read more than the text says on its face: an
    anchor, an alias or a tag on the way, a list or a mapping as a key, or YAML that does not
    parse on the way (``load`` says why). A key given twice: the first (``load`` keeps the last;
    Nexus renders neither). A value is its text as written (``kind: 1`` is "1")."""
    parser = loader(text)
    try:
        found: dict[str, str] = {}
        depth = 0  # 1: in the top-level mapping
        key: str | None = None  # the top-level key whose value comes next
        while parser.check_event():
            event = parser.get_event()
            kind = type(event)
            if kind is DocumentStartEvent or kind in _IGNORED:
                continue
            elif kind is ScalarEvent or kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.anchor is not None or event.tag not in (None, "!"):
                    return None
                if depth == 0:
                    if kind is not MappingStartEvent:
                        return found  # a list or a scalar: no keys
                    depth = 1
                elif depth > 1:  # inside a value: only its nesting counts
                    if kind is not ScalarEvent:
                        depth += 1
                elif key is None:  # a top-level key
                    if kind is not ScalarEvent:
                        return None
                    key = event.value
                else:  # its value
                    if kind is ScalarEvent:
                        if key in keys and key not in found:
                            found[key] = event.value
                            if len(found) == len(keys):
                                return found
                        key = None
                    else:
                        depth = 2
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                depth -= 1
                if depth == 1:
                    key = None  # the value just read was a list or a mapping
                elif depth == 0:
                    return found
            else:  # an alias
                return None
        return found
    except yaml.YAMLError:
        return None
    finally:
        parser.dispose()


def top_scalars(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """``heading``, or where it cannot say, the same read from the whole document (``PARSED``):
    the text of each of ``keys`` the document's top-level mapping gives a scalar value."""
    found = heading(text, keys)
    if found is None:
        data = PARSED(text)
        found = (
            {k: str(data[k]) for k in keys if k in data and not isinstance(data[k], (dict, list))}
            if isinstance(data, dict)
            else {}
        )
    return found


# Keys and short texts are interned: marshal keeps that, so the checks' 100,000 manifests share
# one copy of "metadata", "TCP" or a service's name (at 10,000 services: 640 -> 440 MB held).
_SHARED = 64
_IGNORED = (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)


# A line that starts a part of a block mapping (``in_parts``): a key made of these characters,
# then ':' and a space or the line's end. Other keys (quoted, complex, typed) leave the text whole.
_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.-]*:"
_KEY_LINE = re.compile(_KEY + r"(?: |$)", re.M)
_EMPTY_VALUE = re.compile(_KEY + r" *(?:#.*)?$", re.M)  # its value on the lines below
_ITEM = re.compile(r"-(?: |$)")  # a block list's item


def in_parts(text: str, read: Callable[[str], Any]) -> Any:
    """``read(text)`` of a block mapping, made from ``read`` of its parts: each top-level entry,
    and each entry of a top-level mapping or item of a top-level list written on the lines
    below its key, indented (a catalog's services, a Prometheus configuration's scrape jobs).
    ``read`` is a memo (``Memo``) of ``plain``: an edit to one service reads that service
    again, not 10,000 (0.25 s of every edit: libyaml's events alone took 0.15).

    Why this is sound. A part is the text from one key line (or, in a list, item line) to the
    next at the same indentation (0, or the first entry's under its section), so it is read
    from the same state the whole text would be read in: at a line's start, outside any
    scalar or flow collection, in a block mapping (or sequence) at that indentation. Anything
    that could carry the reader across that line leaves a part unreadable on its own: a quoted
    scalar or a flow collection left open is an error at the part's end, and a plain or block
    scalar ends at a line indented no deeper than its mapping's key (or its item's dash). A
    list's item reads alone as a list of that one item. An alias (its anchor may be in another
    part), a tag or a key written twice within a part is ``Unusual`` from ``plain``; twice
    across parts is found here. Raises Unusual for any text not laid out so (a document
    marker, a directive, a top level that is not a block mapping, a line indented less than
    its section's entries, a section's entries not all keys or all items) or any part ``read``
    refuses: the caller reads the text whole."""
    if "\r" in text:
        raise Unusual  # line breaks YAML knows and str.split("\n") does not
    lines = text.split("\n")
    # (section's first line, its entries' first lines): each a line's offset in ``text``
    sections: list[tuple[int, list[int]]] = []
    listed: set[int] = set()  # the sections (their first lines) whose entries are a list's items
    indent = 0  # the current section's entries' indentation; 0: not known yet
    at = 0
    for line in lines:
        offset, at = at, at + len(line) + 1
        body = line.lstrip(" ")
        if not body or body[0] == "#":
            continue  # blank, or a comment (or a block scalar's line: either way not a part's start)
        depth = len(line) - len(body)
        if depth == 0:
            if _ITEM.match(line) and sections:
                # a list as the value of a top-level key, written at the key's own indentation
                # (as PyYAML writes it): that section is read whole
                sections[-1] = (sections[-1][0], [])
                indent = -1
                continue
            if _KEY_LINE.match(line) is None:
                raise Unusual
            sections.append((offset, []))
            indent = 0
            continue
        if not sections:
            raise Unusual
        start, entries = sections[-1]
        if indent == 0:
            # entries only under a key whose value is below it, from a first line that is a key
            # (a mapping's) or an item (a list's)
            indent = depth if _EMPTY_VALUE.match(text, start) and (_KEY_LINE.match(body) or _ITEM.match(body)) else -1
            if indent > 0 and _ITEM.match(body):
                listed.add(start)
        if depth == indent:
            if (_ITEM if start in listed else _KEY_LINE).match(body) is None:
                sections[-1] = (start, [])  # not all entries are alike: read whole
                indent = -1
                continue
            entries.append(offset)
        elif depth < indent:
            raise Unusual
    if not sections:
        raise Unusual
    result: dict[str, Any] = {}
    ends = [start for start, _ in sections[1:]] + [len(text)]
    for number, ((start, entries), end) in enumerate(zip(sections, ends, strict=True)):
        # the comments above the first key go with it
        bounds = [0 if number == 0 else start, *entries, end]
        ((key, value),) = _one(read(text[bounds[0] : bounds[1]])).items()
        if entries and start in listed:
            if value is not None:
                raise Unusual
            value = [_item(read(text[a:b])) for a, b in itertools.pairwise(bounds[1:])]
        elif entries:
            if value is not None:
                raise Unusual
            value = {}
            for a, b in itertools.pairwise(bounds[1:]):
                ((child, data),) = _one(read(text[a:b])).items()
                if child in value:
                    raise Unusual
                value[child] = data
        if key in result:
            raise Unusual
        result[key] = value
    return result


def _item(data: Any) -> Any:
    """The item of ``data`` when it is a list of one (what a list's item reads as), else Unusual."""
    if type(data) is not list or len(data) != 1:
        raise Unusual
    return data[0]


def _one(data: Any) -> dict[str, Any]:
    """``data`` when it is a mapping of one entry (what a part reads as), else Unusual."""
    if type(data) is not dict or len(data) != 1:
        raise Unusual
    return data


_KEY_SIZE = 16  # bytes of a Memo's key


class Memo:
    """A pure function of a text, its results kept by the text's hash. Building Python objects
    from YAML is most of what the checks cost, and an edit changes few documents: between runs
    the results are kept in the user's cache folder. Entries are kept marshalled (every read
    gets its own copy, so no check can change another's data) in marshal's format, which runs
    no code when read."""

    def __init__(self, function: Callable[[str], Any], salt: bytes = b"", *, keep_used: bool = False) -> None:
        self.function = function
        self.salt = salt  # what else shapes the results (the function's code), in every key
        # ``save`` keeps only what was read since ``load`` (this run): for a memo that every run
        # reads whole (a catalog's parts), what it did not read is an earlier version, never read again
        self.keep_used = keep_used
        self.entries: dict[bytes, bytes] = {}
        self.used: set[bytes] = set()
        self.added = False
        self.shards: usercache.Shards[bytes, bytes] | None = None  # where ``load`` read the entries

    def key(self, text: str) -> bytes:
        # by the text's name (digest.of_text): a file's is known once digest.of_files named it
        return hashlib.blake2b(self.salt + of_text(text).encode(), digest_size=_KEY_SIZE).digest()

    def __call__(self, text: str) -> Any:
        return self.keyed(self.key(text), text)

    def keyed(self, key: bytes, text: str) -> Any:
        """``self(text)``, its ``key`` computed already."""
        self.used.add(key)
        kept = self.entries.get(key)
        if kept is not None:
            return marshal.loads(kept)
        data = self.function(text)
        if len(self.entries) > 2 * ENTRY_LIMIT:  # a long-lived process (a test session) reads many catalogs
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
        try:
            self.entries[key] = marshal.dumps(data)
            self.added = True
        except ValueError:  # a type marshal does not know (a YAML timestamp): computed again next time
            pass
        return data

    def prefetch(self, texts: Iterable[str], least: int) -> None:
        """Compute, on every core (parallel.ordered_map) when there are at least ``least``, the
        entries of ``texts`` not held yet (all of them count as used by this run). A text whose
        function raises is left out (computing it in the run raises there, where the caller
        reports it)."""
        self._prefetch({self.key(text): text for text in texts}, least)

    def prefetch_runs(self, texts: Iterable[str]) -> None:
        """``prefetch`` of the runs (``runs``) of each of ``texts`` whose runs this memo has not
        indexed (``indexed``), in turn, here; their index made now."""
        wanted: dict[bytes, str] = {}
        for text in texts:
            if self.indexed(text) is None:
                parts = runs(text)
                keys = [self.key(run) for run in parts]
                wanted.update(zip(keys, parts, strict=True))
                self.index(text, keys)
        self._prefetch(wanted, least=len(wanted) + 1)

    def _prefetch(self, wanted: dict[bytes, str], least: int) -> None:
        self.used.update(wanted)  # read by this run, here or in a worker
        misses = sorted((key, text) for key, text in wanted.items() if key not in self.entries)
        found_all = ordered_map(self._marshalled, [t for _, t in misses], least=least)
        for (key, _), found in zip(misses, found_all, strict=True):
            if found is not None:
                self.entries[key] = found
                self.added = True

    # The keys of a file's runs (``by_runs``), by the file's name: a file an edit did not change
    # (at 10,000 services the monitors, the rules, the overlays' patches: 50 MB) is neither
    # split into runs nor are its runs hashed to be looked up again, in this process and in the
    # Kubernetes checks' worker (0.2 s of an edit's main process, as much in the worker).
    def _index_key(self, text: str) -> bytes:
        # by the file's name (digest.of_text): known, not hashed, once digest.of_files named it
        return hashlib.blake2b(self.salt + b"\0runs\0" + of_text(text).encode(), digest_size=_KEY_SIZE).digest()

    def indexed(self, text: str) -> list[bytes] | None:
        """The keys of ``text``'s runs, as a read of the very same text recorded them (``index``),
        while this memo holds every one of them; None otherwise."""
        key = self._index_key(text)
        index = self.entries.get(key)
        if index is None or len(index) % _KEY_SIZE:
            return None
        keys = [index[at : at + _KEY_SIZE] for at in range(0, len(index), _KEY_SIZE)]
        if not all(map(self.entries.__contains__, keys)):
            return None  # a run whose result was not kept (it raised, or marshal refused it)
        self.used.add(key)
        self.used.update(keys)
        return keys

    def index(self, text: str, keys: list[bytes]) -> None:
        """Record ``keys`` as those of ``text``'s runs, in order (``indexed``)."""
        key, index = self._index_key(text), b"".join(keys)
        self.used.add(key)
        if self.entries.get(key) != index:
            self.entries[key] = index
            self.added = True

    def _marshalled(self, text: str) -> bytes | None:
        try:
            return marshal.dumps(self.function(text))
        except (yaml.YAMLError, ValueError):  # an error, or a type marshal does not know: computed in the run
            return None

    @property
    def seeded(self) -> bool:
        """Whether this run's entries came from another space (``Shards.seeded``: a new checkout's
        first run): then ``save`` keeps only what this run used."""
        return self.shards is not None and self.shards.seeded

    @property
    def version(self) -> str:
        """Names what shapes the entries (the salt): the entries of each version are kept in a
        folder of their own, so a code change leaves the old ones behind, unread."""
        return hashlib.blake2b(self.salt, digest_size=8).hexdigest()

    def load(self, shards: usercache.Shards[bytes, bytes]) -> None:
        """Add the entries kept in ``shards`` (an output folder's space; missing, altered or
        unreadable shards: none) and keep them there from now on (``save``). A run's use starts
        here: in a process that runs several (a test session, a server) what an earlier run
        used is not this run's, and its ``save`` kept it in a space it may not belong to."""
        self.shards = shards
        self.entries.update(shards.load())
        self.used = set()
        self.added = False

    def save(self) -> None:
        """Keep the documents for the next run where ``load`` read them: all of them (a run that
        skips a whole area still needs that area's documents after the next edit), or past
        ``ENTRY_LIMIT``, or when the space started from another's (``Shards.seeded``: another
        project's), only the ones this run read, so that old documents do not pile up for ever.
        Only the shards that changed are written."""
        if self.shards is None:
            return
        if self.keep_used:
            self.shards.save({k: v for k, v in self.entries.items() if k in self.used})  # the shards that changed
            return
        seeded = self.seeded
        if self.added or seeded or len(self.entries) > ENTRY_LIMIT:
            kept = (
                self.entries
                if len(self.entries) <= ENTRY_LIMIT and not seeded
                else {k: v for k, v in self.entries.items() if k in self.used}
            )
            self.shards.save(kept)
        else:
            self.shards.keep()


def runs(text: str, documents: list[str] | None = None) -> list[str]:
    """``text``'s documents in consecutive runs, each run's documents joined again by '---'
    lines, so that ``split`` of a run gives its documents back. A run ends at a document whose
    CRC-32 is a multiple of RUN: where runs end depends on the documents alone, so an edit to
    a document changes the run it is in (and, where it moves an end, the next), not every run
    after it. A memo of a function of a file's documents (a file over every service: 10,000
    ServiceMonitors, an overlay's 10,000 patches) kept by run reads again the runs an edit
    changed, where kept by the file it read all of them. ``documents``: ``split(text)``,
    where the caller has it already."""
    found = _held(_RUNS, text)
    if found is not None:
        return found
    out: list[str] = []
    current: list[str] = []
    for document in split(text) if documents is None else documents:
        current.append(document)
        if zlib.crc32(document.encode()) % RUN == 0:
            out.append("---".join(current))
            current = []
    if current or not out:
        out.append("---".join(current))
    return _hold(_RUNS, text, out)


RUN = 64  # documents in a run (``runs``), on average


def by_runs(memo: Memo, text: str, documents: list[str] | None = None) -> list[Any]:
    """``memo.function(text)``, for a function that maps a text's documents to a list, one
    item per document at most and in their order: made of ``memo`` of each of ``runs(text)``.
    Where reading a run raises (a document that does not parse), the function is applied to
    the whole text, so that what it raises names the place in the file."""
    keys = memo.indexed(text)
    if keys is not None:  # read before: its runs' results, neither split nor hashed again
        return [item for key in keys for item in marshal.loads(memo.entries[key])]
    parts = runs(text, documents)
    keys = [memo.key(run) for run in parts]
    try:
        found = [item for key, run in zip(keys, parts, strict=True) for item in memo.keyed(key, run)]
    except yaml.YAMLError:
        whole: list[Any] = memo.function(text)
        return whole
    memo.index(text, keys)
    return found


def every(text: str) -> list[Any]:
    """The data of each of a text's documents, in order. Read, not looked up in PARSED: a run
    is kept whole (FILES), and a run an edit changed is read again in a few milliseconds;
    each document kept as well held a cold run's 30,000 patches and 20,000 monitors and rules
    twice."""
    return list(map(load, split(text)))


def mappings(text: str) -> list[Any]:
    """A file's documents that are mappings, a run of them at a time (FILES)."""
    return [d for d in by_runs(FILES, text) if isinstance(d, dict)]


def prefetch(texts: Iterable[str]) -> None:
    """Read into PARSED, on every core, the documents it does not hold yet, when they are many."""
    PARSED.prefetch(texts, least=PARALLEL_FROM)


PARALLEL_FROM = 3_000  # documents: below this, starting the workers costs more than it saves
ENTRY_LIMIT = 250_000  # documents: 10,000 services render about 110,000
# one per process: the cache file's name carries what shapes the data (PyYAML, its loader, this
# module's builder)
PARSED = Memo(load, salt=hashlib.blake2b(Path(__file__).read_bytes(), digest_size=16).digest())
CACHE_NAME = f"yaml-{yaml.__version__}-{FAST_LOADER.__name__}"
# a file's documents (whole), a run of them at a time (``by_runs``): a file read in full need
# not be split and each of its documents looked up again (the overlays' patches: 10,000
# documents in three files), and an edit reads again the runs it changed
FILES = Memo(every, salt=PARSED.salt + b"runs")
FILES_CACHE = f"{CACHE_NAME}-files"
# the parts of a large document (``in_parts``), each read once across runs: of the local
# Prometheus configuration's 10,000 scrape jobs an edit changes one or two
LARGE = Memo(plain, salt=PARSED.salt + b"parts")
LARGE_CACHE = f"{CACHE_NAME}-parts"
LARGE_FROM = 64 * 1024  # characters: below this a document is read whole (PARSED) as fast


def large(text: str) -> Any:
    """``load(text)`` of one document that may be large, a part of it at a time where
    ``in_parts`` can cut it (LARGE), else whole (PARSED): a port edit or a service added at
    10,000 services read the whole 1 MB configuration again, 0.25 s of the checks."""
    if len(text) < LARGE_FROM:
        return PARSED(text)
    try:
        return in_parts(text, LARGE)
    except (Unusual, yaml.YAMLError):  # what the whole text holds, or the error it raises
        return PARSED(text)
