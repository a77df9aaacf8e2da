"""Text made safe for where a template puts it: YAML scalars, Python literals, Markdown cells,
lines and links, comments. Every catalog string reaches the output through one of these filters,
so hostile text (quotes, newlines, pipes, backticks, control characters) cannot change the
structure of a generated file. FILTERS is what every template environment gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson

from ..catalog.naming import env_name, pkg

# Characters a YAML reader rejects (DEL, C1 controls, non-characters, lone surrogates) or reads
# as a line break (NEL, LS, PS) even inside quotes; JSON's \uXXXX escape is valid YAML for them.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
# Everything that ends a line for YAML or Python, and what no YAML reader accepts even in a comment.
_LINE_BREAKS = re.compile("\r\n|[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_UNPRINTABLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def yaml_str(value: object) -> str:
    """A YAML scalar that reads back as exactly ``value``: a JSON string (valid YAML), with the
    characters YAML readers refuse or fold escaped."""
    return _yaml_str(str(value))


def json_str(value: object) -> str:
    """A JSON string for ``value`` (any text: quotes, braces, newlines), which is also a TOML
    basic string: a Dockerfile's exec form and a pyproject.toml's values. (Python code takes
    ``pycode.py_str``, quoted as ruff quotes.)"""
    return _json_str(str(value))


@lru_cache(maxsize=1 << 16)
def _json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# The same few thousand names and ports are quoted again and again (1.7 million times at 10,000
# services, 7 s of a cold run): each distinct text is quoted once.
@lru_cache(maxsize=1 << 16)
def _yaml_str(text: str) -> str:
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


def json_document(data: Any) -> str:
    """A JSON file as Nexus writes one: indented by two, keys sorted, text as it is (not
    escaped to ASCII), a line break at the end; the bytes of ``json.dumps(data, indent=2,
    sort_keys=True, ensure_ascii=False)``. Made by orjson: Python's encoder leaves C for pure
    Python as soon as it indents, and the AsyncAPI documents of 10,000 services and 2,000
    channels took 0.65 s of every edit to write, 0.05 with orjson. The two write text and whole
    numbers alike (tests/test_render.py compares them on every document of a catalog with
    events), not floats (1e16 is 1e+16 to Python): data with a float, or a number orjson does not
    take, is written by Python's encoder."""
    if not _has_float(data):
        try:
            return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        except orjson.JSONEncodeError:  # an integer past 64 bits, a key that is not text
            pass
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _has_float(data: Any) -> bool:
    # by a walk in turn, not recursion: a document is as deep as its data
    todo = [data]
    while todo:
        item = todo.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return False


def _lf(value: object) -> str:
    # A lone CR ends a line too, in Markdown and in Python source alike.
    return str(value).replace("\r\n", "\n").replace("\r", "\n")


def md_cell(value: object) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks kept as <br>."""
    return _lf(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def md_text(value: object) -> str:
    """Text safe as one Markdown paragraph line (a newline would end a list item)."""
    return _lf(value).replace("\n", " ")


# what, at the start of a line, Markdown would read as a block (heading, quote, list, table...)
_BLOCK_START = re.compile(r"[#>*+=_`~<[|-]|\d{1,9}[.)]")


def md_line(value: object) -> str:
    """Text that stands alone on a line without turning into a heading, list, quote or fence."""
    text = md_text(value).lstrip(" \t")  # leading spaces would make an indented code block
    m = _BLOCK_START.match(text)
    if not m:
        return text
    at = m.end() - 1 if text[0].isdigit() else 0  # "1." is escaped at its dot, "#" at itself
    return f"{text[:at]}\\{text[at:]}"


def md_link_text(value: object) -> str:
    """Text safe inside ``[...]``, in prose or in a table cell: brackets, pipes, backslashes escaped."""
    text = md_text(value)
    for char in "\\[]|":
        text = text.replace(char, "\\" + char)
    return text


def fence(value: object) -> str:
    """A code fence longer than any run of backticks in ``value``, so the block cannot end early."""
    runs = [len(r) for r in re.findall(r"`+", str(value))]
    return "`" * max(3, max(runs, default=0) + 1)


def comment(value: object) -> str:
    """Text safe inside a '#' comment line (YAML or Python): one line, printable."""
    return _UNPRINTABLE.sub("?", _LINE_BREAKS.sub(" ", str(value)))


FILTERS: dict[str, Callable[..., str]] = {
    "yaml_str": yaml_str,
    "json_str": json_str,
    "md_cell": md_cell,
    "md_text": md_text,
    "comment": comment,
    "md_line": md_line,
    "md_link_text": md_link_text,
    "fence": fence,
    "pkg": pkg,
    "env_name": env_name,
    "tojson": lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True),
}
