"""Redis down (a Sentinel failover under way, a restart): 503 problem bodies, never a 500."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api import create_app
from service.store import RedisJobStore
from tests.api.conftest import auth
from tests.workers.conftest import free_port


def test_every_read_answers_503_with_retry_after_while_redis_is_down(settings, sent):
    # Nothing listens there; no client-side retries (redis-py's default backs off ~4 s).
    dead = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    app = create_app(settings, store=RedisJobStore(dead, prefix="t"), dispatch=sent)
    client = app.test_client()
    for path in ("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/v1/hosts", "/v1/jobs",
                 "/v1/volumes"):
        resp = client.get(path, headers=auth("reader"))
        assert resp.status_code == 503, (path, resp.get_json())
        body = resp.get_json()
        assert body["type"].endswith("/unavailable") and "Redis" in body["detail"], body
        assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert client.get("/readyz").status_code == 503
