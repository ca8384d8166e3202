"""Requeue jobs whose execution died: the lease expired without a renewal.

Any worker may reap any job (it sends the nudge to the job's own host queue); a short
Redis lock keeps the workers from doing the same sweep at once, and the guarded
transitions make a duplicate sweep harmless anyway.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from service import states
from service.errors import Conflict, LostLease, NotFound
from service.store import JobStore

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]


def reap(store: JobStore, send: Send, *, requeue_after: float = 30.0,
         waiting_retry: float = 5.0, now: float | None = None) -> list[str]:
    """One sweep; returns the ids of jobs nudged again.

    * running/cancelling with no live lease: requeued (cancelling stays cancelling, so the
      next execution cleans up); pausing with no lease: paused (the journal stays).
    * queued jobs waiting for a chain lock are nudged every ``waiting_retry`` seconds, and
      other queued jobs not claimed within ``requeue_after`` (a message lost with a Redis
      restart) are nudged again; a duplicate nudge is harmless.
    """
    now = time.time() if now is None else now
    nudged: list[str] = []
    for state in sorted(states.ACTIVE):
        for job_id in store.ids_in_state(state):
            if store.lease_alive(job_id):
                continue
            try:
                job = store.get(job_id)
                target = states.when_lease_lost(state)
                # A job that had an execution (a lease token) lost it: that is an event. A
                # cancelling job waiting for its chain has none: it is only nudged again,
                # without filling its history with one event per sweep.
                died = bool(job.lease_token)
                # Guarded by the dead execution's token: if a new claim slipped in between,
                # the transition fails and we leave the job alone.
                store.transition(job_id, [state], target, token=job.lease_token,
                                 set_fields={"reason": "previous execution stopped "
                                             "heartbeating; requeued"
                                             if target == states.QUEUED else None},
                                 delete=["lease_token"],
                                 event={"type": "reaped", "worker": job.worker}
                                 if died else None)
            except (Conflict, LostLease, NotFound):
                continue
            if died:
                log.warning("job %s: lease expired while %s; reaped", job_id, state)
            else:
                log.debug("job %s: %s without an execution; nudged again", job_id, state)
            if state != states.PAUSING:
                send(job_id, job.host)
                nudged.append(job_id)
    for job_id in store.ids_in_state(states.QUEUED):
        try:
            job = store.get(job_id)
        except NotFound:
            continue
        age = now - job.updated_at
        if (job.reason and age >= waiting_retry) or age >= requeue_after:
            if store.lease_alive(job_id):
                continue
            log.info("job %s: still queued after %.0fs; nudging again", job_id, age)
            send(job_id, job.host)
            # Touch updated_at so we do not nudge it again every sweep.
            with contextlib.suppress(Conflict, NotFound):
                store.transition(job_id, [states.QUEUED], None)
            nudged.append(job_id)
    return nudged


def sweep_lock(store: JobStore, ttl: float) -> bool:
    """Take the reaper's turn (True) unless another worker swept within ``ttl``."""
    return store.take_turn("reaper", ttl)
