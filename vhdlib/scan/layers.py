"""Per-layer figures, from headers and BATs only (payload is never read).

``max_bytes`` is what the file occupies once every block is allocated (every byte of the
file allocated, plus every missing block's slot as the format lays it out, metadata
included); ``growth_bytes = max_bytes - allocated_bytes`` is what it can still take from
its volume. A fixed disk that was created sparse can grow too: fixed means allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vhdlib.errors import VhdlibError
from vhdlib.formats import open_layer
from vhdlib.layer import Layer, ParentLink


@dataclass(slots=True)
class LayerFigures:
    """One disk file as the scan sees it (small: no file stays open)."""

    path: str
    format: str
    type: str
    virtual_size: int
    block_size: int
    file_size: int
    allocated_bytes: int
    max_bytes: int
    device: int
    inode: int
    nlink: int
    mtime: float
    #: What children link to (VHD footer UUID; VHDX DataWriteGuid).
    link_id: str
    #: For differencing layers: the id the parent must carry, and the locators in order.
    parent_id: str | None = None
    parent_alternate_ids: tuple[str, ...] = ()
    parent_candidates: tuple[tuple[str, str], ...] = ()
    search_dir: str | None = None
    search_suffixes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def growth_bytes(self) -> int:
        return max(0, self.max_bytes - self.allocated_bytes)

    @property
    def is_differencing(self) -> bool:
        return self.type == "differencing"

    def accepts_parent(self, link_id: str) -> bool:
        return link_id == self.parent_id or link_id in self.parent_alternate_ids

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path, "format": self.format, "type": self.type,
            "virtual_size": self.virtual_size, "block_size": self.block_size,
            "file_size": self.file_size, "allocated_bytes": self.allocated_bytes,
            "max_bytes": self.max_bytes, "growth_bytes": self.growth_bytes,
            "id": self.link_id, "mtime": self.mtime}
        if self.parent_id is not None:
            d["parent_id"] = self.parent_id
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


def figures_of(layer: Layer) -> LayerFigures:
    """The figures of an open layer (its fd is only fstat'ed)."""
    st = os.fstat(layer.fd)
    link = layer.parent_link
    fig = LayerFigures(
        path=os.path.abspath(layer.path), format=layer.format, type=layer.disk_type.value,
        virtual_size=layer.virtual_size, block_size=layer.block_size,
        file_size=st.st_size, allocated_bytes=st.st_blocks * 512,
        max_bytes=layer.max_bytes(), device=st.st_dev, inode=st.st_ino,
        nlink=st.st_nlink, mtime=st.st_mtime, link_id=str(layer.link_id),
        warnings=list(layer.warnings))
    if link is not None:
        attach_link(fig, link)
    return fig


def attach_link(fig: LayerFigures, link: ParentLink) -> None:
    """Record where ``link`` says the layer's parent is (and how to search for it)."""
    fig.parent_id = str(link.expected_id)
    fig.parent_alternate_ids = tuple(str(i) for i in link.alternate_ids)
    fig.parent_candidates = tuple(link.candidates)
    fig.search_dir = link.search_dir and os.path.abspath(link.search_dir)
    fig.search_suffixes = tuple(link.search_suffixes)


def measure(path: str, fmt: str | None = None) -> LayerFigures | str:
    """Figures of the disk file at ``path``, or why it cannot be read (a string).

    Opened strictly (a checksum error is a problem to report, not to read past), and
    closed before returning.
    """
    try:
        with open_layer(path, fmt=fmt or None, headers_only=True) as layer:
            return figures_of(layer)
    except VhdlibError as e:
        return e.message
    except OSError as e:
        return f"I/O error: {e.strerror or e}"
