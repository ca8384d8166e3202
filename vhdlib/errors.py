"""The one exception root of vhdlib, split by who is at fault.

* :class:`UsageError` - the caller asked for something invalid (bad option, wrong path kind,
  a target that already exists). CLI exit 2 (or 3 for a path that is not a disk).
* :class:`ImageError` - the image on disk is corrupt, truncated, or of an unsupported kind.
  CLI exit 3.
* :class:`ChainError` - a differencing chain cannot be resolved (missing parent, UUID or
  linkage mismatch, loop). A subclass of :class:`ImageError`. CLI exit 3.
* :class:`InsufficientSpaceError` - a volume lacks the bytes an operation needs. CLI exit 4.
* :class:`SafetyRefusal` - refused to protect data (dependent children, changed inputs,
  operation in progress, lost fence). CLI exit 5.
* :class:`Cancelled` - cancelled between chunks; originals are valid. CLI exit 130.
* :class:`InternalError` - a bug in vhdlib (an invariant failed).

``ValueError``, ``struct.error``, ``EOFError`` and ``OSError`` from parsing are translated at the
library boundary into one of these, with ``raise ... from e``.
"""

from __future__ import annotations

from collections.abc import Sequence


class VhdlibError(Exception):
    """Root of every error vhdlib raises on purpose."""

    #: Exit code the CLI uses for this class of error.
    exit_code = 1
    #: Short stable machine-readable name, used in JSON output and by the service.
    code = "vhdlib_error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        return self.message

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description: ``type``, ``title`` and ``detail``."""
        return {"type": self.code, "title": type(self).__name__, "detail": str(self)}


# --- the caller is at fault -------------------------------------------------------------


class UsageError(VhdlibError):
    """The caller asked for something invalid (option, path, combination)."""

    exit_code = 2
    code = "usage"


class NotADiskError(UsageError):
    """The path is not a regular file holding a disk image (directory, device, missing)."""

    exit_code = 3
    code = "not_a_disk"


# --- the image is at fault --------------------------------------------------------------


class ImageError(VhdlibError):
    """The image is corrupt, truncated or not a format/kind we support."""

    exit_code = 3
    code = "corrupt_image"


class UnsupportedError(ImageError):
    """A valid image that uses a feature vhdlib does not implement (or refuses to)."""

    code = "unsupported"


class ChecksumError(ImageError):
    """A stored checksum (VHD ones-complement, VHDX CRC-32C) does not match."""

    code = "checksum"


class ChainError(ImageError):
    """A differencing chain cannot be resolved."""

    code = "chain"


class ParentNotFoundError(ChainError):
    """No candidate location holds the parent; ``tried`` lists every location in order."""

    code = "parent_not_found"

    def __init__(self, message: str, *, path: str | None = None,
                 tried: Sequence[str] = ()) -> None:
        self.tried = list(tried)
        if self.tried:
            message = message + "; tried: " + ", ".join(self.tried)
        super().__init__(message, path=path)


class ParentMismatchError(ChainError):
    """A parent was found but its identity (UUID / DataWriteGuid) does not match the link."""

    code = "parent_mismatch"


class ChainLoopError(ChainError):
    """Following parent links returns to a disk already in the chain."""

    code = "chain_loop"


# --- the environment is at fault --------------------------------------------------------


class InsufficientSpaceError(VhdlibError):
    """A volume lacks the free bytes an operation needs (checked before writing)."""

    exit_code = 4
    code = "insufficient_space"

    def __init__(self, message: str, *, path: str | None = None, needed: int = 0,
                 available: int = 0) -> None:
        super().__init__(message, path=path)
        self.needed = needed
        self.available = available


class SafetyRefusal(VhdlibError):
    """Refused to protect data: dependent children, changed inputs, operation in progress."""

    exit_code = 5
    code = "refused"


class ChangedInputError(SafetyRefusal):
    """An input changed since the journal was written; resuming would corrupt the result."""

    code = "changed_input"


class OperationInProgressError(SafetyRefusal):
    """A journal of an unfinished operation already exists for this target."""

    code = "operation_in_progress"


class DependentChildrenError(SafetyRefusal):
    """Other differencing disks depend on a disk the operation would change."""

    code = "dependent_children"

    def __init__(self, message: str, *, path: str | None = None,
                 children: Sequence[str] = ()) -> None:
        self.children = list(children)
        if self.children:
            message = message + ": " + ", ".join(self.children)
        super().__init__(message, path=path)


class FileInUseError(SafetyRefusal):
    """Another process (or an SMB client through Samba) has a file of the chain open.

    ``holders`` lists one dict per opener: ``path``, ``pid``, ``name``, ``mode``, ``via``.
    """

    code = "in_use"

    def __init__(self, message: str, *, path: str | None = None,
                 holders: Sequence[dict[str, object]] = ()) -> None:
        self.holders = list(holders)
        super().__init__(message, path=path)


class InUseUnknownError(SafetyRefusal):
    """Whether a file is in use cannot be told (e.g. Samba serves it, smbstatus fails)."""

    code = "in_use_unknown"


class AttributeCarryError(SafetyRefusal):
    """An attribute of the original (owner, mode, ACL, xattr) cannot be set on its
    replacement; ``--drop-attributes`` goes ahead without it."""

    code = "attributes_not_carried"

    def __init__(self, message: str, *, path: str | None = None,
                 attributes: Sequence[str] = ()) -> None:
        self.attributes = list(attributes)
        super().__init__(message, path=path)


class FenceError(SafetyRefusal):
    """The caller's fencing token is no longer current (another executor took over)."""

    code = "fenced"


class Cancelled(VhdlibError):
    """The operation was cancelled between chunks; originals are valid."""

    exit_code = 130
    code = "cancelled"


# --- vhdlib is at fault -----------------------------------------------------------------


class InternalError(VhdlibError):
    """An invariant of vhdlib failed: a bug. Nothing should be written after this."""

    exit_code = 70
    code = "internal"
