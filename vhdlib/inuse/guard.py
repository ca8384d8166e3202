"""The in-use guard: refuse to touch a file someone else holds open.

For each file the kernel is asked first (a lease, :mod:`vhdlib.inuse.lease`); where no
lease can be taken /proc is scanned instead (:mod:`vhdlib.inuse.procfs`), which also
names the holders. Samba is asked too where it is installed (:mod:`vhdlib.inuse.samba`).
There is no override: the operator stops the guest (or closes the file) and runs again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from vhdlib.errors import FileInUseError, InUseUnknownError
from vhdlib.inuse import lease, procfs, samba
from vhdlib.inuse.model import FileCheck, Purpose, Report

log = logging.getLogger(__name__)


def check(paths: Iterable[str], purpose: Purpose, step: str, *,
          ask_samba: bool = True) -> Report:
    """Who else has ``paths`` open, in a way that blocks ``purpose``. Missing files are
    skipped (a resumed step may already have retired them)."""
    existing = [p for p in dict.fromkeys(os.path.abspath(p) for p in paths)
                if os.path.isfile(p)]
    report = Report(step, purpose)
    for path in existing:
        try:
            report.files.append(FileCheck(path, "lease", not lease.is_free(path, purpose)))
        except lease.LeaseUnavailable as e:
            report.files.append(FileCheck(path, "proc", False, note=str(e)))
    if any(f.busy or f.method == "proc" for f in report.files):
        _name_holders(report)
    if ask_samba and existing:
        view = samba.query(existing)
        report.samba = view.status
        report.smb_holders = view.holders
    return report


def _name_holders(report: Report) -> None:
    keys = {procfs.file_key(f.path): f.path for f in report.files}
    scan = procfs.scan(keys)
    me = os.getpid()
    for f in report.files:
        found = scan.holders.get(procfs.file_key(f.path), [])
        others = [h for h in found if h.pid != me]
        relevant = [h for h in others if report.purpose is Purpose.MODIFY or h.writes]
        if f.method == "proc":
            f.holders = relevant
            f.busy = bool(relevant)
            if not f.busy and scan.unreadable:
                raise InUseUnknownError(
                    f"cannot tell whether another process has this file open: no lease "
                    f"({f.note}), and the open files of {len(scan.unreadable)} processes "
                    "cannot be read; run as root or as the file's owner", path=f.path)
            continue
        # The kernel said "in use". Its count includes this process: descriptors of its
        # own (an operation that crashed in-process, another job of the same worker) are
        # not another opener, provided the scan saw every process.
        if not others and found and not scan.unreadable:
            f.busy = False
            f.method = "lease+proc"
            f.note = "the lease was refused only for this process's own descriptors"
            continue
        f.holders = relevant or others


def guard(paths: Iterable[str], purpose: Purpose, step: str, *,
          resume_hint: str | None = None) -> Report:
    """:func:`check`, raising :class:`FileInUseError` naming every file and holder."""
    report = check(paths, purpose, step)
    blocking = report.blocking()
    log.info("in-use check before %s (%s): %s; %s", step, purpose.value, report.methods(),
             "in use" if blocking else "free")
    if not blocking:
        return report
    by_file: dict[str, list[str]] = {}
    for h in blocking:
        by_file.setdefault(h.path, []).append(h.describe())
    listing = "; ".join(f"{p} is open by {', '.join(who)}" for p, who in by_file.items())
    need = "open in any mode blocks it" if purpose is Purpose.MODIFY else \
        "open for writing blocks reading a consistent copy"
    then = f"then run 'vhdmend resume {resume_hint}'" if resume_hint else "then run again"
    raise FileInUseError(
        f"refusing to {step}: {listing} ({need}; checked by {report.methods()}). Stop the "
        f"guest or close the file, {then}; nothing was changed",
        path=blocking[0].path, holders=[h.to_dict() for h in blocking])
