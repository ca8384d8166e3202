"""Real processes that hold a file open (read-only, for writing, or mapped) until stopped."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# The mapping goes through libc: Python's mmap module keeps a dup of the descriptor.
_HOLD = """
import ctypes, mmap, sys, time
f = open(sys.argv[1], sys.argv[2])
if sys.argv[3] == "map":
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    f.close()  # only the mapping is left
print("ready", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def holding(path: Path, mode: str = "rb", how: str = "fd") -> Iterator[subprocess.Popen[str]]:
    """A child process with ``path`` open in ``mode`` (``how="map"``: only mmap'd)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), mode, how],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
