"""The worker's Celery application (the factory is :mod:`workers.factory`).

Run a worker for host ``h1`` with ``celery -A workers.celery_app worker -Q vhdmend.h1``
(``vhdmend worker`` does this): Celery reads this module's ``app``, which is built on that
first access (:func:`__getattr__`), not at import. Tasks only *nudge* a job: the job record
in Redis decides whether anything runs (see :mod:`workers.tasks`), so a duplicated or
redelivered message is harmless.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cache, partial
from typing import Any

from celery import Celery

from service.errors import ConfigError
from service.hosts import queue_for
from workers import runtime
from workers.dispatch import send_job
from workers.factory import make_app
from workers.housekeeping import Housekeeping
from workers.watcher import Watcher

__all__ = ["make_app", "send_job", "worker_app"]

log = logging.getLogger(__name__)


@cache
def worker_app() -> Celery:
    """The app of this worker process (settings from the environment), with the
    housekeeping thread tied to the worker's start and shutdown."""
    # Built in the main process before the pool forks: its children name the same worker
    # (service.hosts.worker_id) in jobs and events as the main process does in /v1/hosts.
    os.environ["VHDMEND_WORKER_MAIN_PID"] = str(os.getpid())
    try:
        settings = runtime.settings()
    except ConfigError as e:
        # `celery -A workers.celery_app` loads us: one line and exit 2, no traceback.
        print(f"vhdmend: invalid configuration: {e.detail}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    celery = make_app(settings)
    _connect_signals()
    return celery


def __getattr__(name: str) -> Any:
    # ``celery -A workers.celery_app`` reads ``app``: build it then, not at import.
    if name == "app":
        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the worker's housekeeping thread ---------------------------------------------------

_housekeeping: list[Housekeeping | Watcher] = []


def _start_housekeeping(sender: Any = None, **_: object) -> None:
    settings = runtime.settings()
    pool = getattr(getattr(sender, "pool_cls", None), "__name__", "")
    celery = getattr(sender, "app", None) or worker_app()
    thread = Housekeeping(runtime.store(), settings, partial(send_job, celery=celery),
                          pool=str(pool))
    thread.start()
    _housekeeping.append(thread)
    watcher = Watcher(runtime.store(), settings, partial(send_job, celery=celery))
    watcher.start()
    _housekeeping.append(watcher)
    log.info("worker for host %r ready on queue %s, roots %s", settings.host,
             queue_for(settings.host), sorted(settings.roots))


def _stop_housekeeping(**_: object) -> None:
    for thread in _housekeeping:
        thread.stop()


def _connect_signals() -> None:
    from celery import signals
    signals.worker_ready.connect(_start_housekeeping, weak=False)
    signals.worker_shutdown.connect(_stop_housekeeping, weak=False)
