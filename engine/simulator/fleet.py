"""The simulated endpoint fleet of ``rusts-simulator``: devices, their series, line protocol.

Sans-I/O: :class:`Fleet` only turns "these devices report at these times" into a line protocol
body. The benchmark runner (``rusts.simulator.runner``) decides when to call it and sends the bytes.

Workload (the original's DEX simulator: endpoint monitoring of a company's laptops):

* Every device has fixed tags: ``device_id`` (``dev-00042``), ``site`` (12 offices, weighted),
  ``os`` (Windows 11/10, macOS, Ubuntu), ``department`` (8) and a network ``connection``
  (wifi, ethernet, vpn).
* Four measurements. ``device_health``, ``network_health`` and ``experience_score`` have one
  series per device; ``app_performance`` has one per installed app (2 to 7 apps, uniform, so
  4.5 on average). That is 7.5 series per device, as in the original (about 7,500 for 1,000).
* Each report writes one point per series. Float fields are seeded mean-reverting random walks
  (``x += theta * (mu - x) + sigma * N(0, 1)``, clipped to the field's range) around a per-series
  baseline; a few percent of the devices have bad baselines (hot CPU, lossy network, low
  battery, poor experience) so that the alerting queries find something. ``crash_count`` and
  ``error_count`` are Poisson counts per report; ``process_count`` is a rounded walk.
  ``experience_score.score`` is the weighted mean of the four sub-scores.

No Python loop per point: per report the walks of the reporting devices' series advance as
numpy arrays, and the lines are assembled with Arrow string kernels (float -> shortest decimal
string, element-wise concatenation); the body is the concatenated data buffer of the resulting
string array. Floats are rounded to 2 decimals (like agents report them); ``+ 0.0`` turns
``-0.0`` into ``0``.

Series of a measurement are stored in device order, so the series of a contiguous device range
(a collector's batch) are a contiguous slice: no gather of the tag strings.
"""

from __future__ import annotations

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusts.errors import ConfigError

__all__ = ["APPS", "DEPARTMENTS", "MEASUREMENTS", "OSES", "SITES", "Fleet"]

SITES = ("nyc-hq", "london", "berlin", "san-francisco", "austin", "toronto", "paris", "dublin",
         "bangalore", "singapore", "tokyo", "sydney")
_SITE_WEIGHTS = (0.18, 0.12, 0.08, 0.11, 0.07, 0.06, 0.06, 0.05, 0.10, 0.07, 0.05, 0.05)
_SITE_LATENCY = (12.0, 18.0, 22.0, 10.0, 15.0, 16.0, 20.0, 24.0, 45.0, 38.0, 35.0, 40.0)
OSES = ("windows-11", "windows-10", "macos-14", "ubuntu-22.04")
_OS_WEIGHTS = (0.5, 0.2, 0.25, 0.05)
DEPARTMENTS = ("engineering", "sales", "marketing", "finance", "hr", "support", "operations",
               "legal")
_CONNECTIONS = ("wifi", "ethernet", "vpn")
_CONNECTION_WEIGHTS = (0.6, 0.25, 0.15)
APPS = ("outlook", "teams", "chrome", "slack", "zoom", "excel", "word", "salesforce", "vscode",
        "jira", "edge", "onedrive")
# Typical response time (ms) of each app, the baseline of its walk.
_APP_RESPONSE_MS = (180.0, 120.0, 90.0, 110.0, 140.0, 60.0, 50.0, 420.0, 35.0, 380.0, 85.0, 250.0)

MEASUREMENTS = ("device_health", "app_performance", "network_health", "experience_score")
_MIN_APPS, _MAX_APPS = 2, 7  # uniform over 2..7: 4.5 apps per device on average


@attrs.frozen
class _Walk:
    """A float field: a mean-reverting walk clipped to [lo, hi]."""

    name: str
    lo: float
    hi: float
    sigma: float  # step standard deviation per report (absolute, or relative to mu if rel)
    theta: float  # pull towards the baseline per report, 0..1
    rel: bool = False


