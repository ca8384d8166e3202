"""Carrying the original's identity (owner, mode, ACL, xattrs) onto a copy's output.

* An output that takes an original's place (remediate in place) always gets the base
  disk's attributes, before the swap; one that cannot be set refuses the swap
  (:class:`~vhdlib.errors.AttributeCarryError`) unless ``drop_attributes``.
* An output at a new path (``convert``, ``remediate --output``) gets them only with
  ``attributes_from="base"``; otherwise it has the process defaults (owner and group of
  the process, mode from the umask, the folder's default ACL).

The result says where they came from and what was dropped (``attributes``).
"""

from __future__ import annotations

from typing import Any

from vhdlib import attributes
from vhdlib.errors import UsageError
from vhdlib.ops.state import CopyState

SOURCES = ("base",)


def options(attributes_from: str | None, drop_attributes: bool) -> dict[str, Any]:
    """The two options as the journal keeps them (validated)."""
    if attributes_from is not None and attributes_from not in SOURCES:
        raise UsageError(f"--attributes-from: one of {list(SOURCES)}, not "
                         f"{attributes_from!r}")
    return {"attributes_from": attributes_from, "drop_attributes": bool(drop_attributes)}


def onto_partial(state: CopyState, src: str) -> dict[str, Any]:
    """Give the partial output ``src``'s attributes (idempotent); returns what the state
    records (``op.update(attributes=...)``): where they came from, what was dropped."""
    drop = bool(state.options.get("drop_attributes"))
    dropped = attributes.carry(src, state.partial, drop=drop)
    return {"from": src, "dropped": dropped}


def before_publish(state: CopyState) -> dict[str, Any] | None:
    """For an output at a new path: the base's attributes when asked for (the record to
    keep, else None). (In place, the swap carried them before the chain was archived.)"""
    if state.archive_dir:
        return None
    if state.options.get("attributes_from") == "base":
        return onto_partial(state, state.chain[-1])
    return None
