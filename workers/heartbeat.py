"""The heartbeat of one execution: renews its job lease and its chain lock.

Temporal's rule for long activities: every long task heartbeats. A renewal that fails
(lease lapsed, taken over) sets :attr:`Heartbeat.lost`; the execution checks it between
chunks and before every irreversible step, and stops.
"""

from __future__ import annotations

import logging
import threading

from service.chains import ChainLock, Held
from service.errors import ServiceError
from service.store import JobStore

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Renew a job lease (and, once attached, a chain lock) every third of the lease."""

    def __init__(self, store: JobStore, job_id: str, token: str, lease_seconds: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.store = store
        self.job_id = job_id
        self.token = token
        self.lease_seconds = lease_seconds
        self.lock: ChainLock | None = None
        self.held: Held | None = None
        self.lost = False
        self._stop_event = threading.Event()

    def attach(self, lock: ChainLock, held: Held) -> None:
        self.lock, self.held = lock, held

    def beat(self) -> None:
        """Renew once; mark :attr:`lost` when either lease is gone."""
        try:
            if not self.store.renew_lease(self.job_id, self.token, self.lease_seconds):
                log.warning("job %s: job lease lost", self.job_id)
                self.lost = True
            if self.lock is not None and self.held is not None and not self.lock.renew(
                    self.held):
                log.warning("job %s: chain lock %s lost", self.job_id, self.lock.identity)
                self.lost = True
        except (ServiceError, OSError) as e:
            # Redis down: keep trying; if the lease lapses meanwhile the next renewal fails.
            log.warning("job %s: heartbeat failed: %s", self.job_id, e)
        except Exception as e:  # redis-py errors (connection reset while renewing the lock)
            log.warning("job %s: heartbeat failed: %s", self.job_id, e)

    def run(self) -> None:
        while not self._stop_event.wait(self.lease_seconds / 3):
            self.beat()
            if self.lost:
                return

    def stop(self) -> None:
        self._stop_event.set()
