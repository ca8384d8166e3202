"""Format detection: which :class:`~vhdlib.layer.Layer` class opens a file."""

from __future__ import annotations

import contextlib
import os
import stat

from vhdlib import fileio
from vhdlib.errors import ImageError, NotADiskError, UnsupportedError
from vhdlib.layer import Layer

VHDX_SIGNATURE = b"vhdxfile"
VHD_COOKIE = b"conectix"


def _open_fd(path: str, writable: bool) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise NotADiskError("no such file", path=path) from e
    except OSError as e:
        raise NotADiskError(f"cannot stat: {e.strerror}", path=path) from e
    if stat.S_ISDIR(st.st_mode):
        raise NotADiskError("is a directory, not a disk image", path=path)
    if not stat.S_ISREG(st.st_mode):
        raise NotADiskError("is not a regular file (device, socket or fifo)", path=path)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags)
    except OSError as e:
        raise NotADiskError(f"cannot open: {e.strerror}", path=path) from e


def detect(path: str) -> str:
    """Return ``"vhd"`` or ``"vhdx"`` from the file's signatures; raise if neither."""
    fd = _open_fd(path, False)
    try:
        size = os.fstat(fd).st_size
        head = fileio.pread(fd, 8, 0)
        if head == VHDX_SIGNATURE:
            return "vhdx"
        if head == VHD_COOKIE:
            return "vhd"
        if size >= 512 and fileio.pread(fd, 8, size - 512) == VHD_COOKIE:
            return "vhd"
        # Some old writers used a 511-byte footer (VHD spec, "Hard Disk Footer Format").
        if size >= 511 and fileio.pread(fd, 8, size - 511) == VHD_COOKIE:
            return "vhd"
    finally:
        os.close(fd)
    if size == 0:
        raise ImageError("empty file: not a VHD or VHDX image", path=path)
    raise ImageError("not a VHD or VHDX image (no 'conectix' footer, no 'vhdxfile' "
                     "identifier)", path=path)


def no_readahead(fd: int) -> None:
    """Turn off the kernel's read-ahead for ``fd`` (a hint: ignored where unsupported)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_RANDOM)


def open_layer(path: str, *, writable: bool = False, lenient: bool = False,
               fmt: str | None = None, headers_only: bool = False) -> Layer:
    """Open one file as a layer of the right format (no parent resolution).

    ``headers_only``: the caller reads structures, not payload (the scan), so the kernel's
    read-ahead is turned off for this descriptor: on a cold cache each small read would
    otherwise pull in (or zero-fill, over holes) far more than it needs.
    """
    fmt = fmt or detect(path)
    fd = _open_fd(path, writable)
    try:
        if headers_only:
            no_readahead(fd)
        if fmt == "vhd":
            from vhdlib.vhd import VhdLayer
            return VhdLayer(path, fd, writable=writable, lenient=lenient)
        if fmt == "vhdx":
            from vhdlib.vhdx import VhdxLayer
            return VhdxLayer(path, fd, writable=writable, lenient=lenient)
        if fmt == "raw":
            from vhdlib.raw import RawLayer
            return RawLayer(path, fd, writable=writable)
        raise UnsupportedError(f"unknown format {fmt!r}", path=path)
    except BaseException:
        os.close(fd)
        raise
