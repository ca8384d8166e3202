"""Which Hyper-V VM owns each chain the scan found (vhdlib.hyperv), read once per scan.

The VM configurations under the scan's roots are read once (one inventory), then each
chain's layers, newest first, are looked up in it: the newest file a VM names is the one a
running VM writes. Unreadable configurations (a ``.vmcx``, hostile XML) are reported
beside the result, never fatal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from vhdlib.hyperv import owners
from vhdlib.scan.chains import ChainFigures


def attach_owners(chains: Sequence[ChainFigures], roots: Sequence[str]) -> list[dict[str, str]]:
    """Set ``vm`` and ``checkpoints`` on every chain; return the unreadable configurations."""
    known = [layer.path for chain in chains for layer in chain.layers]
    inv = owners.inventory(roots, known=known)
    for chain in chains:
        paths = [layer.path for layer in chain.layers]
        refs = inv.checkpoints(paths)
        chain.checkpoints = [c.to_dict() for c in refs]
        chain.vm = None
        for path in paths:
            found = inv.attachments(path)
            if found:
                chain.vm = _vm(dataclasses.replace(found[0], checkpoints=tuple(refs)))
                break
    return list(inv.unreadable)


def _vm(a: owners.VmAttachment) -> dict[str, Any]:
    if a.mapping.guess:  # said as lookup() says it: the operator must confirm the match
        a = dataclasses.replace(a, notes=(*a.notes, (
            f"{a.mapping.windows_path} was matched to the local file by its last "
            f"{a.mapping.tail} path component(s): a guess")))
    return a.to_dict()
