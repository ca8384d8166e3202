"""Errors of the volume layer, split by who is at fault (see :mod:`vhdlib.errors`).

The scan turns each of them into "kept whole" with the message as the reason; they reach a
caller only from the structure parsers used directly.
"""

from __future__ import annotations

from vhdlib.errors import ImageError, SafetyRefusal, UnsupportedError


class VolumeStructureError(ImageError):
    """A partition table or file-system structure fails a bound or consistency check."""

    code = "volume_structure"


class VolumeChecksumError(VolumeStructureError):
    """A partition table or file-system checksum (CRC-32, CRC-32C, CRC-16) does not match."""

    code = "volume_checksum"


class UnsupportedVolumeError(UnsupportedError):
    """A file system, feature or layout the volume layer does not read (so it keeps it)."""

    code = "volume_unsupported"


class VolumeStateRefusal(SafetyRefusal):
    """A valid volume whose state forbids reading it as at rest: dirty, hibernated,
    encrypted, awaiting journal recovery, a member of a volume manager."""

    code = "volume_state"


#: Everything the scan reports as a reason to keep a partition whole.
KEEP_ERRORS = (VolumeStructureError, UnsupportedVolumeError, VolumeStateRefusal)
