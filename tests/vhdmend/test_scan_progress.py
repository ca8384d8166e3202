"""The progress line of ``vhdmend scan``: only on a terminal, only once a scan is slow."""

from __future__ import annotations

import io

from vhdmend.commands.scan import ScanProgressLine


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal_after_a_second() -> None:
    out = _Tty()
    line = ScanProgressLine(True, out)
    line(10, 2)
    assert out.getvalue() == ""  # a small tree finishes before anyone looks
    line.start -= 2
    line(5000, 1200)
    assert "scanning: 5000 files, 1200 disks" in out.getvalue()
    line.close()
    assert out.getvalue().endswith("\r\033[K")


def test_no_progress_line_when_not_a_terminal_or_quiet() -> None:
    plain = io.StringIO()
    line = ScanProgressLine(True, plain)
    line.start -= 2
    line(5000, 1200)
    line.close()
    assert plain.getvalue() == ""
    tty = _Tty()
    quiet = ScanProgressLine(False, tty)
    quiet.start -= 2
    quiet(5000, 1200)
    assert tty.getvalue() == ""
