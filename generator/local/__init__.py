"""The platform on one machine: `nexus up` (run), `status`, `restart`, `down` (control) and
`verify`. A run starts the generated services wave by wave in the plan's order, in one host
process (host, embedded mode) or one process each (launch), and records what it started
(runstate) so that later commands act on those processes and no others (procs)."""

from .control import attend, down, restart, status
from .run import up
from .verify import verify

__all__ = ["attend", "down", "restart", "status", "up", "verify"]
