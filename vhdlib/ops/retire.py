"""Retiring old disks: archive them (hard link or copy) or delete them, durably."""

from __future__ import annotations

import os
import shutil

from vhdlib import attributes
from vhdlib.journal import fsync_dir


def same_volume(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` (or their nearest existing folders) share a device."""
    def dev(p: str) -> int:
        p = os.path.abspath(p)
        while not os.path.exists(p):
            p = os.path.dirname(p)
        return os.stat(p).st_dev
    return dev(a) == dev(b)


def archive_file(src: str, folder: str) -> str:
    """Put ``src`` into ``folder`` without removing it (link, or copy across volumes).

    Idempotent: an existing archived copy of the same size is kept. Returns the new path.
    """
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, os.path.basename(src))
    if os.path.exists(dest):
        if os.path.exists(src) and os.path.samefile(src, dest):
            return dest
        if os.path.exists(src) and os.path.getsize(dest) == os.path.getsize(src):
            return dest
        os.unlink(dest)
    if same_volume(src, folder):
        os.link(src, dest)
    else:
        tmp = dest + ".part"
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 8 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        # The archived copy keeps the original's owner, mode, ACL and xattrs where it can.
        attributes.carry(src, tmp, drop=True)
        os.replace(tmp, dest)
    fsync_dir(folder)
    return dest


def unlink_durably(paths: list[str]) -> None:
    """Remove ``paths`` (missing ones are fine) and fsync their folders."""
    folders = set()
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            continue
        folders.add(os.path.dirname(os.path.abspath(p)))
    for folder in folders:
        fsync_dir(folder)
