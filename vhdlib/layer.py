"""The contract every on-disk format implements: one file of a chain (a *layer*).

A :class:`Layer` knows its own file only. :mod:`vhdlib.chain` stacks layers into a
:class:`~vhdlib.chain.Disk`; :mod:`vhdlib.ops` drives their write side. The formats
(:mod:`vhdlib.vhd`, :mod:`vhdlib.vhdx`, :mod:`vhdlib.raw`) subclass it.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from uuid import UUID

from vhdlib import fileio
from vhdlib.errors import ImageError, UsageError
from vhdlib.extents import Segment


class DiskType(enum.Enum):
    """The three kinds of virtual disk both formats share."""

    FIXED = "fixed"
    DYNAMIC = "dynamic"
    DIFFERENCING = "differencing"


@dataclass(frozen=True)
class ParentLink:
    """How a differencing layer names its parent.

    ``expected_id`` is what the parent's :attr:`Layer.link_id` must equal (VHD: the parent's
    footer UUID; VHDX: ``parent_linkage``, the parent's DataWriteGuid). ``candidates`` are
    local paths to try in order, each with a label saying which locator produced it (for the
    error that lists every location tried). ``search_dir`` and ``search_suffixes`` drive the
    last resort: any file there whose ``link_id`` matches (no suffixes: those the format
    registry gives the child's format).
    """

    expected_id: UUID
    candidates: list[tuple[str, str]] = field(default_factory=list)  # (label, path)
    search_dir: str | None = None
    search_suffixes: tuple[str, ...] = ()
    #: Other ids a parent may carry and still be accepted (VHDX ``parent_linkage2``).
    alternate_ids: tuple[UUID, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One finding of a check: ``code`` is stable, ``repairable`` says --repair can fix it."""

    code: str
    message: str
    repairable: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "repairable": self.repairable}


@dataclass(frozen=True)
class FileIdentity:
    """What must not change under a resumable operation (checked on resume)."""

    path: str
    size: int
    mtime_ns: int
    uuid: str
    checksum: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns,
                "uuid": self.uuid, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileIdentity:
        return cls(str(d["path"]), int(d["size"]), int(d["mtime_ns"]), str(d["uuid"]),
                   str(d["checksum"]))


