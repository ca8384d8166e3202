"""The in-use guard: no operation changes (or copies from) a disk another opener holds.

    report = inuse.guard(paths, Purpose.MODIFY, "swap")   # raises FileInUseError

Which files, and for what, each operation says itself (``Operation.in_use_targets``).

What it sees: local processes (kernel leases, /proc/*/fd and maps of this PID namespace),
so an SMB client is seen through the smbd serving it on this host, and Samba's own
record of opens and disconnected durable handles (``smbstatus``). What it cannot see: a
process on another host (a Windows/Hyper-V host using local storage, an NFS client).
"""

from __future__ import annotations

from vhdlib.inuse.guard import check, guard
from vhdlib.inuse.model import FileCheck, Holder, Purpose, Report

__all__ = ["FileCheck", "Holder", "Purpose", "Report", "check", "guard"]
