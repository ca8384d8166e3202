"""The Celery app factory: settings chosen on purpose, one queue per storage host.

Both the worker (:mod:`workers.celery_app`) and the producers (the API, a job waking the
waiters of its chain, :mod:`workers.dispatch`) make their app here.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from service import redisconn
from service.config import Settings


def make_app(broker: Settings | str) -> Celery:
    """A Celery app with the settings below, on ``broker``: the service's settings (one
    Redis, or Sentinels and the master's name: :func:`service.redisconn.celery_broker`) or
    a plain ``redis://`` URL."""
    if isinstance(broker, Settings):
        url, extra = redisconn.celery_broker(broker)
    else:
        url, extra = broker, {}
    celery = Celery("vhdmend", broker=url, include=["workers.tasks"])
    celery.conf.update(CONF)
    options: dict[str, Any] = {**BROKER_TRANSPORT_OPTIONS, **extra}
    celery.conf.broker_transport_options = options
    return celery


#: The Redis transport redelivers an unacked message after ``visibility_timeout`` even
#: while the first run is still going. Our lease makes that harmless, so keep it long
#: (fewer spurious redeliveries); recovery after a crash does not wait for it: the
#: reaper requeues a job as soon as its lease expires.
BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"visibility_timeout": 6 * 3600}

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
    # With Sentinels (``sentinel://`` URL), make_app adds ``master_name`` and the
    # Sentinels' password: kombu's Sentinel transport then follows a failover.
    broker_transport_options=BROKER_TRANSPORT_OPTIONS,
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
    # No result backend: the job record in Redis is the result (nothing to fail over).
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