class Layer(ABC):
    """One image file. Opened read-only unless ``writable``.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`segments`.
    Reading never writes (a VHDX with a dirty log replays into memory when read-only).
    """

    #: The registry name of the format (:mod:`vhdlib.formats`): "vhd", "vhdx", "raw"...
    format: ClassVar[str]

    path: str
    disk_type: DiskType
    virtual_size: int
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    #: Payload block size in bytes; 0 for formats without blocks (fixed VHD, raw).
    block_size: int = 0
    writable: bool = False

    def __init__(self, path: str, fd: int, *, writable: bool, lenient: bool = False) -> None:
        self.path = path
        self._fd = fd
        self.writable = writable
        #: Accept wrong checksums (with a warning) instead of refusing the image.
        self.lenient = lenient
        self.warnings: list[str] = []

    # --- identity -------------------------------------------------------------------

    @property
    @abstractmethod
    def link_id(self) -> UUID:
        """The id a child's parent link must match (VHD footer UUID; VHDX DataWriteGuid)."""

    @property
    def parent_link(self) -> ParentLink | None:
        """How to find the parent, for differencing layers; ``None`` otherwise."""
        return None

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def file_size(self) -> int:
        return os.fstat(self._fd).st_size

    @property
    def allocated_bytes(self) -> int:
        """Bytes the file occupies on the host volume (st_blocks * 512)."""
        return os.fstat(self._fd).st_blocks * 512

    def max_bytes(self) -> int:
        """File bytes once every block is allocated, metadata included (headers and BATs
        only, no payload read). ``max_bytes() - allocated_bytes`` is what the layer can
        still take from its volume. The default asks the block store block by block;
        formats override :meth:`unallocated_blocks` and :meth:`bytes_per_new_block` with
        exact, faster figures."""
        st = os.fstat(self._fd)
        # The volume allocates whole blocks: a trailing 512-byte footer takes one.
        fs_block = st.st_blksize or 4096
        size = max(-(-st.st_size // fs_block) * fs_block - self.never_written_bytes(),
                   st.st_blocks * 512)
        if self.block_store() is None:
            return size
        return size + self.unallocated_blocks() * self.bytes_per_new_block()

    def never_written_bytes(self) -> int:
        """Bytes of the file that no writer ever fills (padding of fixed-size structure
        regions): they are holes now and stay holes, so they are not growth."""
        return 0

    def unallocated_blocks(self) -> int:
        """Payload blocks with no slot in the file yet (0 without a block store)."""
        store = self.block_store()
        if store is None:
            return 0
        return sum(1 for i in range(store.block_count) if store.slot_offset(i) is None)

    def bytes_per_new_block(self) -> int:
        """File bytes one more allocated block adds (its slot, as the format lays it out)."""
        store = self.block_store()
        return store.slot_size if store is not None else 0

    def identity(self) -> FileIdentity:
        """Path, size, mtime, UUID and a structure checksum, for journals."""
        st = os.fstat(self._fd)
        return FileIdentity(os.path.abspath(self.path), st.st_size, st.st_mtime_ns,
                            str(self.link_id), self.structure_checksum())

    def structure_checksum(self) -> str:
        """A short string that changes whenever the metadata changes (footer checksum, CRC)."""
        return ""

    # --- reading --------------------------------------------------------------------

    @abstractmethod
    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        """Cover ``[offset, offset+length)`` in order with this layer's segments.

        The range lies within ``[0, virtual_size)`` and is sector aligned.
        """

    def check_range(self, file_offset: int, length: int) -> None:
        """Refuse a range that does not lie inside the file: the one place where every
        offset read from the file (BAT entries, locators, region tables) meets the file's
        size before the kernel sees it (an entry near 2^44 MiB is past 2^63 bytes)."""
        if file_offset < 0 or length < 0:
            raise ImageError(f"negative file offset {file_offset} (length {length})",
                             path=self.path)
        size = self.file_size
        if file_offset + length > size:
            raise ImageError(
                f"truncated: needed bytes up to {file_offset + length} but the file ends at "
                f"{size} (offset {file_offset} is past the end)" if file_offset >= size else
                f"truncated: needed bytes up to {file_offset + length} but the file ends at "
                f"{size}", path=self.path)

    def pread(self, length: int, file_offset: int) -> bytes:
        """``length`` bytes of the file at ``file_offset`` (checked by :meth:`check_range`)."""
        buf = bytearray(length)
        Layer.pread_into(self, file_offset, memoryview(buf))
        return bytes(buf)

    def pread_into(self, file_offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from the file at ``file_offset``; a range outside the file, or a
        short read, is a truncated image (:class:`ImageError`)."""
        done = 0
        want = len(buf)
        self.check_range(file_offset, want)
        while done < want:
            n = fileio.preadv(self._fd, [buf[done:]], file_offset + done)
            if n == 0:
                raise ImageError(
                    f"truncated: needed bytes up to {file_offset + want} but the file ends at "
                    f"{file_offset + done}", path=self.path)
            done += n

    @property
    def reads_file_bytes(self) -> bool:
        """True when :meth:`pread_into` returns exactly the file's bytes (no in-memory
        overlay): then holes of the file read as zeros and the file may be read directly
        (O_DIRECT). The default trusts only the base implementation of ``pread_into``."""
        return type(self).pread_into is Layer.pread_into

    def info(self) -> dict[str, Any]:
        """A JSON-ready description of this layer alone."""
        return {
            "path": self.path,
            "format": self.format,
            "type": self.disk_type.value,
            "virtual_size": self.virtual_size,
            "block_size": self.block_size,
            "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size,
            "file_size": self.file_size,
            "allocated_bytes": self.allocated_bytes,
            "id": str(self.link_id),
            "warnings": list(self.warnings),
        }

    # --- writing --------------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self.writable:
            raise UsageError("opened read-only", path=self.path)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write sector-aligned ``data`` at virtual ``offset``, allocating blocks crash-safely.

        On differencing layers the written sectors become present (hiding the parent).
        """
        raise UsageError(f"{self.format} {self.disk_type.value} layers cannot be written",
                         path=self.path)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeros (hiding any parent there).

        The default writes zero bytes; formats with a cheaper representation override it.
        """
        zero = bytes(min(length, 4 << 20))
        pos = offset
        end = offset + length
        while pos < end:
            n = min(len(zero), end - pos)
            self.write(pos, memoryview(zero)[:n])
            pos += n

    def flush(self) -> None:
        """Make everything written so far durable (fsync)."""
        if self.writable:
            os.fsync(self._fd)

    # --- check / repair ---------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Structural problems of this file (checksums, BAT, orphan tail...)."""
        return []

    def repair(self) -> list[str]:
        """Apply only safe repairs (needs ``writable``); return what was done."""
        return []

    # --- hooks of the operations (no-ops unless a format needs them) ---------------------

    def keep_link_id(self) -> None:  # noqa: B027 - optional hook
        """Let writes through this open keep :attr:`link_id` (an in-place merge or a
        compaction: children linked to this disk must keep resolving to it). Formats
        whose id never changes on write need nothing."""

    def renew_link_id(self, seed: bytes) -> None:  # noqa: B027 - optional hook
        """Take a new :attr:`link_id` derived from ``seed`` (after an in-place merge, so
        the merged children no longer resolve to this disk; idempotent)."""

    def seal(self, seed: bytes, *, keep_link_id: bool = False) -> None:  # noqa: B027
        """Last write of an output or a compaction: make the file's metadata a function of
        its content and ``seed`` (bit-identical resume); ``keep_link_id`` when the content
        did not change. Formats whose ids are fixed at creation need nothing."""

    def block_store(self) -> BlockStore | None:
        """The block-level view used by compaction; ``None`` for fixed/raw layers."""
        return None

    # --- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            finally:
                self._fd = -1

    def __enter__(self) -> Layer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.path!r} {self.disk_type.value} "
                f"{self.virtual_size} bytes>")


