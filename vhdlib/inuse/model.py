"""What the in-use guard found: openers of a file, and how each file was checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Purpose(Enum):
    """Why the chain is checked, which decides what an opener blocks.

    ``MODIFY``: the file is written, swapped or retired; any other opener blocks.
    ``READ``: the file is only read for a copy; only an opener that may write blocks
    (no consistent copy can be read from a disk being written).
    """

    MODIFY = "modify"
    READ = "read"


@dataclass(frozen=True)
class Holder:
    """One opener of a file: a local process, or an SMB open Samba knows of."""

    path: str
    pid: int | None
    name: str
    #: ``read``, ``write`` (read/write or write-only), or ``unknown``.
    mode: str
    #: ``fd``, ``mmap``, ``lease`` (local) or ``smb`` / ``smb-durable`` (Samba).
    via: str
    detail: str = ""

    @property
    def writes(self) -> bool:
        return self.mode != "read"

    def describe(self) -> str:
        who = f"pid {self.pid} ({self.name})" if self.pid is not None else self.name
        extra = f", {self.detail}" if self.detail else ""
        return f"{who}, {self.mode} via {self.via}{extra}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "pid": self.pid, "name": self.name, "mode": self.mode,
                "via": self.via, "detail": self.detail}


@dataclass
class FileCheck:
    """The verdict on one file and the method that gave it."""

    path: str
    #: ``lease`` (the kernel's answer), ``proc`` (a scan of /proc/*/fd and maps), or
    #: ``lease+proc`` (the lease was refused for this process's own descriptors only).
    method: str
    busy: bool
    holders: list[Holder] = field(default_factory=list)
    #: Why the lease could not be taken (when the method is ``proc``).
    note: str = ""


@dataclass
class Report:
    """The guard's answer for a chain at one step."""

    step: str
    purpose: Purpose
    files: list[FileCheck] = field(default_factory=list)
    #: What Samba said or why it was not asked (``smbstatus --json``, ``not installed``...).
    samba: str = ""
    smb_holders: list[Holder] = field(default_factory=list)

    def methods(self) -> str:
        """One line: which method checked which files, and Samba's part."""
        by: dict[str, int] = {}
        for f in self.files:
            by[f.method] = by.get(f.method, 0) + 1
        names = {"lease": "kernel lease", "proc": "/proc scan",
                 "lease+proc": "kernel lease and /proc scan"}
        parts = [f"{names.get(m, m)} ({n} file{'s' if n != 1 else ''})"
                 for m, n in sorted(by.items())]
        if self.samba:
            parts.append(f"samba: {self.samba}")
        return "; ".join(parts)

    def blocking(self) -> list[Holder]:
        """Every holder that blocks this purpose (local and SMB)."""
        out: list[Holder] = []
        for f in self.files:
            if f.busy:
                out.extend(f.holders or [Holder(f.path, None, "an unidentified opener",
                                                "unknown", f.method)])
        out.extend(h for h in self.smb_holders
                   if self.purpose is Purpose.MODIFY or h.writes)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"step": self.step, "purpose": self.purpose.value, "methods": self.methods(),
                "files": [{"path": f.path, "method": f.method, "busy": f.busy,
                           "note": f.note} for f in self.files],
                "samba": self.samba}
