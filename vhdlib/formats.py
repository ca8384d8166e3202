"""The format registry: one :class:`Format` per on-disk format, and every place that needs
to know the formats reads it from here.

Detection, opening, creation, file suffixes, limits and the choices an operation offers
all come from :data:`FORMATS`. Adding a format is its module pair (structures + layer)
plus one entry below; the chain, the operations, the dependents check, the CLI and the
API pick it up. A format without ``create`` is read-only: it can be opened, inspected
and converted *from*, never created or converted *to*.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vhdlib import fileio, raw, vhd, vhdx
from vhdlib.errors import ImageError, NotADiskError, UnsupportedError, UsageError
from vhdlib.layer import DiskType, Layer
from vhdlib.vhd.structs import VHD_EPOCH
from vhdlib.vhdx.structs import MAX_VIRTUAL_SIZE as VHDX_MAX_VIRTUAL_SIZE

VHDX_SIGNATURE = b"vhdxfile"
VHD_COOKIE = b"conectix"

#: ``probe(fd, file_size)``: True when the open file is of this format (reads only).
Probe = Callable[[int, int], bool]


@dataclass(frozen=True)
class NewDisk:
    """What :attr:`Format.create` is asked to make (one request shape for every format).

    ``uuid`` is the new disk's id and the seed of any other id the format writes, so the
    same request writes the same bytes (what a resumed operation relies on); ``None``
    means random. ``timestamp`` is Unix seconds (``None``: now). ``block_size`` 0 means
    the format's default.
    """

    virtual_size: int | None
    disk_type: DiskType
    block_size: int = 0
    logical_sector_size: int = 512
    parent: Layer | None = None
    sparse: bool = False
    uuid: uuidlib.UUID | None = None
    timestamp: int | None = None


#: ``create(path, request)`` -> the new disk, opened writable; refuses an existing path.
Create = Callable[[str, NewDisk], Layer]


@dataclass(frozen=True)
class Format:
    """One on-disk format: how to recognise, open and (if writable) create its files."""

    name: str
    #: Name in messages ("VHD").
    title: str
    #: Base files' suffixes, lower case; the first names a new file of this format.
    suffixes: tuple[str, ...]
    #: The layer class; constructed as ``layer_class(path, fd, writable=, lenient=)``.
    layer_class: type[Layer]
    #: Differencing children's suffixes (Hyper-V's ``.avhd``/``.avhdx``).
    child_suffixes: tuple[str, ...] = ()
    #: ``None``: never detected, only opened when named (raw has no signature).
    probe: Probe | None = None
    #: ``None``: read-only.
    create: Create | None = None
    #: Payload block size of a new dynamic disk; 0 for formats without blocks.
    default_block_size: int = 0
    #: Largest virtual size the format can describe (``None``: no limit of its own).
    max_virtual_size: int | None = None
    #: Logical sector sizes a new disk may have (``()``: any).
    sector_sizes: tuple[int, ...] = (512,)
    #: Disk types ``create`` can make.
    disk_types: tuple[DiskType, ...] = ()
    #: A copy's output of this format, fixed or dynamic, never changes a checkpointed
    #: window's bytes afterwards (fixed: bytes at fixed places; dynamic: blocks appended,
    #: never moved), so it can be verified behind the copy (in a second thread) instead
    #: of after it (:mod:`vhdlib.ops.verifier`).
    verify_behind: bool = False

    @property
    def writable(self) -> bool:
        return self.create is not None

    @property
    def all_suffixes(self) -> tuple[str, ...]:
        return self.suffixes + self.child_suffixes

    def open(self, path: str, fd: int, *, writable: bool, lenient: bool) -> Layer:
        """Construct the layer over ``fd`` (which it then owns)."""
        if writable and not self.writable:
            raise UnsupportedError(f"{self.title} is a read-only format here", path=path)
        return self.layer_class(path, fd, writable=writable,
                                lenient=lenient)

    def check_new(self, virtual_size: int, disk_type: DiskType, logical_sector_size: int,
                  *, path: str | None = None) -> None:
        """Refuse (:class:`UsageError`) what this format cannot create, before writing."""
        if not self.writable:
            raise UsageError(f"{self.title} is read-only: it can be read and converted from, "
                             "not created", path=path)
        if disk_type not in self.disk_types:
            kinds = ", ".join(t.value for t in self.disk_types)
            raise UsageError(f"{self.title} has no {disk_type.value} disks (only {kinds})",
                             path=path)
        if self.max_virtual_size is not None and virtual_size > self.max_virtual_size:
            raise UsageError(
                f"disk of {virtual_size} bytes exceeds the {self.title} limit of "
                f"{self.max_virtual_size} bytes ({self.max_virtual_size >> 30} GiB)"
                + _instead(lambda f: f.max_virtual_size is None
                           or f.max_virtual_size >= virtual_size), path=path)
        if self.sector_sizes and logical_sector_size not in self.sector_sizes:
            sizes = " or ".join(str(s) for s in self.sector_sizes)
            raise UsageError(f"{self.title} has {sizes}-byte sectors only; this disk has "
                             f"{logical_sector_size}-byte sectors"
                             + _instead(lambda f: logical_sector_size in f.sector_sizes),
                             path=path)


def _instead(fits: Callable[[Format], bool]) -> str:
    """``"; convert to VHDX instead"``: the first writable block format that ``fits``."""
    for fmt in FORMATS:
        if fmt.writable and fmt.default_block_size and fits(fmt):
            return f"; convert to {fmt.title} instead"
    return ""


# --- the built-in formats ---------------------------------------------------------------


def _probe_vhdx(fd: int, size: int) -> bool:
    return size >= 8 and fileio.pread(fd, 8, 0) == VHDX_SIGNATURE


def _probe_vhd(fd: int, size: int) -> bool:
    if size >= 8 and fileio.pread(fd, 8, 0) == VHD_COOKIE:
        return True
    if size >= 512 and fileio.pread(fd, 8, size - 512) == VHD_COOKIE:
        return True
    # Some old writers used a 511-byte footer (VHD spec, "Hard Disk Footer Format").
    return size >= 511 and fileio.pread(fd, 8, size - 511) == VHD_COOKIE


def _create_vhd(path: str, req: NewDisk) -> Layer:
    return vhd.create(path, req.virtual_size, req.disk_type,
                      block_size=req.block_size or VHD.default_block_size, parent=req.parent,
                      sparse=req.sparse, uuid=req.uuid,
                      timestamp=None if req.timestamp is None else req.timestamp - VHD_EPOCH)


def _seeded_guids(base: uuidlib.UUID) -> Callable[[], uuidlib.UUID]:
    """Deterministic VHDX GUIDs derived from one id (bit-identical resume)."""
    counter = [0]

    def next_guid() -> uuidlib.UUID:
        counter[0] += 1
        return uuidlib.uuid5(base, f"guid-{counter[0]}")
    return next_guid


def _create_vhdx(path: str, req: NewDisk) -> Layer:
    if req.virtual_size is None:
        if req.parent is None:
            raise UsageError("a size is needed", path=path)
        size = req.parent.virtual_size
    else:
        size = req.virtual_size
    return vhdx.create(path, size, req.disk_type,
                       block_size=req.block_size or VHDX.default_block_size,
                       logical_sector_size=req.logical_sector_size, parent=req.parent,
                       sparse=req.sparse,
                       guid_factory=None if req.uuid is None else _seeded_guids(req.uuid))


def _create_raw(path: str, req: NewDisk) -> Layer:
    if req.virtual_size is None:
        raise UsageError("a size is needed", path=path)
    return raw.create(path, req.virtual_size, sparse=req.sparse)


VHDX = Format("vhdx", "VHDX", (".vhdx",), vhdx.VhdxLayer, child_suffixes=(".avhdx",),
              probe=_probe_vhdx, create=_create_vhdx, default_block_size=32 << 20,
              max_virtual_size=VHDX_MAX_VIRTUAL_SIZE, sector_sizes=(512, 4096),
              disk_types=tuple(DiskType), verify_behind=True)
VHD = Format("vhd", "VHD", (".vhd",), vhd.VhdLayer, child_suffixes=(".avhd",),
             probe=_probe_vhd, create=_create_vhd, default_block_size=2 << 20,
             max_virtual_size=vhd.MAX_VIRTUAL_SIZE, sector_sizes=(512,),
             disk_types=tuple(DiskType), verify_behind=True)
RAW = Format("raw", "raw", (".raw", ".img", ".bin"), raw.RawLayer, create=_create_raw,
             sector_sizes=(), disk_types=(DiskType.FIXED,), verify_behind=True)

#: Every format, in probing order (VHDX first: its signature is at offset 0, where a
#: VHD may keep a footer copy).
FORMATS: list[Format] = [VHDX, VHD, RAW]


def get(name: str) -> Format:
    """The format called ``name``; :class:`UsageError` naming the known ones otherwise."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise UsageError(f"unknown format {name!r} (one of {', '.join(names())})")


