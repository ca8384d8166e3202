"""VHDX (MS-VHDX v1.0): fixed, dynamic and differencing disks, with log replay.

One module per concept: :mod:`~vhdlib.vhdx.structs` (on-disk structures),
:mod:`~vhdlib.vhdx.headers` (header pair, region tables), :mod:`~vhdlib.vhdx.metadata`,
:mod:`~vhdlib.vhdx.locators`, :mod:`~vhdlib.vhdx.bat` (BAT and sector bitmaps),
:mod:`~vhdlib.vhdx.log` (replay and log writes), :mod:`~vhdlib.vhdx.session` (the log
session of a writable open), :mod:`~vhdlib.vhdx.allocation`, :mod:`~vhdlib.vhdx.check`,
:mod:`~vhdlib.vhdx.blockstore` (compaction's view), :mod:`~vhdlib.vhdx.reader` and
:mod:`~vhdlib.vhdx.layer` (read; write, finalize, check, repair), :mod:`~vhdlib.vhdx.create`.
"""

from __future__ import annotations

from vhdlib.vhdx.blockstore import VhdxBlockStore
from vhdlib.vhdx.create import create
from vhdlib.vhdx.layer import VhdxLayer

__all__ = ["VhdxBlockStore", "VhdxLayer", "create"]
