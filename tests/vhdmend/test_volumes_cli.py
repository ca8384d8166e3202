"""``vhdmend volumes`` against a real HTTP API (werkzeug) over statuses a real scan of a
real tmpfs volume stored: table, --json, one volume, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import fakeredis

from service import config
from service.config import TokenEntry, hash_token
from service.store import RedisJobStore
from service.volumes import monitor
from tests import tmpfs
from tests.chains import create
from vhdlib.layer import DiskType

MiB = 1 << 20
TOKEN = "cli-volumes-token-0123456789"
volume = tmpfs.volume


def run(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VHDMEND_API_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "vhdmend", "volumes", "--url", url, *argv],
                          capture_output=True, text=True, env=env, timeout=60)


def test_volumes_command(volume) -> None:  # type: ignore[no-untyped-def]
    from werkzeug.serving import make_server

    from api import create_app
    vol: Path = volume("c", 128)
    store = RedisJobStore(fakeredis.FakeRedis(), prefix="cli")
    s = config.load({}, host="h1", roots={"vms": str(vol)}, reserve=16 * MiB)
    create("vhd", vol / "fixed.vhd", 8 * MiB, DiskType.FIXED).close()
    (ok,) = monitor.observe(s, store.volumes, now=1.0e9)
    app = create_app(config.load({}, tokens=(TokenEntry("t", hash_token(TOKEN),
                                                        frozenset({"jobs:read"})),)),
                     store=store, dispatch=lambda *_: None)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        r = run(url)
        assert r.returncode == 0, r.stderr
        header, row = r.stdout.splitlines()
        assert header.split()[:4] == ["VOLUME", "HOST", "ROOTS", "RISK"]
        assert row.split()[:4] == [ok["id"], "h1", "vms", "ok"]

        create("vhd", vol / "dyn.vhd", 112 * MiB, DiskType.DYNAMIC).close()
        monitor.observe(s, store.volumes, now=1.0e9 + 300)
        r = run(url, "--json")
        assert r.returncode == 1
        (item,) = json.loads(r.stdout)["items"]
        assert item["risk"] == "warning" and item["id"] == ok["id"]
        assert run(url, "--risk", "ok").stdout.count("\n") == 1  # the header alone
        one = run(url, ok["id"])
        assert one.returncode == 1
        assert "chain vms:dyn.vhd  warning" in one.stdout
        assert 'submit: {"host": "h1", "options": {"type": "fixed"}, "path": "dyn.vhd"' \
            in one.stdout
        missing = run(url, "nope")
        assert missing.returncode == 2 and "404" in missing.stderr
        assert str(vol) not in one.stdout
    finally:
        server.shutdown()
    down = run(url)
    assert down.returncode == 69 and "cannot reach" in down.stderr