def names() -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS)


def writable_names() -> tuple[str, ...]:
    """Formats a new disk (create, convert, remediate) can be written in."""
    return tuple(f.name for f in FORMATS if f.writable)


def all_suffixes() -> tuple[str, ...]:
    """Every suffix of every format: what a folder scan for disks looks at."""
    return tuple(s for f in FORMATS for s in f.all_suffixes)


def detected_suffixes() -> tuple[str, ...]:
    """The suffixes of the formats recognised by content (a file so named that no probe
    accepts is a damaged disk, not some other file; raw has no signature)."""
    return tuple(s for f in FORMATS if f.probe is not None for s in f.all_suffixes)


def from_suffix(path: str) -> Format | None:
    """The format a file name's suffix says (base or child suffix), or ``None``."""
    low = path.lower()
    for fmt in FORMATS:
        if low.endswith(fmt.all_suffixes):
            return fmt
    return None


def name_from_suffix(path: str) -> str | None:
    fmt = from_suffix(path)
    return fmt.name if fmt is not None else None


def output_default(source_format: str) -> str:
    """The format a copy is written in when none is asked: the source's when it can be
    written, else VHD."""
    fmt = get(source_format)
    return fmt.name if fmt.writable else VHD.name


def register(fmt: Format) -> None:
    """Add ``fmt`` (after the built-in ones in probing order); names must be unique."""
    if fmt.name in names():
        raise UsageError(f"format {fmt.name!r} is registered already")
    FORMATS.append(fmt)


