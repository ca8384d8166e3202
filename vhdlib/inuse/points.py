"""Which files each operation's guard checks, and for what, at each step.

* merge, compact: every file of the chain (compact: the file), any opener blocks.
* convert, remediate ``--output``: the chain is only read; a writer blocks.
* remediate in place: the whole chain, any opener blocks, at the start (an early refusal
  spares a copy whose swap would be refused) and before the swap; before ``retire`` the
  archived layers it deletes.
"""

from __future__ import annotations

from typing import Any

from vhdlib.inuse.model import Purpose


def targets(kind: str, state: dict[str, Any], step: str) -> tuple[list[str], Purpose]:
    """Paths to check before ``step`` of operation ``kind`` (described by ``state``)."""
    chain = list(state.get("chain") or [state["target"]])
    options = state.get("options") or {}
    if kind == "convert" or (kind == "remediate" and options.get("output")):
        return chain, Purpose.READ
    if kind == "remediate":
        if step == "retire" or state.get("phase") == "retire":
            return list(state.get("archived") or []), Purpose.MODIFY
        if state.get("phase") == "swap" and int(state.get("cursor") or 0) >= 2:
            # Published: the base's name is the result now, no longer the old chain.
            chain = [p for p in chain if p != state.get("destination")]
    if kind == "compact":
        return [str(options.get("path") or state["target"])], Purpose.MODIFY
    return chain, Purpose.MODIFY
