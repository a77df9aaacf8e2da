"""Changing the catalog: `nexus new` adds a service as a text edit that keeps every comment
(new), and `nexus diff` shows what a catalog change does, for review (review)."""

from .new import NewService, add_service
from .review import review

__all__ = ["NewService", "add_service", "review"]
