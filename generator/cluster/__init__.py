"""The platform on Kubernetes: `nexus deploy` applies an overlay in the plan's order (overlay
builds and orders it, rollout waits for each wave) and `nexus cluster-status` shows replicas,
rollouts and drift. Everything that talks to a cluster goes through client.Cluster."""

from .deploy import deploy
from .status import cluster_status

__all__ = ["cluster_status", "deploy"]
