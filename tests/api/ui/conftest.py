"""The dashboard in a real Chromium (Debian's, driven by Playwright; never a downloaded
browser) against a real stack: redis-server, the API over real HTTP, a real Celery worker
whose watcher scans a real tmpfs volume.

Screenshots of each page go to ``VHDMEND_ARTEFACTS`` (default ``tmp/artefacts/ui``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.store import RedisJobStore
from tests import tmpfs
from tests.chains import create
from tests.workers.conftest import REPO, TOKEN, Stack, free_port, make_chain, redis_server, wait_for
from vhdlib.layer import DiskType

__all__ = ["redis_server"]

MiB = 1 << 20
READ_TOKEN = "read-only-token-0123456789"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("VHDMEND_ARTEFACTS", REPO / "tmp" / "artefacts" / "ui"))


@dataclass
class Dash:
    """The stack the browser talks to."""

    url: str
    stack: Stack
    small: str
    big: str
    volume_id: str


@pytest.fixture(scope="module")
def dash(redis_server, tmp_path_factory) -> Iterator[Dash]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("dash")
    vol = tmp / "vol"
    tmpfs.mount(vol, 200)
    stack = Stack(redis_server, tmp)
    try:
        root = vol / "vms"
        root.mkdir()
        small = make_chain(root / "small", size=8 * MiB)
        big = make_chain(root / "big", size=32 * MiB)
        # Over-committed: a dynamic disk that can grow past the free space (risk warning).
        create("vhd", root / "dyn.vhd", 256 * MiB, DiskType.DYNAMIC).close()
        stack.worker("h1", VHDMEND_ROOTS=f"vms={root}", VHDMEND_SCAN_INTERVAL="1",
                     VHDMEND_RESERVE=str(16 * MiB), VHDMEND_MAX_RATE=str(2 * MiB))
        stack.ready("h1")
        store = RedisJobStore(stack.server.client(), prefix=stack.prefix)
        statuses = wait_for(lambda: store.volumes.statuses(), 30, what="a first scan")
        # A few scans, so the plot has a history to draw.
        seen = statuses[0]["scanned_at_unix"]
        wait_for(lambda: store.volumes.status(statuses[0]["id"])["scanned_at_unix"] > seen + 2,
                 30, what="more scans")
        url = _api(stack)
        yield Dash(url, stack, f"small/{small[-1].name}", f"big/{big[-1].name}",
                   statuses[0]["id"])
    finally:
        stack.close()
        subprocess.run(["umount", "-l", str(vol)], check=False)


def _api(stack: Stack) -> str:
    from werkzeug.serving import make_server

    from api import create_app
    from service.config import TokenEntry, hash_token, load
    tokens = (TokenEntry("operator", hash_token(TOKEN), frozenset({"admin"})),
              TokenEntry("viewer", hash_token(READ_TOKEN), frozenset({"jobs:read"})))
    settings = load({}, redis_url=stack.server.url, prefix=stack.prefix, tokens=tokens,
                    plan_timeout=20.0)
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.http = server
    return f"http://127.0.0.1:{server.server_port}"


@dataclass
class Watch:
    """What a page did: every request URL, console errors, uncaught exceptions."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser(dash, tmp_path_factory):  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI but not installed")
        pytest.skip("chromium not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser, dash):  # type: ignore[no-untyped-def]
    """A fresh tab (its own sessionStorage), every request recorded; none may leave."""
    watch = Watch()

    def route(r):  # type: ignore[no-untyped-def]
        watch.requests.append(r.request.url)
        if r.request.url.startswith(dash.url + "/"):
            r.continue_()
        else:
            r.abort()

    pg = browser.new_page()
    pg.route("**/*", route)
    pg.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: watch.errors.append(str(e)))
    pg.watch = watch
    yield pg
    pg.close()


def shot(pg, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path
