"""Progress output (bar on a terminal, lines otherwise) and SIGINT -> cancel flag."""

from __future__ import annotations

import io
import os
import signal

import pytest

from vhdlib.progress import Progress
from vhdmend.progressbar import CancelOnSignal, ProgressReporter


def _feed(reporter: ProgressReporter) -> None:
    total = 100 << 20
    for i in range(0, 101, 5):
        phase = "copy" if i < 60 else "verify"
        done = total * i // 100
        reporter(Progress("remediate", phase, done, total, done, total))
    reporter.close()


def test_bar_on_a_terminal() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(stream=out, tty=True)
    _feed(reporter)
    text = out.getvalue()
    assert text.startswith("\rremediate copy")
    assert "100.0%" in text and "[####" in text
    assert text.endswith("\n")  # the bar's line is ended once


def test_plain_lines_otherwise() -> None:
    out = io.StringIO()
    _feed(ProgressReporter(stream=out, tty=False))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # One line per 10 % step plus the phase change, never one per chunk.
    assert 10 <= len(lines) <= 13
    assert lines[0].startswith("vhdmend: remediate: copy: 0%")
    assert any(": verify: 60%" in line for line in lines)
    assert lines[-1].endswith("(100.0 MiB of 100.0 MiB)")


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    _feed(ProgressReporter(stream=out, quiet=True, tty=True))
    assert out.getvalue() == ""


def test_sigint_sets_cancel_then_interrupts() -> None:
    err = io.StringIO()
    before = signal.getsignal(signal.SIGINT)
    with CancelOnSignal(stream=err) as cancel:
        assert cancel() is False
        os.kill(os.getpid(), signal.SIGINT)
        assert cancel() is True
        assert "cancelling" in err.getvalue()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
