"""``rusts-simulator``: the original's endpoint-monitoring workload, run against a server."""

from rusts.simulator.runner import main as main

__all__ = ["main"]
