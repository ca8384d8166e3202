"""vhdmend workers: a Celery worker per storage host running vhdlib operations as jobs.

The job record in Redis (:mod:`workers.jobstore`) is the source of truth, not the broker:
a task is only a nudge to look at a job. Per-chain locks with fencing (:mod:`workers.lock`)
and a lease per execution make redelivered or duplicated tasks harmless.
"""

from __future__ import annotations