def unregister(name: str) -> None:
    FORMATS[:] = [f for f in FORMATS if f.name != name]


@contextmanager
def registered(fmt: Format) -> Iterator[Format]:
    """``fmt`` registered for the ``with`` block only (tests, plugins)."""
    register(fmt)
    try:
        yield fmt
    finally:
        unregister(fmt.name)


# --- opening ---------------------------------------------------------------------------


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


def probe(fd: int, size: int) -> str | None:
    """The name of the first format whose probe accepts the open file, else ``None``."""
    for fmt in FORMATS:
        if fmt.probe is not None and fmt.probe(fd, size):
            return fmt.name
    return None


def detect(path: str) -> str:
    """The name of the format whose probe accepts the file; raise if none does."""
    fd = _open_fd(path, False)
    try:
        size = os.fstat(fd).st_size
        name = probe(fd, size)
        if name is not None:
            return name
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
    name = fmt or detect(path)
    try:
        spec = get(name)
    except UsageError as e:
        raise UnsupportedError(e.message, path=path) from e
    fd = _open_fd(path, writable)
    try:
        if headers_only:
            no_readahead(fd)
        return spec.open(path, fd, writable=writable, lenient=lenient)
    except BaseException:
        os.close(fd)
        raise


def create(path: str, fmt: str, request: NewDisk) -> Layer:
    """Create a new disk of format ``fmt`` (checked against its limits first)."""
    spec = get(fmt)
    if request.virtual_size is not None:
        spec.check_new(request.virtual_size, request.disk_type, request.logical_sector_size,
                       path=path)
    else:
        spec.check_new(0, request.disk_type, request.logical_sector_size, path=path)
    assert spec.create is not None
    return spec.create(path, request)