def hole_bytes(fd: int, start: int, end: int) -> int:
    """Bytes of ``[start, end)`` that are holes in the file (SEEK_DATA/SEEK_HOLE; 0 where
    the platform cannot tell)."""
    if not hasattr(os, "SEEK_DATA") or end <= start:
        return 0
    holes = 0
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole up to the end of the file
            data = end
        data = min(data, end)
        holes += data - pos
        if data >= end:
            break
        pos = min(os.lseek(fd, data, os.SEEK_HOLE), end)
    return holes


class BlockStore(ABC):
    """Block-level view of a dynamic or differencing layer, for in-place compaction.

    A *slot* is the file range one payload block occupies (VHD: sector bitmap + data;
    VHDX: the payload block). Compaction drops blocks, then moves tail slots into holes,
    then truncates: every step is idempotent so a resumed run ends bit-identical.
    """

    block_count: int
    block_size: int
    #: Bytes one slot occupies in the file.
    slot_size: int
    #: Required alignment of a slot's file offset.
    slot_alignment: int

    @abstractmethod
    def slot_offset(self, index: int) -> int | None:
        """File offset of block ``index``'s slot, ``None`` when unallocated."""

    @abstractmethod
    def droppable(self, index: int) -> bool:
        """True when dropping the block cannot change what the chain reads.

        Dynamic: every sector is zero. Differencing: no sector is present (present zeros
        must stay: they hide parent data).
        """

    @abstractmethod
    def drop(self, index: int) -> None:
        """Mark block ``index`` unallocated (crash-safe; idempotent); durable once the
        layer is flushed."""

    @abstractmethod
    def move(self, index: int, new_offset: int) -> None:
        """Copy block ``index``'s slot to ``new_offset``, then repoint the BAT, never
        before the copy is durable (crash-safe; idempotent as long as the old slot is
        untouched); the new entry is durable once the layer is flushed."""

    @abstractmethod
    def reserved_ranges(self) -> list[tuple[int, int]]:
        """File ranges ``[start, end)`` in use by anything but payload slots."""

    @abstractmethod
    def data_area_start(self) -> int:
        """Lowest file offset a slot may occupy."""

    @abstractmethod
    def truncate_after(self, end: int) -> None:
        """Shrink the file so that slots end at ``end`` (VHD: then the footer)."""
