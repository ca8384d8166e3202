"""Nudging a host's worker: a Celery message carrying a job id, on the host's queue.

The message is only a nudge: the job record decides whether anything runs, so a
duplicated or lost message is harmless (the reaper nudges again).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from service.config import Settings
from service.hosts import queue_for
from workers.factory import make_app

log = logging.getLogger(__name__)

#: ``send(job_id, host)``.
Send = Callable[[str, str], None]

TASK_NAME = "vhdmend.run_job"


def send_job(job_id: str, host: str, *, celery: Any) -> None:
    """Nudge the worker of ``host`` to look at job ``job_id`` through app ``celery``."""
    celery.send_task(TASK_NAME, args=[job_id], queue=queue_for(host))
    log.debug("job %s: nudged queue %s", job_id, queue_for(host))


class Dispatcher:
    """A :data:`Send` whose Celery producer is made on first use (``make`` builds it)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._app: Any = None
        self._lock = threading.Lock()

    def __call__(self, job_id: str, host: str) -> None:
        with self._lock:
            if self._app is None:
                self._app = self._make()
        send_job(job_id, host, celery=self._app)


def dispatcher(settings: Settings) -> Dispatcher:
    """A ``send(job_id, host)`` for ``settings``' broker, its producer made on first use."""
    return Dispatcher(lambda: make_app(settings))
