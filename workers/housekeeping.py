"""The worker's background loop: registry heartbeat, reaper sweep, webhook deliveries.

Runs as a thread in the worker's main process (started on Celery's ``worker_ready``), so
it keeps beating while the pool's processes run jobs.
"""

from __future__ import annotations

import logging
import threading

from service import hosts
from service.config import Settings
from service.store import JobStore
from workers import reaper, webhooks
from workers.dispatch import Send

log = logging.getLogger(__name__)


class Housekeeping(threading.Thread):
    """Every ``tick_seconds``: register, reap (one worker per tick), deliver webhooks."""

    def __init__(self, store: JobStore, settings: Settings, send: Send, *,
                 pool: str = "") -> None:
        super().__init__(name="vhdmend-housekeeping", daemon=True)
        self.store = store
        self.s = settings
        self.send = send
        self.pool = pool
        self.worker = hosts.worker_id(settings.host or "anyhost")
        self._stop_event = threading.Event()

    def tick(self) -> None:
        s = self.s
        if s.host:
            hosts.register(self.store, s.host, self.worker, s.roots,
                           ttl=3 * s.tick_seconds + 5, queue=hosts.queue_for(s.host),
                           pool=self.pool)
        if reaper.sweep_lock(self.store, s.tick_seconds * 0.9):
            reaper.reap(self.store, self.send)
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
                hosts.unregister(self.store, self.s.host, self.worker)
            except Exception as e:
                log.debug("unregister failed: %s", e)
