"""Verifying a copy's output behind the copy, in a second thread.

Once a window of the output is written and checkpointed it never changes again, so it
can be re-read and compared with the digest taken while writing while the next windows
are copied: the verify pass then has only what the last chunks left.

This holds for every output the copy writes: a fixed disk's bytes sit at fixed places; a
dynamic one's blocks are appended and never move, and a block's entry, once written,
only ever goes from unallocated to allocated. The output is opened at the checkpoint,
before the chunk writes anything (in the calling thread: nothing is mid-write then), so
the verifier's map, held in memory, is the checkpointed one: the windows it checks are
all in it, and what the chunk adds later (blocks of later windows, log entries, a moved
VHD footer) it never needs. A window the copy has not checkpointed is never read here.

The thread uses its own open files (caches of a layer are not shared between threads).
A digest mismatch is raised in the copying thread at the end of the chunk; any other
problem only leaves those windows to the verify phase.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vhdlib.chain import Disk
from vhdlib.chain import open as open_disk
from vhdlib.errors import ImageError, VhdlibError
from vhdlib.ops import windows

log = logging.getLogger(__name__)


class BackgroundVerifier:
    """Verify windows ``[first, stop)`` in order until asked to stop."""

    def __init__(self, source_path: str, output_path: str, fmt: str, lenient: bool,
                 first: int, stop: int, digest_of: Callable[[int], int | None]) -> None:
        self.source_path = source_path
        self.output_path = output_path
        self.fmt = fmt
        self.lenient = lenient
        #: Next window to verify: everything before it is verified.
        self.next = first
        self.stop_at = stop
        self.digest_of = digest_of
        self.bytes_read = 0
        self.mismatch: ImageError | None = None
        self._source: Disk | None = None
        self._out: Disk | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vhdmend-verify", daemon=True)

    def start(self) -> BackgroundVerifier:
        """Open the files (here, at the checkpoint) and verify in a thread."""
        if self.next >= self.stop_at:
            return self
        try:
            self._source = open_disk(self.source_path, lenient=self.lenient)
            try:
                self._out = open_disk(self.output_path, resolve_parents=False, fmt=self.fmt)
            except BaseException:
                self._source.close()
                raise
        except (VhdlibError, OSError) as e:
            # Not a verdict on the output: the verify phase checks these windows.
            log.info("background verify of %s not started: %s", self.output_path, e)
            return self
        self._thread.start()
        return self

    def finish(self) -> None:
        """Stop after the window in progress; raise a digest mismatch if one was found."""
        self.finish_quietly()
        if self.mismatch is not None:
            raise self.mismatch

    def finish_quietly(self) -> None:
        """Stop and wait, without raising (the copy is failing already)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self) -> None:
        assert self._source is not None and self._out is not None
        try:
            with self._source as source, self._out as out:
                buf = bytearray(windows.UNIT)
                while self.next < self.stop_at and not self._stop.is_set():
                    index = self.next
                    want = self.digest_of(index)
                    if want is not None:
                        crc, read, _, _ = windows.process_window(source, index, None, buf,
                                                                 read_from=out)
                        if crc != want:
                            self.mismatch = ImageError(
                                f"verification failed: window {index} of the output reads "
                                f"differently from the source (digest {crc:08x} != "
                                f"{want:08x})", path=self.output_path)
                            return
                        self.bytes_read += read
                    self.next = index + 1
        except (VhdlibError, OSError) as e:
            # Not a verdict on the output: the verify phase checks these windows.
            log.info("background verify of %s stopped at window %d: %s", self.output_path,
                     self.next, e)
