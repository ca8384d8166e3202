"""Progress on stderr (a bar on a terminal, plain lines otherwise) and SIGINT cancellation."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from types import FrameType, TracebackType
from typing import Any, TextIO

from vhdlib.progress import Progress
from vhdmend.sizes import human_size

#: Seconds between two redraws of the bar (a redraw per chunk would dominate small chunks).
_BAR_INTERVAL = 0.1
#: Plain (non-terminal) output prints a line per phase and every this many percent.
_LINE_STEP = 10


class ProgressReporter:
    """A :data:`vhdlib.progress.ProgressCallback` drawing on ``stream`` (stderr by default).

    On a terminal: one redrawn bar with phase, percentage, bytes, rate and ETA. Otherwise
    (logs, CI, pipes): a plain line at each phase change and every 10 %. ``quiet``: nothing.
    """

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty() if tty is None else tty
        self._phase: str | None = None
        self._last_draw = 0.0
        self._last_step = -1
        self._start = time.monotonic()
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        phase_changed = p.phase != self._phase
        if self.tty:
            now = time.monotonic()
            final = p.overall_total and p.overall_done >= p.overall_total
            if phase_changed or final or now - self._last_draw >= _BAR_INTERVAL:
                self._last_draw = now
                self._draw(p, now)
        else:
            pct = int(p.fraction * 100)
            step = pct // _LINE_STEP
            if phase_changed or step > self._last_step:
                self._last_step = step
                print(f"vhdmend: {p.operation}: {p.phase}: {pct}% "
                      f"({human_size(p.overall_done)} of {human_size(p.overall_total)})",
                      file=self.stream, flush=True)
        self._phase = p.phase

    def _draw(self, p: Progress, now: float) -> None:
        cols = shutil.get_terminal_size((80, 20)).columns
        elapsed = max(now - self._start, 1e-6)
        rate = p.overall_done / elapsed
        if rate > 0 and p.overall_total > p.overall_done:
            eta_s = int((p.overall_total - p.overall_done) / rate)
            eta = f"ETA {eta_s // 60}:{eta_s % 60:02d}"
        else:
            eta = ""
        left = f"{p.operation} {p.phase:<10.10}"
        right = (f"{p.fraction * 100:5.1f}% {human_size(p.overall_done)}/"
                 f"{human_size(p.overall_total)} {human_size(int(rate))}/s {eta}")
        width = max(10, cols - len(left) - len(right) - 5)
        filled = int(width * p.fraction)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{left} [{bar}] {right}"[:cols - 1].ljust(cols - 1))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (call once the operation stops, whatever the outcome)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class CancelOnSignal:
    """A :data:`vhdlib.progress.CancelCheck` set by SIGINT/SIGTERM, as a context manager.

    The first signal asks the operation to stop between chunks (it raises
    :class:`vhdlib.errors.Cancelled`, exit 130); a second SIGINT interrupts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.cancelled = False
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.cancelled

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.cancelled and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.cancelled = True
        if not self.quiet:
            self.stream.write("\nvhdmend: cancelling after the current chunk "
                              "(Ctrl-C again to interrupt now)\n")
            self.stream.flush()

    def __enter__(self) -> CancelOnSignal:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
