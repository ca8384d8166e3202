"""Who has a file open on this host: a scan of /proc/<pid>/fd, fdinfo and maps.

It names the holders (pid, process name, mode) when the kernel's lease says "in use",
and gives the verdict itself where no lease can be asked for. It sees only processes of
this host's (this container's) PID namespace that this process may inspect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vhdlib.inuse.model import Holder

PROC = "/proc"
_WRITE_ACCMODES = (os.O_WRONLY, os.O_RDWR)


@dataclass
class Scan:
    """Holders found per file key ``(st_dev, st_ino)``, and pids that could not be read."""

    holders: dict[tuple[int, int], list[Holder]] = field(default_factory=dict)
    unreadable: list[int] = field(default_factory=list)


def file_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _comm(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _fd_mode(pid: int, fd: str) -> str:
    try:
        with open(f"{PROC}/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags:"):
                    flags = int(line.split()[1], 8)
                    return "write" if (flags & os.O_ACCMODE) in _WRITE_ACCMODES else "read"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def scan(paths: dict[tuple[int, int], str], *, exclude_pid: int | None = None) -> Scan:
    """Every process's open descriptors and shared mappings of the files ``paths``
    (keyed by ``(st_dev, st_ino)``, so renamed or hard-linked names still match)."""
    out = Scan()
    try:
        pids = [int(n) for n in os.listdir(PROC) if n.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if pid == exclude_pid:
            continue
        found = _scan_fds(pid, paths, out) + _scan_maps(pid, paths)
        for key, holder in found:
            out.holders.setdefault(key, []).append(holder)
    return out


def _scan_fds(pid: int, paths: dict[tuple[int, int], str], out: Scan
              ) -> list[tuple[tuple[int, int], Holder]]:
    base = f"{PROC}/{pid}/fd"
    try:
        fds = os.listdir(base)
    except FileNotFoundError:
        return []  # exited meanwhile
    except OSError:
        out.unreadable.append(pid)
        return []
    found = []
    for fd in fds:
        try:
            st = os.stat(f"{base}/{fd}")
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in paths:
            found.append((key, Holder(paths[key], pid, _comm(pid), _fd_mode(pid, fd), "fd")))
    return found


def _scan_maps(pid: int, paths: dict[tuple[int, int], str]
               ) -> list[tuple[tuple[int, int], Holder]]:
    # A mapping outlives the descriptor it came from: still a reader (or a writer).
    inodes = {ino for _dev, ino in paths}
    found: dict[tuple[int, int], Holder] = {}
    try:
        with open(f"{PROC}/{pid}/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 5 or not parts[4].isdigit() or int(parts[4]) not in inodes:
                    continue
                major, _, minor = parts[3].partition(":")
                key = (os.makedev(int(major, 16), int(minor, 16)), int(parts[4]))
                if key not in paths:
                    continue
                perms = parts[1]
                mode = "write" if perms[1] == "w" and perms[3] == "s" else "read"
                if key not in found or mode == "write":
                    found[key] = Holder(paths[key], pid, _comm(pid), mode, "mmap")
    except (OSError, ValueError):
        return []
    return list(found.items())
