"""What an operation keeps and checkpoints: typed, frozen, one class per operation family.

An operation never edits its state in place: each change makes a new value
(``op.update(cursor=n)``), so what was checkpointed stays what it was. The journal holds
:meth:`State.to_dict` (the same keys as ever: the checkpoint format does not change), and
:func:`from_journal` rebuilds the right class from it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from vhdlib import journal

S = TypeVar("S", bound="State")


@dataclass(frozen=True)
class State:
    """The part every operation has: identity, options, phase, cursor, bytes done, fence."""

    operation: str
    id: str
    target: str
    journal: str
    options: Mapping[str, Any]
    created: int
    phase: str | None = None
    cursor: int = 0
    #: Bytes done per phase.
    done: Mapping[str, int] = field(default_factory=dict)
    fence: int | None = None
    #: Identities of the inputs (checked on resume), as :meth:`FileIdentity.to_dict`.
    inputs: tuple[Mapping[str, Any], ...] = ()
    started: int | None = None
    #: The plan (:meth:`Plan.to_dict`), so ``resume`` rebuilds the operation.
    plan: Mapping[str, Any] | None = None

    @classmethod
    def fresh(cls: type[S], kind: str, target: str, options: Mapping[str, Any],
              **more: Any) -> S:
        """A new checkpoint: nothing done yet."""
        return cls(operation=kind, id=str(uuid.uuid4()), target=os.path.abspath(target),
                   journal=journal.journal_path_for(target), options=dict(options),
                   created=int(time.time()), **more)

    @property
    def read_paths(self) -> tuple[str, ...]:
        """The files the operation reads (its chain; none here: only the target)."""
        return ()

    @property
    def done_bytes(self) -> int:
        return sum(int(v) for v in self.done.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the journal's content (tuples become lists when written)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[S], d: Mapping[str, Any]) -> S:
        """Rebuild from a journal; keys this class does not know are ignored."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in d:
                value = d[f.name]
                kw[f.name] = _frozen(value) if isinstance(value, list) else value
        return cls(**kw)


@dataclass(frozen=True)
class MergeState(State):
    """merge: the chain, how many levels merge, the ancestor's id, where retired go."""

    chain: tuple[str, ...] = ()
    levels: int = 0
    ancestor_id: str = ""
    seed: str = ""
    output: Mapping[str, Any] = field(default_factory=dict)
    archive_dir: str = ""

    @property
    def read_paths(self) -> tuple[str, ...]:
        return self.chain


@dataclass(frozen=True)
class CompactState(State):
    """compact: the format, blocks dropped, the move list and the file's new end."""

    format: str = ""
    seed: str = ""
    output: Mapping[str, Any] = field(default_factory=dict)
    dropped: int = 0
    #: ``(block, from, to)`` moves, computed once after the drop phase.
    moves: tuple[tuple[int, ...], ...] = ()
    new_end: int = 0
    #: ``--reclaim fs``: the blocks the guest's file systems mark wholly free, and the
    #: per-partition report of the scan that found them.
    drop_blocks: tuple[int, ...] = ()
    reclaim: Mapping[str, Any] = field(default_factory=dict)
    #: ``--reclaim fs``: the digest of each group of blocks as the disk read before the
    #: compaction, dropped blocks left out (``str(group)``: JSON keys), and the running
    #: digest of the group the cursor is in (drop phase, then verify phase).
    digests: Mapping[str, int] = field(default_factory=dict)
    crc: int = 0


@dataclass(frozen=True)
class CopyState(State):
    """convert and remediate: the chain copied, the output and its window digests."""

    chain: tuple[str, ...] = ()
    output_spec: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] = field(default_factory=dict)
    destination: str = ""
    partial: str = ""
    #: CRC-32C per copied window (``str(index)``: JSON keys), verified after writing.
    digests: Mapping[str, int] = field(default_factory=dict)
    #: Windows verified behind the copy (all before this index).
    verified: int = 0
    #: remediate: the base disk, the archive folder and the archived layers.
    base: str = ""
    archive_dir: str = ""
    archived: tuple[str, ...] = ()
    #: ``--reclaim fs``: the byte ranges ``[start, end)`` the guest's file systems mark
    #: wholly free (left out of the copy), and the per-partition report of the scan.
    drop: tuple[tuple[int, ...], ...] = ()
    reclaim: Mapping[str, Any] = field(default_factory=dict)
    #: The owner, mode, ACL and xattrs carried onto the output (:mod:`vhdlib.ops.carry`):
    #: ``{"from": path, "dropped": [...]}``; empty when none were carried.
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def read_paths(self) -> tuple[str, ...]:
        return self.chain


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _frozen(value: list[Any]) -> tuple[Any, ...]:
    return tuple(_frozen(v) if isinstance(v, list) else v for v in value)
