"""The vhdmend HTTP API: a Flask app factory, one folder per resource, problem+json.

    from api import create_app
    app = create_app()                      # settings from VHDMEND_* / VHDMEND_CONFIG
    app = create_app(settings, store=..., dispatch=...)   # tests: fakeredis, no broker
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from flask import Flask

from service import config as config_mod
from service import redisconn
from service.config import Settings
from service.errors import ConfigError
from service.store import JobStore, RedisJobStore, redis_client

log = logging.getLogger(__name__)

#: ``dispatch(job_id, host)``: nudge the host's worker (the Celery broker by default).
Dispatch = Callable[[str, str], None]


def _celery_dispatch(settings: Settings) -> Dispatch:
    """Send through Celery, its producer made on the first job: the API loads no worker
    module before it dispatches."""
    made: list[Dispatch] = []

    def dispatch(job_id: str, host: str) -> None:
        if not made:
            from workers.dispatch import dispatcher
            made.append(dispatcher(settings))
        made[0](job_id, host)
    return dispatch


def create_app(config: Settings | dict[str, Any] | None = None, *,
               store: JobStore | None = None, dispatch: Dispatch | None = None) -> Flask:
    """Build the app. ``config``: :class:`Settings`, overrides for :func:`config.load`, or
    ``None`` (environment). ``store``/``dispatch`` replace Redis and the Celery broker."""
    settings = config if isinstance(config, Settings) else config_mod.load(**(config or {}))
    app = Flask(__name__)
    app.config["VHDMEND_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if store is None:
        store = RedisJobStore(redis_client(settings), prefix=settings.prefix, retry_seconds=2.0,
                              webhook_progress_step=settings.webhook_progress_step)
    if dispatch is None:
        dispatch = _celery_dispatch(settings)
    app.extensions["vhdmend_store"] = store
    app.extensions["vhdmend_dispatch"] = dispatch

    from api import openapi, problems
    from api.chains.routes import bp as chains_bp
    from api.health.routes import bp as health_bp
    from api.hosts.routes import bp as hosts_bp
    from api.jobs.routes import bp as jobs_bp
    from api.kinds.routes import bp as kinds_bp
    from api.plan.routes import bp as plan_bp
    from api.ui import bp as ui_bp
    from api.volumes.routes import bp as volumes_bp
    from api.whoami.routes import bp as whoami_bp
    problems.init_app(app)
    for bp in (jobs_bp, kinds_bp, hosts_bp, plan_bp, volumes_bp, chains_bp, health_bp, openapi.bp,
               whoami_bp, ui_bp):
        app.register_blueprint(bp)
    from api.jobs.fastpath import StatusPolls
    app.wsgi_app = StatusPolls(app.wsgi_app, settings, store)  # type: ignore[method-assign]
    log.info("API ready: Redis %s, %d tokens", redisconn.target(settings).describe(),
             len(settings.tokens))
    return app


def wsgi_app() -> Flask:
    """The app for a WSGI server (gunicorn ``'api:wsgi_app()'``). An invalid configuration
    is one line on stderr and exit 3, gunicorn's "worker failed to boot", so gunicorn stops
    instead of respawning; never a traceback."""
    try:
        return create_app()
    except ConfigError as e:
        print(f"vhdmend: invalid configuration: {e.detail}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
