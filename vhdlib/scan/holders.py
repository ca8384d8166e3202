"""Who holds a chain's files open right now: the in-use guard's view (vhdlib.inuse).

The scan only reports; it never refuses. A file the kernel says is open but whose opener
the /proc scan cannot name is reported as an unnamed holder rather than left out.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from vhdlib import inuse


def samba_installed() -> bool:
    """Whether Samba can be asked at all (looked up once per scan, not once per chain:
    the PATH search cost 0.4 ms a chain)."""
    return shutil.which("smbstatus") is not None


def holders(paths: Sequence[str], *, ask_samba: bool = True) -> list[dict[str, Any]]:
    """Openers of any of ``paths`` that would block changing them (``[]``: nobody).
    ``ask_samba=False`` when :func:`samba_installed` said no (Samba then names nobody)."""
    try:
        report = inuse.check(paths, inuse.Purpose.MODIFY, "scan", ask_samba=ask_samba)
    except OSError as e:  # the guard could not look (e.g. /proc unreadable): say so
        return [{"path": None, "pid": None, "name": "unknown", "mode": "unknown",
                 "via": "error", "detail": str(e)}]
    found: list[dict[str, Any]] = []
    for f in report.files:
        if f.holders:
            found.extend(h.to_dict() for h in f.holders)
        elif f.busy:
            found.append({"path": f.path, "pid": None, "name": "unknown", "mode": "unknown",
                          "via": f.method, "detail": "open elsewhere; opener not named"})
    found.extend(h.to_dict() for h in report.smb_holders)
    return found
