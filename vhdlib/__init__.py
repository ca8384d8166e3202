"""vhdlib: read, create, check and remediate VHD and VHDX disks and their chains.

Pure Python; knows nothing of Celery, Redis or Flask.

    >>> import vhdlib
    >>> with vhdlib.open("disk.avhd") as disk:       # resolves the whole chain
    ...     data = disk.read(0, 512)
"""

from __future__ import annotations

from vhdlib.chain import Disk, open
from vhdlib.errors import (
    Cancelled,
    ChainError,
    ImageError,
    InsufficientSpaceError,
    InternalError,
    SafetyRefusal,
    UsageError,
    VhdlibError,
)
from vhdlib.extents import Extent, ExtentKind
from vhdlib.layer import DiskType, Layer

__all__ = [
    "Cancelled",
    "ChainError",
    "Disk",
    "DiskType",
    "Extent",
    "ExtentKind",
    "ImageError",
    "InsufficientSpaceError",
    "InternalError",
    "Layer",
    "SafetyRefusal",
    "UsageError",
    "VhdlibError",
    "open",
]

__version__ = "0.1.0"
