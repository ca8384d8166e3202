"""Structural checks of a VHDX's BAT (MS-VHDX 2.5): states valid for the disk type, every
block inside the file, nothing overlapping."""

from __future__ import annotations

from vhdlib.layer import Problem
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.bat import ALLOCATED, VhdxBat

MiB = S.MiB


def bat_problems(bat: VhdxBat, regions: list[tuple[int, int, str]], file_size: int, *,
                 differencing: bool) -> list[Problem]:
    """Problems of the BAT's entries against the file and the named ``regions``."""
    problems: list[Problem] = []
    spans = list(regions)
    for i in range(bat.data_blocks):
        ent = bat[bat.index(i)]
        st = S.bat_state(ent)
        if st not in S.PAYLOAD_STATE_NAMES:
            problems.append(Problem("bat_state", f"block {i} has reserved state {st}"))
            continue
        if st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT and not differencing:
            problems.append(Problem("bat_state", f"block {i} is PARTIALLY_PRESENT in a "
                                    "disk without parent"))
        elif st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT \
                and bat.bitmap_block(i // bat.chunk_ratio) is None:
            # 2.5: the chunk of a PARTIALLY_PRESENT block has a present sector bitmap.
            problems.append(Problem("bat_state", f"block {i} is PARTIALLY_PRESENT but the "
                                    f"sector bitmap of chunk {i // bat.chunk_ratio} is not "
                                    "present"))
        if st in ALLOCATED:
            spans.append((S.bat_offset(ent), S.bat_offset(ent) + bat.block_size, f"block {i}"))
    for c in range(bat.bitmap_count()):
        off = bat.bitmap_block(c)
        if off is not None:
            spans.append((off, off + MiB, f"bitmap {c}"))
    for lo, hi, name in spans:
        if hi > file_size and name.startswith(("block", "bitmap")):
            problems.append(Problem("bat_past_eof", f"{name} [{lo}, {hi}) lies past the "
                                    f"end of the file ({file_size})"))
    spans.sort()
    reach = spans[0]
    for sp in spans[1:]:
        if sp[0] < reach[1]:
            problems.append(Problem("bat_overlap", f"{sp[2]} [{sp[0]}, {sp[1]}) overlaps "
                                    f"{reach[2]} [{reach[0]}, {reach[1]})"))
        if sp[1] > reach[1]:
            reach = sp
    return problems
