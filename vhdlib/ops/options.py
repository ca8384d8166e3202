"""The options of the operations, declared once as plain data.

Each operation module lists its :class:`Option` declarations beside its code; everything
else derives from them: :func:`vhdlib.ops.prepare` validates against them, the disk CLI
builds its argparse options from them, ``vhdmend submit`` its flags, and the API its
marshmallow schemas (hence the OpenAPI document). No framework is imported here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vhdlib import formats
from vhdlib.errors import UsageError
from vhdlib.ops import carry
from vhdlib.ops.output import TYPES

#: Payload block sizes an output may ask for (each format checks its own range too).
BLOCK_SIZES = tuple(1 << n for n in range(9, 29))  # 512 B .. 256 MiB
#: Output timestamps: 2000-01-01 (the VHD epoch) .. 2100-01-01, Unix seconds.
TIMESTAMP_RANGE = (946684800, 4102444800)


@dataclass(frozen=True)
class Option:
    """One option of an operation.

    ``type`` is ``bool``, ``int`` or ``str``. ``choices`` is a tuple or a function giving
    one (formats: the registry decides at the time of asking). ``form`` refines the type:
    ``"path"`` (a file or folder; the API takes it relative to a storage root), ``"uuid"``,
    ``"size"`` (bytes; the CLI accepts ``2M``). ``positional``: the disk CLI takes it as an
    argument, not a flag. ``excludes``: options that may not be given together with it.
    ``exists``: a path that must name an existing file (the others name one to create).
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] = ()
    positional: bool = False
    required: bool = False
    form: str | None = None
    metavar: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    excludes: tuple[str, ...] = ()
    exists: bool = False

    @property
    def allowed(self) -> tuple[Any, ...]:
        """The choices now (empty: any value of the type)."""
        return self.choices() if callable(self.choices) else self.choices

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, kind: str = "") -> Any:
        """``value`` if valid, else :class:`UsageError` naming the option and the rule."""
        where = f"{kind}: " if kind else ""
        if self.form == "path":
            ok = isinstance(value, str | os.PathLike)
        elif self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.type)
        if not ok:
            raise UsageError(f"{where}option {self.name!r} must be a {self.type.__name__}, "
                             f"not {value!r}")
        allowed = self.allowed
        if allowed and value not in allowed:
            raise UsageError(f"{where}{self.name} {value!r} is not one of "
                             f"{', '.join(map(str, allowed))}")
        if (self.minimum is not None and value < self.minimum) or \
                (self.maximum is not None and value > self.maximum):
            raise UsageError(f"{where}{self.name} {value!r} is outside "
                             f"[{self.minimum}, {self.maximum}]")
        if self.form == "uuid":
            try:
                uuid.UUID(value)
            except ValueError as e:
                raise UsageError(f"{where}{self.name} {value!r} is not a UUID") from e
        if self.form == "path" and not os.fspath(value):
            raise UsageError(f"{where}{self.name} is an empty path")
        return value


def validate(kind: str, declared: tuple[Option, ...], values: Mapping[str, Any]) -> None:
    """Refuse unknown options, invalid values, missing required ones and excluded pairs.

    ``None`` means not given (the operation's default applies).
    """
    by_name = {o.name: o for o in declared}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise UsageError(f"{kind}: unknown option(s) {unknown}")
    given = {k: v for k, v in values.items() if v is not None}
    for name, value in given.items():
        by_name[name].check(value, kind)
    for opt in declared:
        if opt.required and opt.name not in given:
            raise UsageError(f"{kind} needs {opt.name} ({opt.help})")
        for other in opt.excludes:
            if given.get(opt.name) and given.get(other):
                raise UsageError(f"--{opt.name} and --{other} exclude each other")


def merged(*groups: tuple[Option, ...]) -> tuple[Option, ...]:
    """Every option of ``groups`` once (the first declaration of a name wins)."""
    seen: dict[str, Option] = {}
    for group in groups:
        for opt in group:
            seen.setdefault(opt.name, opt)
    return tuple(seen.values())


# --- options several operations share ----------------------------------------------------

LENIENT = Option("lenient", bool, False,
                 "accept inputs whose checksums are wrong (with a warning)")
ARCHIVE = Option("archive", str, None, "move retired disks into DIR (default for remediate: "
                 "an archive folder beside the base)", form="path", metavar="DIR",
                 excludes=("delete",))
DELETE = Option("delete", bool, False, "delete retired disks", excludes=("archive",))
TYPE = Option("type", str, "fixed", "output type (default fixed)", choices=TYPES)
FORMAT = Option("format", str, None, "output format (default: from the output's suffix, "
                "else the source's format)", choices=formats.writable_names)
BLOCK_SIZE = Option("block_size", int, None, "block size of a dynamic output (default: the "
                    "format's, 2M for VHD, 32M for VHDX)", choices=BLOCK_SIZES, form="size",
                    metavar="SIZE")
SPARSE = Option("sparse", bool, False, "fixed output: do not allocate the data area")
UUID = Option("uuid", str, None, "the new disk's UUID (default random): for reproducible "
              "output", form="uuid")
TIMESTAMP = Option("timestamp", int, None, "the new disk's creation time, Unix seconds "
                   "(default now): for reproducible output", metavar="UNIX_SECONDS",
                   minimum=TIMESTAMP_RANGE[0], maximum=TIMESTAMP_RANGE[1])
RECLAIM = Option("reclaim", str, "zeros", "zeros: drop all-zero blocks (default); fs: also "
                 "drop blocks the guest's NTFS/ext2/3/4 file systems mark wholly free "
                 "(partitions in doubt are kept whole; --plan says why)",
                 choices=("zeros", "fs"))
ATTRIBUTES_FROM = Option("attributes_from", str, None, "base: give the new file the base "
                         "disk's owner, group, mode, ACL and xattrs (default: the process "
                         "defaults; remediate in place always carries them over)",
                         choices=carry.SOURCES)
DROP_ATTRIBUTES = Option("drop_attributes", bool, False, "go ahead when an attribute cannot "
                         "be carried over (the result lists what was dropped) instead of "
                         "refusing")
#: The new disk's owner, mode, ACL and xattrs (:mod:`vhdlib.ops.carry`).
ATTRIBUTES = (ATTRIBUTES_FROM, DROP_ATTRIBUTES)
#: A new disk's options (convert and remediate).
NEW_DISK = (TYPE, FORMAT, BLOCK_SIZE, SPARSE, UUID, TIMESTAMP)
#: Reading a disk (inspect): only leniency.
READ = (LENIENT,)


# --- the scan (``vhdmend scan``: read-only foresight, :mod:`vhdlib.scan`) -----------------

SCAN = (
    Option("plan", bool, False, "for each volume at risk: ordered remediation steps, each "
           "fitting in the space the ones before it leave (nothing is written)"),
    Option("reserve", int, None, "free space under which Hyper-V pauses guests (default 2G)",
           form="size", metavar="SIZE", minimum=0),
    Option("allow_delete", bool, False, "plan: delete each old chain once its result is "
           "verified (default: archive it in place, still occupying its space)"),
    Option("spare_root", str, None, "plan: a folder on another volume for archives of the "
           "old chains", form="path", metavar="DIR", exists=True),
    Option("reclaimable", bool, False, "per chain: bytes it stores that the guest's NTFS/ext "
           "file systems mark free (what remediate --reclaim fs leaves out); reads their "
           "allocation maps, not file data"),
)
