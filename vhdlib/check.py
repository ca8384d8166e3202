"""check / repair of one image file, its parent link and any interrupted operation.

Findings are *problems* (the image is damaged or cannot be read as it is: ``check`` exits
1) or *notes* (shown, exit 0): what untouched images from real writers carry and every
reader handles. Which is which was decided from the real images (MANIFEST.md):

* ``bitmap_past_end`` - Disk2vhd and qemu (2013) set bitmap bits past the virtual end in
  the last block (d2v-zerofilled.vhd, dfvfs image.orig); nothing reads those sectors.
* ``orphan_tail`` - FreeBSD mkimg leaves 326,656 unreferenced bytes before the footer,
  Disk2vhd 512 bytes after the last VHDX block; space only (``--repair`` trims it).
* a layer's warnings (an old 511-byte footer, a locator whose data lies oddly) are notes;
  a warning that only echoes a problem reported here (the lenient open that check uses to
  look at a damaged file) is dropped, so nothing is counted twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vhdlib import journal
from vhdlib.chain import check_sizes, resolve
from vhdlib.errors import ChainError, VhdlibError
from vhdlib.formats import open_layer
from vhdlib.layer import Layer, Problem

#: Finding codes that are notes, not problems (see the module docstring).
NOTE_CODES = frozenset({"bitmap_past_end", "orphan_tail"})
#: How a lenient open words a warning that repeats a checksum/BAT problem check reports.
_LENIENT_ECHO = "(accepted: lenient)"
_DIRTY_LOG_ECHO = "the log is dirty: replayed in memory"


@dataclass
class CheckReport:
    """What ``vhdmend check`` found (and, with ``repair``, did)."""

    path: str
    format: str = ""
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No problem (notes do not count)."""
        return not self.problems

    def add(self, finding: Problem) -> None:
        """File ``finding`` as a problem or a note by its code."""
        (self.notes if finding.code in NOTE_CODES else self.problems).append(finding)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "clean": self.clean,
                "problems": [p.to_dict() for p in self.problems],
                "notes": [p.to_dict() for p in self.notes],
                "repairs": list(self.repairs)}


def check(path: str, *, repair: bool = False, lenient: bool = False) -> CheckReport:
    """Check ``path``: structures (per format), parent chain, interrupted operation.

    The file itself is opened leniently (a bad checksum is a finding, not a refusal); its
    parents are opened as ``info`` opens them (strictly unless ``lenient``), so a chain
    ``info`` cannot read is never clean. With ``repair`` only safe repairs run (footer
    copy, orphan tail, log replay), then the file is checked again; the report lists what
    remains. A corrupt image that cannot even be opened raises its
    :class:`~vhdlib.errors.ImageError`.
    """
    report = CheckReport(os.path.abspath(path))
    if repair:
        with open_layer(path, writable=True, lenient=lenient) as layer:
            report.repairs += layer.repair()
            layer.flush()
    with open_layer(path, lenient=True) as layer:
        report.format = layer.format
        for finding in layer.check():
            report.add(finding)
        codes = {p.code for p in report.problems}
        for warning in layer.warnings:
            if _echoes_problem(warning, codes):
                continue
            report.notes.append(Problem("warning", warning))
        if layer.parent_link is not None:
            _check_parents(layer, lenient, report)
    jp = journal.journal_path_for(path)
    if os.path.exists(jp):
        report.problems.append(Problem(
            "interrupted_operation",
            f"an unfinished operation's journal exists: run 'vhdmend resume {jp}'"))
    return report


def _echoes_problem(warning: str, codes: set[str]) -> bool:
    if _LENIENT_ECHO in warning:
        return bool(codes)
    return warning.startswith(_DIRTY_LOG_ECHO) and "dirty_log" in codes


def _check_parents(layer: Layer, lenient: bool, report: CheckReport) -> None:
    """Resolve the chain below ``layer`` as ``info`` does; name the layer at fault."""
    before = len(layer.warnings)
    try:
        disk = resolve(layer, lenient=lenient)
    except ChainError as e:
        report.problems.append(Problem("parent_link", str(e)))
    except VhdlibError as e:
        report.problems.append(Problem("parent_link", f"parent unreadable: {e}"))
    else:
        try:
            check_sizes(disk)
        except VhdlibError as e:
            report.problems.append(Problem("parent_link", str(e)))
        finally:
            for parent in disk.layers[1:]:
                parent.close()
    # find_parent notes invalid locators (a path holding a NUL) on the child it searched.
    for warning in layer.warnings[before:]:
        report.problems.append(Problem("parent_locator", warning))
