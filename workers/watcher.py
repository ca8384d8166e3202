"""The worker's volume watcher: scheduled scans and on-demand ``scan`` jobs, in a thread of
the worker's main process, so a scan never waits behind a long remediation in the pool.

Every ``scan_interval`` seconds (0: off) it observes the host's volumes
(:func:`service.volumes.monitor.observe`: one sample and one status per volume, alerts on
a risk change); every tick it runs the host's queued ``scan`` jobs itself (the claim makes
it harmless if the pool picks the same job up: only one execution runs it).
"""

from __future__ import annotations

import logging
import threading
import time

from service.config import Settings
from service.store import JobStore
from service.volumes import alerts, monitor
from workers.dispatch import Send

log = logging.getLogger(__name__)

#: The read-only kinds the watcher runs beside the pool.
WATCHED_KINDS = ("scan",)


class Watcher(threading.Thread):
    """Scans the host's roots on schedule and runs its queued scan jobs."""

    def __init__(self, store: JobStore, settings: Settings, send: Send) -> None:
        super().__init__(name="vhdmend-watcher", daemon=True)
        self.store = store
        self.s = settings
        self.send = send
        self.notifier = alerts.Notifier(store, settings)
        self.next_scan = 0.0
        self._stop_event = threading.Event()

    def scan_now(self) -> None:
        started = time.monotonic()
        statuses = monitor.observe(self.s, self.store.volumes,
                                   on_status=self.notifier.on_status)
        log.info("scanned %d volumes of host %r in %.2fs", len(statuses), self.s.host,
                 time.monotonic() - started)

    def run_jobs(self) -> None:
        from workers.tasks import JobRun
        jobs, _ = self.store.find(state="queued", limit=100)
        for job in jobs:
            if job.host == self.s.host and job.type in WATCHED_KINDS:
                JobRun(job.id, self.store, self.s, send=self.send).run()

    def tick(self) -> None:
        if self.s.roots and self.s.scan_interval > 0 and time.time() >= self.next_scan:
            self.next_scan = time.time() + self.s.scan_interval
            self.scan_now()
        self.run_jobs()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.tick()
            except Exception as e:  # Redis restarting, a root unmounted: next tick
                log.warning("watcher tick failed: %s", e)
            self._stop_event.wait(self.s.tick_seconds)

    def stop(self) -> None:
        self._stop_event.set()
