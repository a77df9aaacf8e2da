"""How a service's name becomes the other names it goes by. The one source of these rules:
the renderers, the local runner, the checks and the service template's filters
(templates/service/local_extensions.py) all call these functions."""

from __future__ import annotations


def pkg(name: str) -> str:
    """The Python package of a service: a DNS label with '-' made '_' is a valid identifier
    once it cannot start with a digit."""
    ident = str(name).replace("-", "_")
    return ident if ident[:1].isalpha() else f"svc_{ident}"


def env_name(name: str) -> str:
    """The environment-variable stem of a service: user-auth -> USER_AUTH (USER_AUTH_URL, ...)."""
    return pkg(name).upper()
