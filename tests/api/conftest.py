"""Fast API tests: the Flask test client over fakeredis, no broker (dispatch recorded)."""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis
import pytest

from api import create_app
from service.config import TokenEntry, hash_token, load
from service.store import RedisJobStore as JobStore

TOKENS = {
    "reader": ("read-token-0123456789", {"jobs:read"}),
    "writer": ("write-token-0123456789", {"jobs:read", "jobs:write"}),
    "admin": ("admin-token-0123456789", {"admin"}),
}


@dataclass
class Sent:
    """What the API handed to the broker."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, job_id: str, host: str) -> None:
        self.calls.append((job_id, host))


@pytest.fixture
def settings():
    return load({}, tokens=tuple(TokenEntry(n, hash_token(t), frozenset(s))
                                 for n, (t, s) in TOKENS.items()),
                plan_timeout=1.0, webhook_progress_step=0,
                webhook_allow_hosts=("127.0.0.1", "tickets.example"))


@pytest.fixture
def store():
    return JobStore(fakeredis.FakeRedis(), prefix="t")


@pytest.fixture
def sent():
    return Sent()


@pytest.fixture
def app(settings, store, sent):
    return create_app(settings, store=store, dispatch=sent)


@pytest.fixture
def client(app):
    return app.test_client()


def auth(who: str = "writer") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


def job_body(**over):
    body = {"type": "convert", "host": "h1", "root": "vms", "path": "vm1/disk.avhdx",
            "options": {"output": "vm1/flat.vhdx", "type": "fixed"}}
    body.update(over)
    return body
