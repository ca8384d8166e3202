"""The service core stands apart: the API loads no worker module (nor Celery), the core
loads neither Celery nor Flask, and importing the Celery module builds no app."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_after(code: str) -> list[str]:
    probe = (f"import sys, json\n{code}\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('workers', 'celery', 'flask', 'kombu'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env=None)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_api_loads_no_worker_module() -> None:
    mods = loaded_after("import api\napi.create_app({})")
    assert not [m for m in mods if m.startswith(("workers", "celery", "kombu"))], mods


def test_the_core_loads_neither_celery_nor_flask() -> None:
    mods = loaded_after("import service.store, service.kinds, service.chains, service.hosts")
    assert mods == [], mods


def test_importing_the_celery_module_builds_no_app() -> None:
    built = subprocess.run([sys.executable, "-c", (
        "import celery.app.base as b\nmade = []\norig = b.Celery.__init__\n"
        "def init(self, *a, **k):\n    made.append(1)\n    orig(self, *a, **k)\n"
        "b.Celery.__init__ = init\nimport workers.celery_app, workers.tasks\n"
        "print(len(made))")], capture_output=True, text=True, check=True)
    assert built.stdout.strip() == "0", built.stdout + built.stderr


def test_the_api_dispatches_without_the_worker_code() -> None:
    # The producer the API makes on its first dispatch: the factory, not the worker's app,
    # its housekeeping or its tasks.
    mods = loaded_after("import api\nfrom workers.dispatch import dispatcher\n"
                        "from service.config import load\nd = dispatcher(load({}))\n"
                        "d._app = d._make()")
    assert sorted(m for m in mods if m.startswith("workers")) == [
        "workers", "workers.dispatch", "workers.factory"], mods
