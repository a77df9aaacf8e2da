"""Python source laid out as `ruff format` lays it out, for the few generated lines whose length
depends on the catalog (a service's name, a description): the generated code is held to Nexus's
own lint and format rules (templates/lint/ruff.toml, copied to generated/ruff.toml), and a
63-character service name or a long description would otherwise leave lines ruff reflows.

Written by hand: ruff is a program, not a library, and running it over every rendered file would
cost more than rendering them. Only the shapes the templates use are covered, each as ruff
lays it out (checked by tests/test_pycode.py against ruff itself): a call (or a definition)
whose arguments are literals or names, a tuple of such calls or names, an import, a string
argument too long for one line.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from functools import cache, lru_cache

from ..paths import LINT_RULES

INDENT = " " * 4


@cache
def line_length() -> int:
    """The line length the generated code is held to (the one its ruff.toml gives)."""
    return int(tomllib.loads(LINT_RULES.read_text(encoding="utf-8"))["line-length"])


def fits(line: str) -> bool:
    """Whether ``line`` (its indentation included) is within the line length."""
    return width(line) <= line_length()


def width(text: str) -> int:
    """How many columns ruff counts for ``text``: East Asian wide and full-width characters take
    two (as the unicode-width crate it uses); what a literal escapes is never counted raw."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


@lru_cache(maxsize=1 << 12)
def _char_width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


# Characters a literal shows as escapes: marks, format and private-use characters, separators
# (but the ASCII space), unassigned code points. Seen raw they are invisible or join the
# character before them, and their width is where the tools that count columns disagree; letters,
# digits, punctuation and symbols are written as they are.
_VISIBLE = ("L", "N", "P", "S")


@lru_cache(maxsize=1 << 12)
def _escaped(char: str) -> str:
    if char.isascii() or unicodedata.category(char)[0] in _VISIBLE:
        return char
    return f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}"


_JSON_ESCAPE = re.compile(r"\\(.)|'")


@lru_cache(maxsize=1 << 16)
def py_str(text: str) -> str:
    """A Python string literal for any text, quoted as ruff quotes it: double quotes, unless the
    text holds more double quotes than single ones. (JSON's escapes are Python's, and keep
    every character that could end a line or be unreadable escaped.)"""
    literal = json.dumps(text, ensure_ascii=False)
    if not literal.isascii():
        literal = "".join(_escaped(c) for c in literal)
    if text.count('"') <= text.count("'"):
        return literal
    return "'" + _JSON_ESCAPE.sub(_single_quoted, literal[1:-1]) + "'"


def _single_quoted(m: re.Match[str]) -> str:
    """One escape of a JSON string's body as it reads between single quotes: \\" needs no
    escape there, ' does; every other escape is the same."""
    if m.group(1) is None:
        return "\\'"
    return '"' if m.group(1) == '"' else m.group(0)


def py_call(args: Sequence[str], callee: str, indent: int, end: str = "") -> str:
    """``callee(*args)`` followed by ``end`` (a comma in a sequence), at ``indent`` spaces: on one
    line when it fits; else its arguments on one line of their own; else one per line, each
    with a comma. ``args`` are literals (``py_str``) or ``name=literal``."""
    pad, inner = " " * indent, " " * (indent + 4)
    joined = ", ".join(args)
    one = f"{pad}{callee}({joined}){end}"
    if fits(one):
        return one
    if fits(inner + joined):
        return f"{pad}{callee}(\n{inner}{joined}\n{pad}){end}"
    return f"{pad}{callee}(\n" + "".join(f"{inner}{a},\n" for a in args) + f"{pad}){end}"


Item = str | tuple[str, Sequence[str]]  # a name, or a call: (callee, args)


def py_tuple(items: Sequence[Item], key: str, indent: int) -> str:
    """``key=(...),``, a keyword argument holding a tuple of names or ``(callee, args)`` calls:
    ``()`` when empty; one item on the line when it fits there (its comma is the tuple's, which
    ruff does not keep expanded); else one item per line, a call laid out by ``py_call``, each
    with the comma that keeps ruff from joining them again."""
    pad = " " * indent
    if not items:
        return f"{pad}{key}=(),"
    if len(items) == 1:
        one = f"{pad}{key}=({_one_line(items[0])},),"
        if fits(one):
            return one
    inner = " " * (indent + 4)
    lines = [
        f"{inner}{item}," if isinstance(item, str) else py_call(item[1], item[0], indent + 4, ",") for item in items
    ]
    return f"{pad}{key}=(\n" + "\n".join(lines) + f"\n{pad}),"


def _one_line(item: Item) -> str:
    return item if isinstance(item, str) else f"{item[0]}({', '.join(item[1])})"


def py_imports(imports: Sequence[tuple[str, Sequence[str]]]) -> str:
    """``from module import names`` statements, one per ``(module, names)``, in the order ruff's
    import sorting keeps them (by module, then each statement's names), each laid out by
    ``py_import``. Modules of one kind only (the service's own, relative)."""
    ordered = sorted(imports, key=lambda item: (_natural(item[0].lower()), _natural(item[0])))
    return "\n".join(py_import(names, module) for module, names in ordered)


def py_import(names: Sequence[str], module: str) -> str:
    """``from module import names``, the names sorted as ruff's import sorting sorts them: on one
    line when it fits; else one per line in parentheses, each with a comma."""
    names = sorted(names, key=_member_key)
    one = f"from {module} import {', '.join(names)}"
    if fits(one):
        return one
    return f"from {module} import (\n" + "".join(f"{INDENT}{n},\n" for n in names) + ")"


def _member_key(name: str) -> tuple[object, ...]:
    """isort's order of imported names (ruff's ``order-by-type``): constants (upper case, longer
    than one character), then classes (a capital first), then the rest; within each, by name
    regardless of case, numbers by value."""
    bare = name.split(" as ")[0]
    kind = 0 if len(bare) > 1 and bare.isupper() else 1 if bare[:1].isupper() else 2
    return (kind, _natural(bare.lower()), _natural(bare))


def _natural(text: str) -> tuple[object, ...]:
    """``text`` as runs of letters and of digits, the digits compared as numbers (natural order)."""
    return tuple(int(run) if run.isdigit() else run for run in re.split(r"(\d+)", text))


def py_text_arg(text: str, key: str, indent: int) -> str:
    """``key="text",``: on one line when it fits; else the text cut at spaces into parts that
    each fit a line, implicitly concatenated in parentheses (ruff keeps them so, as joined they
    would not fit). A word longer than a line is a part of its own; a text that is one such word
    stays on one line (nothing shorter can be made of it, and ruff leaves it so)."""
    pad, inner = " " * indent, " " * (indent + 4)
    one = f"{pad}{key}={py_str(text)},"
    if fits(one):
        return one
    parts: list[str] = []
    for word in re.findall(r"\S*\s*", text):
        if parts and fits(inner + py_str(parts[-1] + word)):
            parts[-1] += word
        elif word:
            parts.append(word)
    if len(parts) == 1:
        return one
    return f"{pad}{key}=(\n" + "".join(f"{inner}{py_str(p)}\n" for p in parts) + f"{pad}),"
