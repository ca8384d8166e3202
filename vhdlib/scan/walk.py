"""Finding disk files under the scan roots: by content, not only by suffix.

Every regular file is probed for a VHD/VHDX signature (the suffix is only a hint, so a
renamed disk is still found); symlinks are never followed (a link to another tree would
count its disks twice, or loop); a folder or file that cannot be read is reported, never
fatal. vhdmend's own journals and partial outputs are picked up for the chain problems.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from vhdlib import formats
from vhdlib.errors import NotADiskError
from vhdlib.formats import no_readahead
from vhdlib.journal import SUFFIX as JOURNAL_SUFFIX

#: What a copy writes before it is published (vhdlib.ops.convert.PARTIAL).
PARTIAL_SUFFIX = ".vhdmend-partial"


@dataclass(frozen=True, slots=True)
class Found:
    """One file the walk reports.

    ``kind``: ``"disk"`` (a signature matched), ``"unreadable"`` (a disk by name, or a
    folder, that could not be read: ``error`` says why), ``"journal"`` (a vhdmend
    journal) or ``"partial"`` (an unpublished vhdmend output).
    """

    path: str
    kind: str
    error: str = ""
    fmt: str = ""


def probe(path: str, size: int) -> str | None:
    """The format whose signature the file carries (the registry's probes), else ``None``.

    Reads a few small ranges (VHDX: the identifier; VHD: the footer at the end, 512 or
    the old 511 bytes, or its copy at offset 0).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        no_readahead(fd)
        return formats.probe(fd, size)
    finally:
        os.close(fd)


def check_roots(roots: list[str]) -> list[str]:
    """Absolute roots; a root that does not exist or cannot be read is a
    :class:`~vhdlib.errors.NotADiskError` (CLI exit 3)."""
    out: list[str] = []
    for root in roots:
        path = os.path.abspath(root)
        try:
            st = os.stat(path)
        except OSError as e:
            raise NotADiskError(f"cannot scan: {e.strerror}", path=path) from e
        if stat.S_ISDIR(st.st_mode):
            if not os.access(path, os.R_OK | os.X_OK):
                raise NotADiskError("cannot scan: folder not readable", path=path)
        elif not stat.S_ISREG(st.st_mode):
            raise NotADiskError("cannot scan: not a folder or a regular file", path=path)
        elif not os.access(path, os.R_OK):
            raise NotADiskError("cannot scan: file not readable", path=path)
        out.append(path)
    return out


def classify(path: str, st: os.stat_result) -> Found | None:
    """What the regular file at ``path`` is to the scan, ``None`` when it is not ours."""
    name = path.lower()
    if name.endswith(JOURNAL_SUFFIX):
        return Found(path, "journal")
    if name.endswith(PARTIAL_SUFFIX):
        return Found(path, "partial")
    # A name that says "disk" when the content does not: the file is unreadable.
    by_name = name.endswith(formats.detected_suffixes())
    if st.st_size < 511:
        return Found(path, "unreadable", f"{st.st_size} bytes: too small for a disk") \
            if by_name else None
    try:
        fmt = probe(path, st.st_size)
    except OSError as e:
        return Found(path, "unreadable", f"cannot read: {e.strerror}") if by_name else None
    if fmt is not None:
        return Found(path, "disk", fmt=fmt)
    if by_name:
        return Found(path, "unreadable", "not a VHD or VHDX image (no signature)")
    return None


def files(roots: list[str]) -> Iterator[tuple[str, os.stat_result] | Found]:
    """Every regular file under ``roots`` (a file given as a root included) once, with its
    ``lstat``; a folder that cannot be listed comes out as an unreadable :class:`Found`.

    Depth first with an explicit stack (no recursion limit; memory bounded by the tree's
    depth times its widest folder, plus one inode key per file so overlapping roots and
    hard links do not count a disk twice). Symlinks are skipped, never followed.
    """
    seen: set[tuple[int, int]] = set()
    stack = list(reversed(roots))
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except OSError as e:
            yield Found(path, "unreadable", f"cannot stat: {e.strerror}")
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(path) as it:
                    names = sorted(entry.path for entry in it)
            except OSError as e:
                yield Found(path, "unreadable", f"cannot list folder: {e.strerror}")
                continue
            stack.extend(reversed(names))
            continue
        if not stat.S_ISREG(st.st_mode):
            continue  # symlinks, devices, sockets, fifos
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        yield path, st
