"""The Celery application factory: one queue per storage host, settings chosen on purpose.

Run a worker for host ``h1`` with ``celery -A workers.celery_app worker -Q vhdmend.h1``
(``vhdmend worker`` does this): Celery reads this module's ``app``, which is built on that
first access (:func:`__getattr__`), not at import. Tasks only *nudge* a job: the job record
in Redis decides whether anything runs (see :mod:`workers.tasks`), so a duplicated or
redelivered message is harmless.
"""

from __future__ import annotations

import logging
from functools import cache, partial
from typing import Any

from celery import Celery

from service.config import Settings
from service.hosts import queue_for
from workers import runtime
from workers.dispatch import Dispatcher, send_job
from workers.housekeeping import Housekeeping

log = logging.getLogger(__name__)


def make_app(broker_url: str) -> Celery:
    """A Celery app on ``broker_url`` with the settings below (the API makes its own)."""
    celery = Celery("vhdmend", broker=broker_url, include=["workers.tasks"])
    celery.conf.update(CONF)
    return celery


def dispatcher(settings: Settings) -> Dispatcher:
    """A ``send(job_id, host)`` for ``settings``' broker, its producer made on first use."""
    return Dispatcher(lambda: make_app(settings.redis_url))


CONF = dict(
    # Ack after the task returns, not on receipt: a worker that dies mid-job leaves the
    # message unacked so it is delivered again (the job resumes from its checkpoint).
    task_acks_late=True,
    # acks_late alone does not requeue when the child process is killed (-9, OOM): reject
    # it so it is redelivered. Crash loops are bounded by the job's ``max_attempts``.
    task_reject_on_worker_lost=True,
    # One message at a time per process: a job runs for hours; prefetching more would
    # park other jobs behind it on this process while other processes sit idle.
    worker_prefetch_multiplier=1,
    # The Redis transport redelivers an unacked message after ``visibility_timeout`` even
    # while the first run is still going. Our lease makes that harmless, so keep it long
    # (fewer spurious redeliveries); recovery after a crash does not wait for it: the
    # reaper requeues a job as soon as its lease expires.
    broker_transport_options={"visibility_timeout": 6 * 3600},
    # Time limits: a chunk is a few seconds of I/O, but a whole merge can take hours. The
    # hard limit only catches a hung process; the checkpoint makes the kill cheap.
    task_time_limit=48 * 3600,
    task_soft_time_limit=None,
    # Flower and `celery events` need task events.
    worker_send_task_events=True,
    task_send_sent_event=True,
    # JSON only: a message is just a job id.
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    # Keep running a job if the broker connection drops (Redis restart): the job store
    # retries on its own, and the message is acked on the new connection or redelivered.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry_on_startup=True,
    # Nothing is routed by default: the API names the host queue on every send.
    task_default_queue="vhdmend.default",
    worker_hijack_root_logger=False,
)


@cache
def worker_app() -> Celery:
    """The app of this worker process (settings from the environment), with the
    housekeeping thread tied to the worker's start and shutdown."""
    celery = make_app(runtime.settings().redis_url)
    _connect_signals()
    return celery


def __getattr__(name: str) -> Any:
    # ``celery -A workers.celery_app`` reads ``app``: build it then, not at import.
    if name == "app":
        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the worker's housekeeping thread ---------------------------------------------------

_housekeeping: list[Housekeeping] = []


def _start_housekeeping(sender: Any = None, **_: object) -> None:
    settings = runtime.settings()
    pool = getattr(getattr(sender, "pool_cls", None), "__name__", "")
    celery = getattr(sender, "app", None) or worker_app()
    thread = Housekeeping(runtime.store(), settings, partial(send_job, celery=celery),
                          pool=str(pool))
    thread.start()
    _housekeeping.append(thread)
    log.info("worker for host %r ready on queue %s, roots %s", settings.host,
             queue_for(settings.host), sorted(settings.roots))


def _stop_housekeeping(**_: object) -> None:
    for thread in _housekeeping:
        thread.stop()


def _connect_signals() -> None:
    from celery import signals
    signals.worker_ready.connect(_start_housekeeping, weak=False)
    signals.worker_shutdown.connect(_stop_housekeeping, weak=False)
