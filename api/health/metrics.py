"""The Prometheus exposition: one custom collector reading the store, one
``generate_latest`` (``prometheus_client`` escapes label values: paths are safe in labels).

Per volume (labels host, volume, root): free, total, reserve and growth bytes,
``seconds_to_full`` (absent when free space is not falling) and the risk (0 ok, 1 warning,
2 critical); per chain (labels host, root, leaf: its root-relative path): growth bytes and
snapshots; per host: the last scan's duration. The values are the ones ``/v1/volumes``
shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service import hosts
from service.job import CHUNK_BUCKETS
from service.store import JobStore
from service.volumes.projection import RISK_LEVEL

COUNTERS = (("jobs_created", "Jobs submitted."),
            ("bytes_processed", "Bytes processed by operations."),
            ("webhook_deliveries", "Webhook attempts answered 2xx."),
            ("webhook_failures", "Webhook attempts that failed."),
            ("alert_deliveries", "Volume alert attempts answered 2xx."),
            ("alert_failures", "Volume alert attempts that failed."))

VOLUME_GAUGES = (("free_bytes", "Free bytes an unprivileged writer can use."),
                 ("total_bytes", "Size of the volume's filesystem."),
                 ("reserve_bytes", "Free space under which Hyper-V pauses guests."),
                 ("disk_bytes", "Bytes held by disk files."),
                 ("growth_bytes", "Bytes the disks can still grow by."))


class StoreCollector(Collector):
    """Reads jobs, counters, workers and volumes from the store at each scrape."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        s = self.store
        jobs = GaugeMetricFamily("vhdmend_jobs", "Jobs by state.", labels=["state"])
        for state, n in s.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        counters, hist = s.metrics()
        for name, help_text in COUNTERS:
            yield CounterMetricFamily(f"vhdmend_{name}", help_text,
                                      value=counters.get(name, 0))
        buckets = [(str(le), hist.get(str(le), 0)) for le in CHUNK_BUCKETS]
        buckets.append(("+Inf", hist.get("+Inf", 0)))
        yield HistogramMetricFamily("vhdmend_chunk_seconds", "Time per operation chunk.",
                                    buckets=buckets, sum_value=hist.get("sum", 0.0))
        per_host: dict[str, int] = {}
        for w in hosts.workers(s):
            per_host[w["host"]] = per_host.get(w["host"], 0) + 1
        workers = GaugeMetricFamily("vhdmend_workers", "Live workers per host.",
                                    labels=["host"])
        for h, n in sorted(per_host.items()):
            workers.add_metric([h], n)
        yield workers
        yield from volume_metrics(s.volumes.statuses())


def volume_metrics(statuses: list[dict[str, Any]]) -> Iterator[Metric]:
    """The per-volume, per-chain and per-host scan families of ``statuses``."""
    labels = ["host", "volume", "root"]
    gauges = {name: GaugeMetricFamily(f"vhdmend_volume_{name}", text, labels=labels)
              for name, text in VOLUME_GAUGES}
    stf = GaugeMetricFamily("vhdmend_volume_seconds_to_full", "Seconds until free space is "
                            "projected to reach the reserve (absent when not falling).",
                            labels=labels)
    risk = GaugeMetricFamily("vhdmend_volume_risk", "0 ok, 1 warning, 2 critical.",
                             labels=labels)
    chain_labels = ["host", "root", "leaf"]
    growth = GaugeMetricFamily("vhdmend_chain_growth_bytes", "Bytes a chain's leaf can "
                               "still grow by.", labels=chain_labels)
    snaps = GaugeMetricFamily("vhdmend_chain_snapshots", "Snapshots (layers - 1) of a chain.",
                              labels=chain_labels)
    scan = GaugeMetricFamily("vhdmend_scan_duration_seconds", "Duration of the host's last "
                             "scan.", labels=["host"])
    scans: dict[str, float] = {}
    for st in statuses:
        values = [st["host"], st["id"], ",".join(st.get("roots") or [])]
        for name, family in gauges.items():
            family.add_metric(values, st[name])
        if st.get("seconds_to_full") is not None:
            stf.add_metric(values, st["seconds_to_full"])
        risk.add_metric(values, RISK_LEVEL[st["risk"]])
        for c in st.get("chains") or []:
            if c.get("leaf") is None:
                continue
            cl = [st["host"], c["root"], c["leaf"]]
            growth.add_metric(cl, c["growth_bytes"])
            snaps.add_metric(cl, c["snapshots"])
        scans[st["host"]] = max(scans.get(st["host"], 0.0), float(st.get("scan_seconds", 0)))
    for host, seconds in sorted(scans.items()):
        scan.add_metric([host], seconds)
    yield from gauges.values()
    yield from (stf, risk, growth, snaps, scan)


def exposition(store: JobStore) -> bytes:
    """The whole ``/metrics`` text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry)
