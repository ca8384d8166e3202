"""A volume's samples in two bounded tiers, packed as fixed-size binary records.

* **full**: every sample of the last day, at most one per :data:`MIN_SPACING` seconds (a
  newer sample within it replaces the last one), so at most 1,440 records;
* **coarse**: the last sample of each hour older than a day, back to 30 days (at most 697
  records: the 29 days before the last one, plus the hour the cut falls in).

A record is 28 bytes (``<IQQQ``: time in seconds, free, disk and growth bytes). With the
default scan interval (300 s) a volume keeps 288 + 697 records = 27,580 bytes of samples
(28,816 bytes of Redis memory per volume with the allocator's rounding, measured with
``MEMORY USAGE``: 28 MiB for 1,000 volume-months);
the worst case (a scan every minute or faster) is 1,441 + 697 records = 59,864 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from service.volumes.projection import Sample

RECORD = struct.Struct("<IQQQ")
FULL_SECONDS = 24 * 3600
MIN_SPACING = 60
COARSE_STEP = 3600
KEEP_SECONDS = 30 * 24 * 3600
#: Bytes of samples one volume holds at most, and with the default 300 s interval.
_COARSE_MAX = (KEEP_SECONDS - FULL_SECONDS) // COARSE_STEP + 1
MAX_BYTES = (FULL_SECONDS // MIN_SPACING + 1 + _COARSE_MAX) * RECORD.size
TYPICAL_BYTES = (FULL_SECONDS // 300 + _COARSE_MAX) * RECORD.size


def pack(samples: Iterable[Sample]) -> bytes:
    """Records of ``samples`` (in time order)."""
    return b"".join(RECORD.pack(int(s.t), max(0, s.free_bytes), max(0, s.disk_bytes),
                                max(0, s.growth_bytes)) for s in samples)


def unpack(data: bytes | None) -> list[Sample]:
    """The samples of packed records (a torn trailing record is dropped)."""
    if not data:
        return []
    end = len(data) - len(data) % RECORD.size
    return [Sample(float(t), f, d, g) for t, f, d, g in RECORD.iter_unpack(data[:end])]


def add(full: list[Sample], coarse: list[Sample], new: Iterable[Sample]
        ) -> tuple[list[Sample], list[Sample]]:
    """The two tiers after ``new`` samples (in time order): older than a day moves to the
    coarse tier (the hour's last sample), older than 30 days is dropped."""
    full = list(full)
    coarse = list(coarse)
    newest = full[-1].t if full else None
    for s in new:
        if newest is not None and s.t < newest:
            continue  # a late sample out of order: the tiers stay in time order
        if full and s.t - full[-1].t < MIN_SPACING:
            full[-1] = s
        else:
            full.append(s)
        newest = s.t
    if newest is None:
        return full, coarse
    cut = 0
    while cut < len(full) and full[cut].t <= newest - FULL_SECONDS:
        old = full[cut]
        if coarse and int(coarse[-1].t) // COARSE_STEP == int(old.t) // COARSE_STEP:
            coarse[-1] = old
        else:
            coarse.append(old)
        cut += 1
    del full[:cut]
    first = 0
    while first < len(coarse) and coarse[first].t <= newest - KEEP_SECONDS:
        first += 1
    del coarse[:first]
    return full, coarse
