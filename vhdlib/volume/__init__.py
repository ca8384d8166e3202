"""The guest's view of a virtual disk: partition tables and file-system allocation maps.

Pure Python, read-only, no mount. :func:`scan` returns, per partition, the byte ranges the
file system marks free (NTFS ``$Bitmap``; ext2/3/4 block bitmaps) or the reason the
partition is kept whole; :meth:`VolumeMap.reclaimable_blocks` gives the blocks of a size
whose every byte is free.

    >>> import vhdlib, vhdlib.volume
    >>> with vhdlib.open("guest.vhdx") as disk:
    ...     vmap = vhdlib.volume.scan(disk)
    ...     drop = vmap.reclaimable_blocks(32 * 1024 * 1024)
"""

from __future__ import annotations

from vhdlib.volume.report import PartitionReport, VolumeMap
from vhdlib.volume.scan import scan
from vhdlib.volume.source import FileDisk, Readable

__all__ = ["FileDisk", "PartitionReport", "Readable", "VolumeMap", "scan"]