@attrs.define(eq=False)
class _Measurement:
    """The series of one measurement across the fleet and the state of their walks."""

    name: str
    device: np.ndarray            # device index of each series, non-decreasing
    prefix: pa.Array              # "measurement,tag=v,..." per series
    walks: tuple[_Walk, ...]
    mu: np.ndarray                # (series, walks) baselines
    x: np.ndarray                 # (series, walks) current values
    counts: tuple[tuple[str, np.ndarray], ...] = ()   # Poisson count fields: name, lambda per series
    int_walks: tuple[str, ...] = ()  # walks reported as integers (rounded)
    derived: str | None = None    # experience_score.score: weighted mean of the walks

    def bounds(self, first: int, last: int) -> tuple[int, int]:
        """Series index range of the devices [first, last)."""
        lo, hi = np.searchsorted(self.device, (first, last))
        return int(lo), int(hi)


_SCORE_WEIGHTS = np.array([0.3, 0.25, 0.25, 0.2])


class Fleet:
    """A seeded fleet of simulated endpoints.

    Args:
        devices: Number of devices (at least 1).
        seed: Seed of every random choice (tags, baselines, walks): the same seed and the same
            sequence of :meth:`report` calls give the same bytes.

    Raises:
        ConfigError: ``devices`` is not positive.
    """

    def __init__(self, devices: int, *, seed: int = 1) -> None:
        if devices < 1:
            raise ConfigError(f"devices must be at least 1, got {devices}", key="devices")
        self.devices = int(devices)
        rng = np.random.default_rng(seed)
        self._rng = rng
        n = self.devices
        self.device_ids = np.array([f"dev-{i:05d}" for i in range(n)], dtype=object)
        self.site = rng.choice(len(SITES), size=n, p=_SITE_WEIGHTS)
        self.os = rng.choice(len(OSES), size=n, p=_OS_WEIGHTS)
        self.department = rng.integers(len(DEPARTMENTS), size=n)
        self.connection = rng.choice(len(_CONNECTIONS), size=n, p=_CONNECTION_WEIGHTS)
        self.app_count = rng.integers(_MIN_APPS, _MAX_APPS + 1, size=n)
        self._measurements = (self._device_health(), self._app_performance(),
                              self._network_health(), self._experience_score())

    # ------------------------------------------------------------------ public

    @property
    def series_count(self) -> int:
        """Series written by one report of every device."""
        return sum(len(m.device) for m in self._measurements)

    def series_per_measurement(self) -> dict[str, int]:
        return {m.name: len(m.device) for m in self._measurements}

    def sites(self) -> tuple[str, ...]:
        """The sites that have at least one device."""
        return tuple(SITES[i] for i in np.unique(self.site))

    def points_of(self, first: int, last: int) -> int:
        """Points (lines) one report of the devices [first, last) writes."""
        total = 0
        for m in self._measurements:
            lo, hi = m.bounds(first, last)
            total += hi - lo
        return total

    def report(self, first: int, last: int, timestamps: np.ndarray) -> tuple[bytes, int]:
        """One report of the devices [first, last): advance their walks, return the body.

        Args:
            first: First device index.
            last: One past the last device index.
            timestamps: int64 ns, one per device in [first, last): when each device reports.

        Returns:
            The line protocol body (ns precision, one line per series, LF-terminated) and its
            number of lines.

        Raises:
            ConfigError: the range is empty or out of the fleet, or the timestamps do not match.
        """
        if not 0 <= first < last <= self.devices:
            raise ConfigError(f"device range [{first}, {last}) outside 0..{self.devices}",
                              key="devices")
        ts = np.asarray(timestamps, dtype=np.int64)
        if ts.shape != (last - first,):
            raise ConfigError(f"expected {last - first} timestamps, got {ts.shape}", key="timestamps")
        pieces = []
        for m in self._measurements:
            lo, hi = m.bounds(first, last)
            if hi > lo:
                pieces.append(self._lines(m, lo, hi, ts[m.device[lo:hi] - first]))
        lines = pa.chunked_array(pieces).combine_chunks()
        _, offsets, data = lines.buffers()
        off = np.frombuffer(offsets, dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
        body = memoryview(data)[int(off[0]):int(off[-1])].tobytes()
        return body, len(lines)

    # ------------------------------------------------------------------ generation

    def _lines(self, m: _Measurement, lo: int, hi: int, ts: np.ndarray) -> pa.Array:
        n = hi - lo
        rng = self._rng
        x = m.x[lo:hi]
        mu = m.mu[lo:hi]
        sigma = np.array([w.sigma for w in m.walks])
        scale = np.where([w.rel for w in m.walks], mu, 1.0) * sigma
        theta = np.array([w.theta for w in m.walks])
        x += theta * (mu - x) + scale * rng.standard_normal((n, len(m.walks)))
        np.clip(x, [w.lo for w in m.walks], [w.hi for w in m.walks], out=x)
        parts: list = [m.prefix.slice(lo, n)]
        sep = " "
        for j, w in enumerate(m.walks):
            if w.name in m.int_walks:
                text = pc.cast(pa.array(np.rint(x[:, j]).astype(np.int64)), pa.string())
                parts += [f"{sep}{w.name}=", text, "i"]
            else:
                parts += [f"{sep}{w.name}=", _float_text(x[:, j])]
            sep = ","
        if m.derived is not None:
            score = x @ _SCORE_WEIGHTS
            parts += [f",{m.derived}=", _float_text(score)]
        for name, lam in m.counts:
            counts = rng.poisson(lam[lo:hi])
            parts += [f",{name}=", pc.cast(pa.array(counts.astype(np.int64)), pa.string()), "i"]
        parts += [" ", pc.cast(pa.array(ts), pa.string()), "\n"]
        return pc.binary_join_element_wise(*parts, "")

    def _prefixes(self, measurement: str, device: np.ndarray, extra: dict[str, np.ndarray]) -> pa.Array:
        """``measurement,k=v,...`` per series, tag keys sorted (the canonical order)."""
        cols = {
            "department": np.array(DEPARTMENTS, dtype=object)[self.department[device]],
            "device_id": self.device_ids[device],
            "os": np.array(OSES, dtype=object)[self.os[device]],
            "site": np.array(SITES, dtype=object)[self.site[device]],
        }
        cols.update(extra)
        parts: list = [measurement]
        for key in sorted(cols):
            parts += [f",{key}=", pa.array(cols[key], type=pa.string())]
        return pc.binary_join_element_wise(*parts, "")

    def _baseline(self, n: int, typical: tuple[float, float], bad: float, bad_share: float) -> np.ndarray:
        """Per-series baselines: uniform in ``typical``, ``bad`` for about ``bad_share`` of them."""
        rng = self._rng
        mu = rng.uniform(*typical, size=n)
        hit = rng.random(n) < bad_share
        mu[hit] = bad
        return mu

    def _measurement(self, name: str, device: np.ndarray, extra: dict, walks: tuple[_Walk, ...],
                     mu: np.ndarray, **kw) -> _Measurement:
        x = np.clip(mu + self._rng.standard_normal(mu.shape) * 0.5 * np.array([w.sigma for w in walks])
                    * np.where([w.rel for w in walks], mu, 1.0),
                    [w.lo for w in walks], [w.hi for w in walks])
        return _Measurement(name, device, self._prefixes(name, device, extra), walks, mu, x, **kw)

    def _device_health(self) -> _Measurement:
        n = self.devices
        dev = np.arange(n)
        walks = (_Walk("cpu_usage", 0.0, 100.0, 6.0, 0.35), _Walk("memory_usage", 5.0, 99.5, 2.5, 0.2),
                 _Walk("disk_usage", 5.0, 99.9, 0.05, 0.0), _Walk("battery_level", 0.0, 100.0, 2.0, 0.1),
                 _Walk("temperature_c", 25.0, 105.0, 1.5, 0.3), _Walk("process_count", 40, 900, 4.0, 0.2))
        mu = np.column_stack([
            self._baseline(n, (8.0, 55.0), 94.0, 0.03),
            self._baseline(n, (35.0, 80.0), 96.0, 0.02),
            self._rng.uniform(20.0, 92.0, n),
            self._baseline(n, (45.0, 95.0), 6.0, 0.03),
            self._baseline(n, (40.0, 62.0), 88.0, 0.01),
            self._rng.uniform(120.0, 380.0, n),
        ])
        return self._measurement("device_health", dev, {}, walks, mu, int_walks=("process_count",))

    def _app_performance(self) -> _Measurement:
        rng = self._rng
        dev = np.repeat(np.arange(self.devices), self.app_count)
        # Each device's apps: the first app_count of a random permutation of APPS.
        order = np.argsort(rng.random((self.devices, len(APPS))), axis=1)
        slot = np.arange(len(dev)) - np.repeat(np.cumsum(self.app_count) - self.app_count, self.app_count)
        app = order[dev, slot]
        n = len(dev)
        walks = (_Walk("response_time_ms", 1.0, 30000.0, 0.08, 0.3, rel=True),
                 _Walk("cpu_usage", 0.0, 100.0, 2.0, 0.3), _Walk("memory_mb", 20.0, 8000.0, 0.03, 0.2, rel=True))
        slow = rng.random(n) < 0.03
        rt = np.array(_APP_RESPONSE_MS)[app] * rng.uniform(0.7, 1.4, n) * np.where(slow, 6.0, 1.0)
        mu = np.column_stack([rt, rng.uniform(1.0, 25.0, n), rng.uniform(80.0, 1500.0, n)])
        flaky = rng.random(n) < 0.05
        crash = np.where(flaky, 0.4, 0.002)
        errors = rng.uniform(0.1, 2.0, n) * np.where(flaky, 4.0, 1.0)
        extra = {"app": np.array(APPS, dtype=object)[app]}
        return self._measurement("app_performance", dev, extra, walks, mu,
                                 counts=(("crash_count", crash), ("error_count", errors)))

    def _network_health(self) -> _Measurement:
        rng = self._rng
        n = self.devices
        dev = np.arange(n)
        walks = (_Walk("latency_ms", 0.5, 2000.0, 0.1, 0.3, rel=True), _Walk("jitter_ms", 0.0, 500.0, 0.8, 0.3),
                 _Walk("packet_loss_pct", 0.0, 100.0, 0.4, 0.4), _Walk("bandwidth_mbps", 0.5, 1000.0, 0.05, 0.2, rel=True),
                 _Walk("wifi_signal_dbm", -95.0, -20.0, 2.0, 0.3), _Walk("dns_time_ms", 0.5, 2000.0, 0.1, 0.3, rel=True))
        latency = np.array(_SITE_LATENCY)[self.site] * rng.uniform(0.8, 1.6, n)
        vpn = self.connection == 2
        latency[vpn] += 25.0
        mu = np.column_stack([
            latency,
            rng.uniform(1.0, 8.0, n),
            self._baseline(n, (0.0, 0.8), 7.5, 0.03),
            np.where(self.connection == 1, rng.uniform(400.0, 950.0, n), rng.uniform(20.0, 300.0, n)),
            rng.uniform(-78.0, -42.0, n),
            rng.uniform(5.0, 40.0, n),
        ])
        extra = {"connection": np.array(_CONNECTIONS, dtype=object)[self.connection]}
        return self._measurement("network_health", dev, extra, walks, mu)

    def _experience_score(self) -> _Measurement:
        n = self.devices
        dev = np.arange(n)
        walks = tuple(_Walk(f"{s}_score", 0.0, 100.0, 3.0, 0.25)
                      for s in ("performance", "stability", "network", "app"))
        mu = np.column_stack([self._baseline(n, (65.0, 97.0), 35.0, 0.04) for _ in walks])
        return self._measurement("experience_score", dev, {}, walks, mu, derived="score")


def _float_text(values: np.ndarray) -> pa.Array:
    """Shortest decimal text of values rounded to 2 decimals (``-0`` printed as ``0``)."""
    return pc.cast(pa.array(np.round(values, 2) + 0.0), pa.string())
