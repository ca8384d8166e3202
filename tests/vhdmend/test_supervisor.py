"""The supervisor of ``vhdmend up`` (vhdmend.supervisor) with small real processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from tests.vhdmend.test_up import alive, group_members
from vhdmend.backoff import BackoffPolicy
from vhdmend.supervisor import ChildSpec, Supervisor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups")

#: A parent that forks a grandchild (as Celery forks its pool), both sleeping.
FORKING = ("import os, sys, time\n"
           "pid = os.fork()\n"
           "if pid == 0:\n"
           "    time.sleep(120); os._exit(0)\n"
           "open(sys.argv[1], 'a').write(f'{pid}\\n')\n"
           "time.sleep(120)\n")

#: Records SIGTERM in a file, then exits.
TERMINABLE = ("import signal, sys, time\n"
              "def term(*_):\n"
              "    open(sys.argv[1], 'w').write('term'); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, term)\n"
              "open(sys.argv[1] + '.ready', 'w').close()\n"
              "time.sleep(120)\n")


def spec(tmp_path, name, code, *args):
    return ChildSpec(name, [sys.executable, "-c", code, *args], dict(os.environ),
                     str(tmp_path / f"{name}.log"))


def wait(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := fn()):
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_killed_child_is_restarted_and_its_orphans_are_killed(tmp_path):
    grandchildren = tmp_path / "grandchildren"
    sup = Supervisor([spec(tmp_path, "w", FORKING, str(grandchildren))], str(tmp_path),
                     BackoffPolicy(base=0.2), say=lambda m: None)
    c = sup.child("w")
    try:
        sup.start(c)
        first = c.proc.pid
        assert int((tmp_path / "w.pid").read_text()) == first
        orphan = int(wait(lambda: grandchildren.exists() and grandchildren.read_text()))
        os.kill(first, signal.SIGKILL)
        wait(lambda: (sup.check(), c.proc is None)[1])
        # The dead child's group is killed at once; the restart waits for the backoff
        wait(lambda: not alive(orphan), 5)
        assert c.restart_at is not None
        t0 = time.monotonic()
        wait(lambda: (sup.check(), c.proc is not None)[1])
        assert time.monotonic() - t0 <= 0.5
        assert c.proc.pid != first and int((tmp_path / "w.pid").read_text()) == c.proc.pid
        assert c.history[0][1] == -signal.SIGKILL
    finally:
        pids = [c.proc.pid] if c.proc else []
        sup.stop_all()
    assert not any(alive(p) for p in pids) and not any(group_members(p) for p in pids)
    assert not (tmp_path / "w.pid").exists()


def test_a_crash_loop_gives_up_and_says_so(tmp_path):
    said: list[str] = []
    sup = Supervisor([spec(tmp_path, "api", "raise SystemExit(3)")], str(tmp_path),
                     BackoffPolicy(base=0.01, cap=0.05, reset_after=60, give_up_after=3),
                     say=said.append)
    sup.start(sup.child("api"))
    assert sup.run() == 1
    assert sup.child("api").starts == 4                  # the first start + 3 restarts
    assert "exited with code 3" in said[0] and "restarting in 0.01 s" in said[0]
    assert any("crash loop: 3 quick exits in a row" in m for m in said)
    assert sup.gave_up and "api crash loop: exited 3 times in a row" in sup.gave_up
    assert "giving up" in said[-1]


def test_stop_sends_sigterm_to_every_child_and_kills_one_that_ignores_it(tmp_path):
    marks = [tmp_path / "a.mark", tmp_path / "b.mark"]
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
               "time.sleep(120)\n"
    sup = Supervisor([spec(tmp_path, "a", TERMINABLE, str(marks[0])),
                      spec(tmp_path, "b", TERMINABLE, str(marks[1])),
                      spec(tmp_path, "c", stubborn)], str(tmp_path),
                     BackoffPolicy(), stop_timeout=0.5, say=lambda m: None)
    for c in sup.children:
        sup.start(c)
    pids = [c.proc.pid for c in sup.children]
    wait(lambda: all(os.path.exists(f"{m}.ready") for m in marks))
    runner = threading.Thread(target=sup.run)
    runner.start()
    time.sleep(0.3)                                      # let it supervise a little
    sup.request_stop(signal.SIGTERM)
    runner.join(20)
    assert not runner.is_alive()
    assert [m.read_text() for m in marks] == ["term", "term"]
    assert not any(alive(p) for p in pids)
    assert all(c.starts == 1 for c in sup.children)      # a stop is not a crash
