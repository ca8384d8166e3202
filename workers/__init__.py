"""vhdmend workers: a Celery worker per storage host running jobs (:mod:`service.kinds`).

The job record (:mod:`service.store`) is the source of truth, not the broker: a task is
only a nudge to look at a job. Fenced chain locks (:mod:`service.chains`) and a token lease
per execution make redelivered or duplicated tasks harmless.
"""

from __future__ import annotations
