"""Onboarding stage: `nexus new` adds one service to catalog.yaml, then regenerates.

The catalog is edited as text, never re-dumped: the entry is inserted after the last line of
the `services:` mapping and every other byte of the file stays as it was (comments, blank
lines, quoting). The candidate text is then loaded and validated by the very function
`nexus validate` uses (load_catalog_text), so `new` refuses exactly what `validate` would
refuse, with the same messages, before anything is written. The rules live there, not here.

Order of the writes, so that a refusal changes nothing: validate the candidate in memory;
replace catalog.yaml atomically; run `generate()`. generate checks everything before it
writes and swaps generated/ in one rename; if it refuses (a hand-edited file, a failed
check), the old catalog.yaml is put back, so both are as they were.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .. import collector, usercache
from ..catalog import Loaded, load_catalog_text
from ..catalog.load import Source, load_file, load_text
from ..catalog.models import Catalog
from ..catalog.ports import next_port
from ..catalog.validate import parse, validate
from ..errors import CatalogError, NexusError, RefusedError, not_utf8
from ..paths import output_folder
from ..write import fix_for, locked, refuse_holding, refuse_link

if TYPE_CHECKING:
    from ..pipeline import Result

DEFAULT_DESCRIPTION = "A new Nexus service"  # the service template's own default (cookiecutter.json)

# Which argument of `nexus new` set each key of the entry: a refusal names the argument.
_ARGUMENT = {
    "port": "--port",
    "category": "--category",
    "team": "--team",
    "stage": "--stage",
    "description": "--description",
    "depends_on": "--depends-on",
}


@dataclass(frozen=True)
class NewService:
    """What `nexus new` was asked for. ``port`` None: the next free one in the category's block."""

    name: str
    category: str
    team: str
    port: int | None = None
    depends_on: dict[str, str] = field(default_factory=dict)  # dependency -> "hard" | "soft"
    description: str = DEFAULT_DESCRIPTION
    stage: str | None = None


@dataclass
class Candidate:
    """The catalog text with the service added, validated."""

    text: str
    loaded: Loaded
    port: int


@dataclass
class Added:
    name: str
    port: int
    stage: str
    wave: int
    catalog: Path
    out: Path
    created: list[str]  # files of the new service, under out
    touched: list[str]  # every file written or removed, under out
    # the run's result and the candidate, held as long as this is (pipeline.Result.held): the
    # CLI ends at once and never frees them (at 10,000 services 0.3 s of a service added)
    held: tuple[object, ...] = field(default=(), repr=False, compare=False)


def parse_depends_on(text: str | None) -> dict[str, str]:
    """`a,b:soft` -> {"a": "hard", "b": "soft"}. Kinds are checked by validation, not here."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if part:
            name, _, kind = part.partition(":")
            out[name.strip()] = kind.strip() or "hard"
    return out


# -- the entry, as YAML text ---------------------------------------------------------------------


def _escape(value: str) -> str:
    r"""A YAML double-quoted scalar for any text: everything a YAML reader refuses or reads as
    a line break is escaped (\x, \u, \U), so the value reads back exactly."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")
        elif code in (0x2028, 0x2029, 0xFEFF) or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def scalar(value: str) -> str:
    """``value`` as a YAML scalar on one line: plain where PyYAML finds that safe (as the
    catalog is written by hand), double-quoted and escaped otherwise."""
    dumped = str(yaml.safe_dump({"k": value}, allow_unicode=True, width=2**31, default_flow_style=False))
    text = dumped.removeprefix("k: ").removesuffix("\n")
    if "\n" not in text and yaml.safe_load(f"k: {text}") == {"k": value}:
        return text
    return _escape(value)


def entry_lines(new: NewService, port: int, indent: str = "  ", step: str = "  ") -> list[str]:
    """The service entry in the catalog's own layout and key order (the Service model's)."""
    inner = indent + step
    lines = [
        f"{indent}{scalar(new.name)}:",
        f"{inner}port: {port}",
        f"{inner}category: {scalar(new.category)}",
        f"{inner}team: {scalar(new.team)}",
    ]
    if new.stage:
        lines.append(f"{inner}stage: {scalar(new.stage)}")
    lines.append(f"{inner}description: {scalar(new.description)}")
    if new.depends_on:
        lines.append(f"{inner}depends_on:")
        lines.extend(f"{inner}{step}{scalar(dep)}: {scalar(kind)}" for dep, kind in new.depends_on.items())
    return lines


_TOP_KEY = re.compile(r"^services[ \t]*:[ \t]*(#.*)?$")


