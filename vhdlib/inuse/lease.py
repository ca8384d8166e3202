"""The kernel's own answer: can this process take a lease on the file right now?

fcntl(2) F_SETLEASE: a write lease is granted only while no one else has the file open
(in any mode); a read lease only while no one has it open for writing. The lease is
dropped at once; it only serves as the question. Leases need the file's owner or
CAP_LEASE and a filesystem that grants them (tmpfs, ext4, xfs, btrfs; not NFS/CIFS).
"""

from __future__ import annotations

import errno
import fcntl
import os

from vhdlib.inuse.model import Purpose

# Python names them on Linux only; the values are the kernel ABI.
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_RDLCK = getattr(fcntl, "F_RDLCK", 0)
F_WRLCK = getattr(fcntl, "F_WRLCK", 1)
F_UNLCK = getattr(fcntl, "F_UNLCK", 2)


class LeaseUnavailable(Exception):
    """No lease can be asked for here (not the owner, filesystem without leases...)."""


def is_free(path: str, purpose: Purpose) -> bool:
    """True when the kernel grants the lease ``purpose`` needs (no blocking opener).

    Raises :class:`LeaseUnavailable` (with the reason) when the question cannot be asked;
    the caller falls back to scanning /proc.
    """
    try:
        # O_NONBLOCK: an open that would have to break someone's lease fails at once
        # (EWOULDBLOCK) instead of waiting for them, which itself says: in use.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except BlockingIOError:
        return False
    try:
        kind = F_WRLCK if purpose is Purpose.MODIFY else F_RDLCK
        try:
            fcntl.fcntl(fd, F_SETLEASE, kind)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EBUSY):
                return False
            reason = {errno.EACCES: "not the file's owner and no CAP_LEASE",
                      errno.EPERM: "not the file's owner and no CAP_LEASE",
                      errno.EINVAL: "the filesystem grants no leases",
                      errno.ENOLCK: "no lease available"}.get(e.errno or 0, e.strerror)
            raise LeaseUnavailable(str(reason)) from e
        fcntl.fcntl(fd, F_SETLEASE, F_UNLCK)
        return True
    finally:
        os.close(fd)
