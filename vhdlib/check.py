"""check / repair of one image file, its parent link and any interrupted operation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vhdlib import journal
from vhdlib.chain import find_parent
from vhdlib.errors import ChainError, VhdlibError
from vhdlib.formats import open_layer
from vhdlib.layer import Problem


@dataclass
class CheckReport:
    """What ``vhdmend check`` found (and, with ``repair``, did)."""

    path: str
    format: str = ""
    problems: list[Problem] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "clean": self.clean,
                "problems": [p.to_dict() for p in self.problems],
                "repairs": list(self.repairs)}


def check(path: str, *, repair: bool = False, lenient: bool = False) -> CheckReport:
    """Check ``path``: structures (per format), parent link, interrupted operation.

    With ``repair`` only safe repairs run (footer copy, orphan tail, log replay), then the
    file is checked again; the report lists the problems that remain. A corrupt image
    that cannot even be opened raises its :class:`~vhdlib.errors.ImageError`.
    """
    report = CheckReport(os.path.abspath(path))
    if repair:
        with open_layer(path, writable=True, lenient=lenient) as layer:
            report.repairs += layer.repair()
            layer.flush()
    with open_layer(path, lenient=True) as layer:
        report.format = layer.format
        report.problems += layer.check()
        for warning in layer.warnings:
            report.problems.append(Problem("warning", warning))
        link = layer.parent_link
        if link is not None:
            try:
                find_parent(layer, link, lenient=True).close()
            except ChainError as e:
                report.problems.append(Problem("parent_link", str(e)))
            except VhdlibError as e:
                report.problems.append(Problem("parent_link", f"parent unreadable: {e}"))
    jp = journal.journal_path_for(path)
    if os.path.exists(jp):
        report.problems.append(Problem(
            "interrupted_operation",
            f"an unfinished operation's journal exists: run 'vhdmend resume {jp}'"))
    return report
