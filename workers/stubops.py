"""An in-package stub operation engine, for testing the service without real disks.

Every kind of operation copies the input file chunk by chunk into ``<target>.partial``
(target: ``options["output"]`` or ``<path>.out``), checkpointing into a journal
``<target>.vhdmend.json`` after each chunk, then swaps the copy into place: the one
irreversible step, fenced exactly as vhdlib's engine fences it. Each chunk written is
appended to ``<target>.chunks`` so tests can count chunks redone after a crash.
``VHDMEND_STUB_DELAY`` (seconds per chunk) makes jobs slow enough to interrupt.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from vhdlib.errors import Cancelled, FenceError, NotADiskError, OperationInProgressError
from vhdlib.progress import Progress

log = logging.getLogger(__name__)

SUFFIX = ".vhdmend.json"


class StubPlan:
    """A plan with the shape of vhdlib's."""

    def __init__(self, kind: str, path: str, target: str, size: int) -> None:
        self.kind, self.path, self.target, self.size = kind, path, target, size

    def to_dict(self) -> dict[str, Any]:
        st = os.statvfs(os.path.dirname(self.target))
        return {"operation": self.kind, "target": self.target, "inputs": [self.path],
                "outputs": [self.target],
                "steps": [{"name": "copy", "description": "copy", "read_bytes": self.size,
                           "write_bytes": self.size, "irreversible": False},
                          {"name": "swap", "description": "rename into place",
                           "read_bytes": 0, "write_bytes": 0, "irreversible": True}],
                "read_bytes": self.size, "write_bytes": self.size,
                "space": [{"volume": os.path.dirname(self.target), "needed_bytes": self.size,
                           "free_bytes": st.f_bavail * st.f_frsize}],
                "space_ok": True, "details": {}}


def _save(path: str, state: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StubOperation:
    """A resumable, fenced, chunked copy."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.plan = StubPlan(state["operation"], state["input"], state["target"], state["size"])

    @property
    def journal_path(self) -> str:
        return str(self.state["journal"])

    def _journal_fence(self) -> int | None:
        try:
            with open(self.journal_path) as f:
                value = json.load(f).get("fence")
        except (OSError, ValueError):
            return None
        return None if value is None else int(value)

    def run(self, *, progress: Any = None, cancel: Any = None, pause: Any = None,
            on_checkpoint: Any = None, before_irreversible: Any = None,
            fence: int | None = None, chunk_bytes: int = 1 << 20,
            chunk_seconds: float = 3.0) -> dict[str, Any]:
        st = self.state
        if fence is not None:
            on_disk = self._journal_fence()
            if on_disk is not None and on_disk > fence:
                raise FenceError(f"fence {fence} is stale: journal holds {on_disk}",
                                 path=self.journal_path)
            st["fence"] = fence
        if st["phase"] is None:
            if os.path.exists(self.journal_path):
                raise OperationInProgressError("journal exists", path=st["target"])
            st["phase"] = "copy"
            open(st["partial"], "wb").close()
        _save(self.journal_path, st)
        delay = float(os.environ.get("VHDMEND_STUB_DELAY", "0"))
        size = st["size"]
        with open(st["input"], "rb") as src, open(st["partial"], "r+b") as dst:
            while st["phase"] == "copy":
                n = min(chunk_bytes, size - st["cursor"])
                src.seek(st["cursor"])
                data = src.read(n)
                dst.seek(st["cursor"])
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
                if delay:
                    time.sleep(delay)
                with open(st["target"] + ".chunks", "a") as log_f:
                    log_f.write(f"{st['cursor']}\n")
                st["cursor"] += n
                if st["cursor"] >= size:
                    st["phase"] = "swap"
                _save(self.journal_path, st)
                if on_checkpoint is not None:
                    on_checkpoint(dict(st))
                if progress is not None:
                    progress(Progress(st["operation"], "copy", st["cursor"], size,
                                      st["cursor"], size))
                if st["phase"] != "copy":
                    break
                if cancel is not None and cancel():
                    os.unlink(st["partial"])
                    os.unlink(self.journal_path)
                    raise Cancelled("cancelled; originals are valid", path=st["target"])
                if pause is not None and pause():
                    return {"status": "paused", "journal": self.journal_path}
        # The irreversible step: the caller's hook, then the on-disk fence.
        if before_irreversible is not None:
            before_irreversible("swap")
        on_disk = self._journal_fence()
        if fence is not None and on_disk is not None and on_disk != fence:
            raise FenceError(f"before swap: fence {fence} lost to {on_disk}",
                             path=self.journal_path)
        os.replace(st["partial"], st["target"])
        os.unlink(self.journal_path)
        if progress is not None:
            progress(Progress(st["operation"], "done", size, size, size, size))
        return {"status": "done", "output": st["target"], "bytes": size}


def prepare(kind: str, path: str, second: str | None = None, **options: Any) -> StubOperation:
    """A fresh stub operation of ``kind`` on ``path`` (``second``: output or into)."""
    if second is not None and kind != "merge":
        options["output"] = second
    if not os.path.isfile(path):
        raise NotADiskError("no such file", path=path)
    target = os.path.abspath(options.get("output") or path + ".out")
    state = {"operation": kind, "input": os.path.abspath(path), "target": target,
             "partial": target + ".partial", "journal": target + SUFFIX,
             "size": os.path.getsize(path), "phase": None, "cursor": 0, "fence": None,
             "options": options}
    return StubOperation(state)


def resume(journal_path: str, *, fence: int | None = None) -> StubOperation:
    """Continue from a journal."""
    with open(journal_path) as f:
        state = json.load(f)
    return StubOperation(state)
