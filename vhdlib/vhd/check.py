"""The structural check of a VHD layer: what :meth:`VhdLayer.check` reports (spec sections
cited beside each rule; the repairs are the layer's, since they write)."""

from __future__ import annotations

from typing import Protocol

from vhdlib.layer import DiskType, Problem
from vhdlib.vhd.bat import BlockTable
from vhdlib.vhd.footers import fixed_problems, footer_problems
from vhdlib.vhd.layout import DATA_ALIGNMENT
from vhdlib.vhd.structs import DynamicHeader, Footer


class Checked(Protocol):
    """What the check reads of its VHD layer (all public)."""

    footer: Footer
    footer_copy: Footer | None
    footer_from_copy: bool
    trailing_checksum_bad: bool
    header: DynamicHeader | None
    bat: BlockTable | None
    bat_problems: list[Problem]
    disk_type: DiskType
    virtual_size: int

    @property
    def footer_position(self) -> int: ...

    @property
    def file_size(self) -> int: ...

    def pread(self, length: int, file_offset: int) -> bytes: ...

    def data_end(self) -> int: ...


def check_layer(layer: Checked) -> list[Problem]:
    """Checksums, footer copy, BAT entries, orphan tail, bitmap bits past the end."""
    f = layer.footer
    out = footer_problems(f, from_copy=layer.footer_from_copy,
                          trailing_bad=layer.trailing_checksum_bad,
                          dynamic=layer.bat is not None)
    if layer.disk_type is DiskType.FIXED:
        # Spec "Fixed Hard Disk Image": the data area is what precedes the footer.
        return out + fixed_problems(layer.footer_position, layer.virtual_size, layer.pread)
    if layer.header is None or layer.bat is None:
        return out
    h = layer.header
    # Spec "Dynamic Disk Header Format", Checksum.
    if not h.checksum_ok:
        out.append(Problem("header_checksum", f"dynamic header checksum stored "
                           f"0x{h.checksum:08x}, computed 0x{h.compute_checksum():08x}"))
    # Spec "Dynamic Hard Disk Image": the copy at offset 0 equals the trailing footer.
    if not layer.footer_from_copy and layer.footer_copy != f:
        out.append(Problem("footer_copy_mismatch", "the footer copy at offset 0 differs "
                           "from the trailing footer", repairable=f.checksum_ok))
    out.extend(layer.bat_problems)
    if not layer.bat_problems:
        end = layer.data_end()
        fpos = layer.footer_position if not layer.footer_from_copy else layer.file_size
        # Layouts leave up to ~8 KiB between the last slot (or the BAT) and the footer:
        # Hyper-V rounds the BAT to 4 KiB and aligns block data to 4 KiB.
        if fpos - end > 2 * DATA_ALIGNMENT:
            out.append(Problem("orphan_tail", f"{fpos - end} bytes between the last "
                               f"block ({end}) and the footer are unreferenced",
                               repairable=True))
    past = layer.bat.bits_past_end()
    if past:
        out.append(Problem("bitmap_past_end", f"{past} sector bits set past the virtual "
                           "end in the last block (informational; Disk2vhd does this)"))
    return out