def insert_entry(text: str, lines: list[str]) -> str:
    """Insert ``lines`` after the last line of the block mapping under the top-level
    `services:` key. Comments at column 0 after it belong to the next section and stay
    below. Raises NexusError when the file's `services:` is not a block mapping."""
    newline = "\r\n" if "\r\n" in text else "\n"
    rows = text.split(newline)
    start = next((i for i, row in enumerate(rows) if _TOP_KEY.match(row)), None)
    if start is None:
        raise NexusError(
            "catalog.yaml has no line `services:` on its own; nexus new appends to an indented block mapping under "
            "it, so write the services that way"
        )
    last = start
    for i in range(start + 1, len(rows)):
        row = rows[i]
        if row.strip() == "" or row.startswith("#"):
            continue
        if row[0] not in " \t":
            break  # the next top-level key (or a document marker)
        last = i
    if last == start:
        raise NexusError(
            "catalog.yaml's `services:` has no indented entries below it; nexus new appends to an indented block "
            "mapping under it, so write the services that way"
        )
    return newline.join([*rows[: last + 1], *lines, *rows[last + 1 :]])


def _layout(text: str) -> tuple[str, str]:
    """The indentation of service names under `services:`, and of their keys below that."""
    rows = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, row in enumerate(rows) if _TOP_KEY.match(row)), 0)
    content = [r for r in rows[start + 1 :] if r.strip() and not r.lstrip().startswith("#")]
    if not content or content[0][0] not in " \t":
        return "  ", "  "
    indent = content[0][: len(content[0]) - len(content[0].lstrip())]
    for row in content[1:]:
        width = len(row) - len(row.lstrip())
        if width > len(indent):
            return indent, row[len(indent) : width]
        if width < len(indent):
            break
    return indent, "  "


# -- validate, write, regenerate ----------------------------------------------------------------


def _where(name: str, path: str) -> str:
    """The argument of `nexus new` a validation problem is about (its key path otherwise)."""
    prefix = f"services.{name}"
    if path == prefix:
        return f"NAME {name}"
    if path.startswith(prefix + "."):
        rest = path[len(prefix) + 1 :].split(".")
        arg = _ARGUMENT.get(rest[0])
        if arg == "--depends-on" and len(rest) > 1:
            return f"--depends-on {rest[1]}"
        if arg:
            return arg
    return path


def candidate(
    text: str, new: NewService, file: str = "catalog.yaml", *, space: str | None = None, source: Source | None = None
) -> Candidate:
    """The catalog text with ``new`` appended, loaded and validated like `nexus validate` does.
    ``space``: the output folder's space in the user's cache, whose kept parts of the catalog
    both readings use (``load.load_text``); ``source``: ``text`` as read already (the caller's
    ``load_file``), not read again.

    The catalog as it is goes only through the schema pass (what the port and the guard
    against a misread layout need); the graph pass runs on the candidate, and on the catalog
    as it is only when the candidate fails, to tell which of the two is at fault. So a catalog
    whose one fault is a reference to the very service being added is completed, not refused.
    At 10,000 services the graph pass and the second reading were 0.25 s of a service added.

    Raises RefusedError listing every problem (each named by the argument that caused it),
    CatalogError when the catalog is invalid before anything is added."""
    unwritable = _not_text(new)
    if unwritable:
        raise RefusedError(new.name, unwritable)
    with collector.paused():  # what loading builds lives on, as in load_catalog_text
        try:
            src = source if source is not None else load_text(text, file, space=space)
        except CatalogError as exc:
            raise _refused_as_it_is(new, file, exc) from exc
        try:
            base = parse(src)
        except CatalogError as exc:  # the whole validation names every problem, the graph's too
            raise _refused_as_it_is(new, file, _problems_as_it_is(src) or exc) from exc
    port = new.port if new.port is not None else next_port(base, new.category)
    if port is None:
        block = base.categories[new.category].ports
        where = (
            f"its block {block.first}..{block.last} is full; widen categories.{new.category}.ports in the catalog"
            if block
            else "no free port is left above its services"
        )
        raise RefusedError(new.name, [f"--category {new.category}: {where}, or pass --port"])
    indent, step = _layout(text)
    out = insert_entry(text, entry_lines(new, port, indent, step))
    try:
        loaded = load_catalog_text(out, file, space=space)
    except CatalogError as exc:
        invalid = _problems_as_it_is(src)
        if invalid is not None:
            raise _refused_as_it_is(new, file, invalid) from invalid
        reasons = [f"{_where(new.name, p.path)}: {p.message}" if p.path else str(p) for p in exc.problems]
        raise RefusedError(new.name, reasons) from exc
    _assert_pure_addition(base, loaded.catalog, new.name)
    return Candidate(out, loaded, port)


def _not_text(new: NewService) -> list[str]:
    """The arguments that are not text a UTF-8 file can hold, each named (errors.not_utf8):
    written into the catalog such text could only be an escape that YAML refuses, and the
    refusal would name a line of the entry the person never wrote."""
    given = [
        ("NAME", new.name),
        (_ARGUMENT["category"], new.category),
        (_ARGUMENT["team"], new.team),
        (_ARGUMENT["stage"], new.stage or ""),
        (_ARGUMENT["description"], new.description),
        *((_ARGUMENT["depends_on"], part) for dep, kind in new.depends_on.items() for part in (dep, kind)),
    ]
    return [
        f"{argument}: {what}; pass it as UTF-8 text (is the terminal's encoding UTF-8?)"
        for argument, value in given
        if (what := not_utf8(value)) is not None
    ]


