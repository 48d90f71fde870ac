"""Prometheus text exposition of :meth:`Database.statistics` (``GET /metrics``)."""

from __future__ import annotations


def _walk(prefix: str, obj, out: list[tuple[str, dict, float]], labels: dict | None = None) -> None:
    labels = labels or {}
    if isinstance(obj, bool):
        out.append((prefix, labels, 1.0 if obj else 0.0))
    elif isinstance(obj, (int, float)):
        out.append((prefix, labels, float(obj)))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}_{k}" if prefix else str(k)
            if k in ("bytes_per_tier",) and isinstance(v, dict):
                for tier, val in v.items():
                    _walk(f"{prefix}_tier_bytes", val, out, {**labels, "tier": tier})
                continue
            _walk(name, v, out, labels)
    elif isinstance(obj, list) and prefix.endswith("partitions"):
        for p in obj:
            lab = {**labels, "partition": str(p.get("partition"))}
            for k, v in p.items():
                if k != "partition":
                    _walk(f"{prefix}_{k}", v, out, lab)


def prometheus_text(stats: dict) -> str:
    rows: list[tuple[str, dict, float]] = []
    _walk("rusts", {k: v for k, v in stats.items() if k != "problems"}, rows)
    rows.append(("rusts_problems", {}, float(len(stats.get("problems", [])))))
    lines = []
    seen = set()
    for name, labels, value in rows:
        name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
        if name not in seen:
            seen.add(name)
            lines.append(f"# TYPE {name} gauge")
        if labels:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value:g}")
        else:
            lines.append(f"{name} {value:g}")
    return "\n".join(lines) + "\n"
