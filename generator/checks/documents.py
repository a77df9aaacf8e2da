"""Rendered YAML read back as documents, for the checks that compare output with the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..yamlread import FILES, PARSED, RUN, by_runs, split


@dataclass
class Doc:
    path: str
    text: str  # the document's own YAML text (the schema cache's key); "" where a check reads whole files
    data: dict[str, Any]
    # read once: the checks filter 60,000 documents by kind several times at 10,000 services
    kind: str = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.kind = str(self.data.get("kind"))
        self.name = str(get(self.data, "metadata", "name"))


def documents(path: str, text: str) -> Iterator[Doc]:
    """The documents of one file, each with its own text: of a file of many (the monitors and
    rules over every service) a run at a time (yamlread.by_runs, FILES), so that an edit reads
    again the runs it changed, not 20,000 documents one by one."""
    chunks = split(text)
    found = by_runs(FILES, text, chunks) if len(chunks) >= RUN else map(load_yaml, chunks)
    for chunk, data in zip(chunks, found, strict=True):
        if isinstance(data, dict):
            yield Doc(path, chunk, data)


def load_yaml(text: str) -> Any:
    """One document, read once across runs (yamlread.PARSED)."""
    return PARSED(text)


def get(data: Any, *keys: str | int) -> Any:
    """data[k1][k2]..., or None where the path does not exist (manifests are read, not trusted)."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def items(value: Any) -> list[Any]:
    """``value`` where a list is expected, else no items (the schemas name what it is instead)."""
    return value if isinstance(value, list) else []


def mapping(value: Any) -> dict[str, Any]:
    """``value`` where a mapping is expected, else an empty one (the schemas name what it is instead)."""
    return value if isinstance(value, dict) else {}
