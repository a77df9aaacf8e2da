# Yours: nexus created this file once and never touches it again. Add the team's routes here.
"""v-caster-pro's own endpoints.

Health, metrics, flows and dependency clients come from nexus_runtime; call a dependency with
`request.app.state.clients["<name>"]`.

On a critical path this hop writes the runtime's flow record into its own database and cache
and reads it back; to write your own data there instead, make this router a
nexus_runtime.ServiceRouter and give it a data step (docs/onboarding.md, "Your own data step")."""

from fastapi import APIRouter

router = APIRouter(prefix="/api", tags=["v-caster-pro"])


@router.get("/info")
async def info() -> dict[str, str]:
    return {"service": "v-caster-pro"}
