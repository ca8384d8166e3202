"""The worker's background loop: registry heartbeat, reaper sweep, webhook deliveries.

Runs as a thread in the worker's main process (started on Celery's ``worker_ready``), so
it keeps beating while the pool's processes run jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from workers import reaper, registry, webhooks
from workers.celery_app import queue_for, send_job
from workers.config import Settings
from workers.jobstore import JobStore

log = logging.getLogger(__name__)


class Housekeeping(threading.Thread):
    """Every ``tick_seconds``: register, reap (one worker per tick), deliver webhooks."""

    def __init__(self, store: JobStore, settings: Settings, *, pool: str = "") -> None:
        super().__init__(name="vhdmend-housekeeping", daemon=True)
        self.store = store
        self.s = settings
        self.pool = pool
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._stop_event = threading.Event()

    def tick(self) -> None:
        s = self.s
        if s.host:
            registry.register(self.store.r, s.prefix, s.host, self.worker, s.roots,
                              ttl=3 * s.tick_seconds + 5, queue=queue_for(s.host),
                              pool=self.pool)
        if reaper.sweep_lock(self.store, s.tick_seconds * 0.9):
            reaper.reap(self.store, send_job)
            self.store.purge_finished(s.retention_seconds)
        webhooks.deliver_due(self.store, s)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.tick()
            except Exception as e:  # Redis restarting: try again next tick
                log.warning("housekeeping tick failed: %s", e)
            self._stop_event.wait(self.s.tick_seconds)

    def stop(self) -> None:
        self._stop_event.set()
        if self.s.host:
            try:
                registry.unregister(self.store.r, self.s.prefix, self.s.host, self.worker)
            except Exception as e:
                log.debug("unregister failed: %s", e)
