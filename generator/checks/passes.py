"""Kept passes of the checks that look at each service on its own: a service whose inputs to
such a check (the bytes of the files it reads, by their SHA-256, and what it reads of the
catalog) are those of a pass in an earlier run is not checked again. After an edit at 10,000
services the service-code and Backstage checks read 20,000 files for the few that changed.

A pass is a key in the schema validator's kept set (kubernetes_schema.SchemaValidator.seen,
in the user's cache folder, used only while that folder is private), salted with all of
Nexus's code and templates (paths.code_key): a check changed, or anything it calls, never
trusts a pass of the old code. A failure is never kept: a failing service is checked again
on every run until it passes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..paths import code_key
from .kubernetes_schema import SchemaValidator, held


class Passes:
    """The passes of one run: asked by ``key`` and ``in``, added by ``add``. A service's key
    names the check, the service, what its files hold and what it reads of the catalog.
    Without a ``validator`` (no cache, or --strict) nothing is kept: no key is in it."""

    def __init__(
        self,
        validator: SchemaValidator | None = None,
        files: Mapping[str, str] | None = None,
        digests: Mapping[str, str] | None = None,
    ) -> None:
        self._validator = validator
        self._files = files or {}
        self._digests = digests
        self._salt = code_key() if validator is not None else ""

    @property
    def keeps(self) -> bool:
        """Whether passes are kept at all (else ``key`` is always "")."""
        return self._validator is not None

    def key(self, check: str, service: str, paths: Iterable[str], catalog: str) -> str:
        """The key of ``check``'s pass for ``service``, which reads ``paths`` (each present) and
        ``catalog`` (what it reads of the catalog, as text); "" when nothing is kept."""
        if self._validator is None:
            return ""
        held_ = "\0".join(f"{p}\0{held(self._files, p, self._digests)}" for p in paths)
        return self._validator.key(f"{self._salt}\0{check}\0{service}\0{held_}\0{catalog}")

    def __contains__(self, key: str) -> bool:
        return self._validator is not None and self._validator.passed(key)

    def add(self, key: str) -> None:
        if self._validator is not None:
            self._validator.keep(key)


NONE = Passes()  # what a check keeps when called on its own: nothing
