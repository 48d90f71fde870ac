"""The query side of ``rusts-simulator``: three classes of SQL, mixed like the original.

Sans-I/O: :class:`QueryMix` hands out ``(class, sql)`` pairs; the runner sends them to ``/sql``.

* **dashboard** (60 %): what a DEX dashboard refreshes, aggregations with GROUP BY over the
  last 5 to 15 minutes (average CPU per site, app response time per app with its p95, network
  health per site, experience score per department, a site's CPU per minute).
* **alerting** (30 %): threshold rules with HAVING over the last 5 to 15 minutes (devices with
  AVG(cpu_usage) > 90, apps that crashed twice, lossy or slow networks, low batteries, poor
  experience scores).
* **historical** (10 %): one device's trend over the last hour in 1-minute buckets
  (``time_bucket('1 minute', time)``), the drill-down after an alert.

The class sequence is deterministic: every block of 10 queries holds 6 dashboard, 3 alerting and
1 historical in a seeded random order, so a 300 s run at 5 queries/s gives 900/450/150, the
original's 901/451/149. Templates and their parameters (site, device) are drawn from the seeded
generator too. Windows use ``now()`` on the server, so a query always covers the newest data.
"""

from __future__ import annotations

import numpy as np

from rusts.simulator.fleet import Fleet

__all__ = ["ALERTING", "CLASSES", "DASHBOARD", "HISTORICAL", "MIX", "QueryMix", "TEMPLATES"]

DASHBOARD = "dashboard"
ALERTING = "alerting"
HISTORICAL = "historical"
CLASSES = (DASHBOARD, ALERTING, HISTORICAL)
MIX = {DASHBOARD: 6, ALERTING: 3, HISTORICAL: 1}
"""Queries of each class in every block of 10."""

_W5 = "time > now() - INTERVAL '5 minutes'"
_W15 = "time > now() - INTERVAL '15 minutes'"
_H1 = "time > now() - INTERVAL '1 hour'"

TEMPLATES: dict[str, tuple[str, ...]] = {
    DASHBOARD: (
        "SELECT site, AVG(cpu_usage) AS avg_cpu, AVG(memory_usage) AS avg_memory, COUNT(*) AS reports "
        f"FROM device_health WHERE {_W5} GROUP BY site ORDER BY site",
        "SELECT app, AVG(response_time_ms) AS avg_response_ms, PERCENTILE_95(response_time_ms) AS p95_response_ms, "
        f"SUM(crash_count) AS crashes FROM app_performance WHERE {_W5} GROUP BY app ORDER BY avg_response_ms DESC",
        "SELECT site, AVG(latency_ms) AS latency_ms, AVG(packet_loss_pct) AS loss_pct, AVG(bandwidth_mbps) AS bandwidth "
        f"FROM network_health WHERE {_W5} GROUP BY site ORDER BY site",
        "SELECT department, AVG(score) AS avg_score, MIN(score) AS min_score "
        f"FROM experience_score WHERE {_W15} GROUP BY department ORDER BY avg_score",
        "SELECT time_bucket('1 minute', time) AS minute, AVG(cpu_usage) AS avg_cpu, MAX(temperature_c) AS max_temp "
        f"FROM device_health WHERE site = '{{site}}' AND {_W15} GROUP BY minute ORDER BY minute",
        "SELECT os, AVG(score) AS avg_score, AVG(app_score) AS app_score, COUNT(*) AS reports "
        f"FROM experience_score WHERE site = '{{site}}' AND {_W5} GROUP BY os ORDER BY os",
    ),
    ALERTING: (
        "SELECT device_id, site, AVG(cpu_usage) AS avg_cpu FROM device_health "
        f"WHERE {_W5} GROUP BY device_id, site HAVING AVG(cpu_usage) > 90 ORDER BY avg_cpu DESC LIMIT 100",
        "SELECT device_id, app, SUM(crash_count) AS crashes FROM app_performance "
        f"WHERE {_W15} GROUP BY device_id, app HAVING SUM(crash_count) >= 2 ORDER BY crashes DESC LIMIT 100",
        "SELECT device_id, AVG(packet_loss_pct) AS loss_pct, AVG(latency_ms) AS latency_ms FROM network_health "
        f"WHERE {_W5} GROUP BY device_id HAVING AVG(packet_loss_pct) > 5 OR AVG(latency_ms) > 150",
        "SELECT device_id, MIN(battery_level) AS battery FROM device_health "
        f"WHERE {_W5} GROUP BY device_id HAVING MIN(battery_level) < 10",
        "SELECT device_id, department, AVG(score) AS score FROM experience_score "
        f"WHERE {_W15} GROUP BY device_id, department HAVING AVG(score) < 50 ORDER BY score LIMIT 50",
        "SELECT app, AVG(response_time_ms) AS avg_response_ms, COUNT(*) AS reports FROM app_performance "
        f"WHERE site = '{{site}}' AND {_W5} GROUP BY app HAVING AVG(response_time_ms) > 300",
    ),
    HISTORICAL: (
        "SELECT time_bucket('1 minute', time) AS minute, AVG(cpu_usage) AS cpu, AVG(memory_usage) AS memory, "
        "MAX(temperature_c) AS temperature FROM device_health "
        f"WHERE device_id = '{{device}}' AND {_H1} GROUP BY minute ORDER BY minute",
        "SELECT time_bucket('1 minute', time) AS minute, AVG(latency_ms) AS latency_ms, "
        "MAX(packet_loss_pct) AS loss_pct FROM network_health "
        f"WHERE device_id = '{{device}}' AND {_H1} GROUP BY minute ORDER BY minute",
        "SELECT time_bucket('1 minute', time) AS minute, AVG(score) AS score, MIN(network_score) AS network "
        f"FROM experience_score WHERE device_id = '{{device}}' AND {_H1} GROUP BY minute ORDER BY minute",
        "SELECT time_bucket('1 minute', time) AS minute, app, AVG(response_time_ms) AS response_ms "
        f"FROM app_performance WHERE device_id = '{{device}}' AND {_H1} GROUP BY minute, app ORDER BY minute, app",
    ),
}
"""SQL per class; ``{site}`` and ``{device}`` are filled from the fleet."""


class QueryMix:
    """Seeded stream of ``(class, sql)`` in the 6/3/1 mix.

    Args:
        fleet: Where sites and device ids come from.
        seed: Seed of the class order, the templates and their parameters.
    """

    def __init__(self, fleet: Fleet, *, seed: int = 1) -> None:
        self._rng = np.random.default_rng([seed, 7])
        self._sites = fleet.sites()
        self._devices = fleet.device_ids
        self._block: list[str] = []
        self._block_proto = [c for c in CLASSES for _ in range(MIX[c])]

    def next(self) -> tuple[str, str]:
        """The next query: its class and its SQL text."""
        if not self._block:
            self._block = list(self._rng.permutation(self._block_proto))
        klass = str(self._block.pop())
        templates = TEMPLATES[klass]
        text = templates[int(self._rng.integers(len(templates)))]
        return klass, self.fill(text)

    def fill(self, template: str) -> str:
        """``template`` with a random site and device of the fleet."""
        site = self._sites[int(self._rng.integers(len(self._sites)))]
        device = self._devices[int(self._rng.integers(len(self._devices)))]
        return template.replace("{site}", site).replace("{device}", device)
