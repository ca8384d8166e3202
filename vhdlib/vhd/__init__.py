"""VHD (Microsoft "Virtual Hard Disk Image Format Specification" 1.0): fixed, dynamic and
differencing disks.

One module per concept: :mod:`~vhdlib.vhd.structs` (on-disk structures),
:mod:`~vhdlib.vhd.footers`, :mod:`~vhdlib.vhd.locators`, :mod:`~vhdlib.vhd.bat` (the BAT,
its bitmaps and block allocation), :mod:`~vhdlib.vhd.blockstore` (compaction's view),
:mod:`~vhdlib.vhd.layer` (read, write, check, repair) and :mod:`~vhdlib.vhd.create`.
"""

from __future__ import annotations

from vhdlib.vhd.bat import BlockTable
from vhdlib.vhd.blockstore import VhdBlockStore
from vhdlib.vhd.create import create
from vhdlib.vhd.layer import VhdLayer
from vhdlib.vhd.structs import MAX_VIRTUAL_SIZE, vhd_timestamp

__all__ = ["MAX_VIRTUAL_SIZE", "BlockTable", "VhdBlockStore", "VhdLayer", "create",
           "vhd_timestamp"]
