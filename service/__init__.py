"""The vhdmend service core, apart from Celery and Flask.

Job states and their transitions (:mod:`.states`), the job record (:mod:`.job`), the job
store (:mod:`.store`: abstract, Redis, stub) and its key names (:mod:`.keys`), the token
lease (:mod:`.lease`), chain scheduling (:mod:`.chains`), job kinds (:mod:`.kinds`),
config, errors, paths and the host registry. ``workers`` (Celery) and ``api`` (Flask)
both depend on it; it depends on neither.
"""

from __future__ import annotations