def _problems_as_it_is(src: Source) -> CatalogError | None:
    """What the whole validation finds in the catalog as it is; None when it is valid."""
    try:
        validate(src)
    except CatalogError as exc:
        return exc
    return None


def _refused_as_it_is(new: NewService, file: str, invalid: CatalogError) -> RefusedError:
    return RefusedError(
        new.name,
        [
            f"{file} does not validate as it is; fix it first (`nexus validate` lists the same):",
            *map(str, invalid.problems),
        ],
    )


def _assert_pure_addition(before: Catalog, after: Catalog, name: str) -> None:
    """The insertion added one service and changed nothing else (a guard against a layout the
    text insertion misread: better to stop than to write a catalog that means something else)."""
    rest = {k: v for k, v in after.services.items() if k != name}
    if (
        name not in after.services
        or rest != before.services
        or after.model_copy(update={"services": before.services}) != before
    ):
        raise NexusError(
            f"adding '{name}' as text would change more than the one entry (an unusual layout of `services:`?); "
            "nothing was written, add it by hand"
        )


_TEMPORARY = ".nexus-new"  # how replace_file ends the name of the file it renames over the catalog


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, then one rename.
    The file's permissions are kept. A ``path`` that is a symbolic link is written through it,
    to the file it names, as an editor would: replacing the link left the file it names as it
    was and the link a copy (and `generate` finds generated/ beside the file it names)."""
    path = path.resolve()
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    # what a `nexus new` killed in this very window left beside the catalog (git shows it)
    usercache.sweep(path.parent, f".{path.name}.", _TEMPORARY)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMPORARY, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_service(
    catalog: str | Path,
    new: NewService,
    out: str | Path | None = None,
    *,
    waiting: Callable[[str], None] | None = None,
) -> Added:
    """Add ``new`` to the catalog file and regenerate. On any refusal nothing is changed.
    ``waiting`` is told, once, who holds the output folder while this waits for it."""
    from ..pipeline import (
        generate,  # the whole pipeline; imported late, it pulls in rendering
    )

    path = Path(catalog)
    if path.exists() and not path.is_file() and not path.is_dir():  # a pipe, a device (load_file says the rest)
        raise RefusedError(new.name, [f"{path} is not a regular file; nexus new edits the catalog file itself"])
    target = output_folder(path, out)
    space = usercache.name_of(target)  # the kept parts of its catalog (``candidate``)
    # a refusal is found before the lock is taken: it changes nothing, not even a lock file
    read = _read(path, new, space)
    # One run at a time per output folder (write.locked), this one from its reading of the catalog
    # to its run's end, which holds the same lock: two `nexus new` read the same text, and the
    # second to replace the file dropped the first one's entry, both saying done. The lock of the
    # catalog's own folder (generated/ beside it) comes first, whichever folder this writes: it
    # is the catalog's lock too, so two edits sent to different folders (the library's ``out``)
    # also go one at a time, and no lock file is added beside the catalog. Always in that order,
    # so no two wait for each other.
    refuse_link(target)  # the folder's own refusals (a link, the root), before its lock is taken
    refuse_holding(target, path)
    with locked(output_folder(path), waiting=waiting), locked(target, waiting=waiting):
        raw, cand = read if _bytes(path) == read[0] else _read(path, new, space)  # read again if changed
        return _add(path, new, raw, cand, lambda text: generate(path, out, validated=text, waiting=waiting))


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile: reading it again says so (load_file)
        return None


def _read(path: Path, new: NewService, space: str) -> tuple[bytes, Candidate]:
    """The catalog's bytes, and its text with ``new`` added, validated (or RefusedError)."""
    src = load_file(path, space=space)  # the same size, encoding and existence checks as every command
    raw = path.read_bytes()
    return raw, candidate(src.text, new, str(path), space=space, source=src)


def _add(
    path: Path, new: NewService, raw: bytes, cand: Candidate, generate: Callable[[tuple[bytes, Loaded]], Result]
) -> Added:
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    written = (bom + cand.text).encode("utf-8")
    try:
        replace_file(path, written)
    except OSError as exc:  # the file is as it was: replace_file renames a whole one or none
        raise RefusedError(new.name, [f"cannot write {path}: {exc.strerror or exc}; {fix_for(exc)}"]) from exc
    try:
        result = generate((written, cand.loaded))  # the catalog not read and validated again
    except BaseException as failed:
        try:
            replace_file(path, raw)  # generate wrote nothing; put the catalog back as it was
        except OSError as exc:
            raise NexusError(
                f"{failed or type(failed).__name__}\n{path} could not be put back as it was "
                f"({exc.strerror or exc}; {fix_for(exc)}): it holds the entry for '{new.name}', and "
                "generated/ is unchanged; remove the entry by hand, or run `nexus generate` once both are fixed"
            ) from exc
        raise
    folder = f"services/{new.name}/"
    plan = cand.loaded.plan
    return Added(
        name=new.name,
        port=cand.port,
        stage=plan.stage_of[new.name],
        wave=plan.wave_of[new.name],
        catalog=path,
        out=result.out,
        created=[p for p in result.touched if p.startswith(folder)],
        touched=result.touched,
        held=(result, cand),
    )
