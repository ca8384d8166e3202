"""What the service may say about a host's files: root names and root-relative paths.

The API never shows an absolute host path: a file is ``{"root": name, "path": rel}``,
and a path inside a message becomes ``name:rel`` (``<outside the roots>`` when it lies in
no root). Volume and chain ids are stable hashes of what identifies them on their host.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping


def volume_id(host: str, mount: str) -> str:
    """A volume's stable id: its host and mount point (the same across scans, restarts)."""
    return hashlib.sha256(f"volume\0{host}\0{mount}".encode()).hexdigest()[:16]


def chain_id(host: str, leaf: str) -> str:
    """A chain's stable id: its host and its leaf's real path."""
    return hashlib.sha256(f"chain\0{host}\0{leaf}".encode()).hexdigest()[:16]


class Namer:
    """Turns real paths into root-relative names for one host's roots."""

    def __init__(self, roots: Mapping[str, str]) -> None:
        # Longest first: a root nested in another claims its own files.
        self.roots = sorted(((n, os.path.realpath(p)) for n, p in roots.items()),
                            key=lambda r: -len(r[1]))
        self._pattern = (re.compile("|".join(re.escape(p) for _, p in self.roots))
                         if self.roots else None)

    def locate(self, path: str) -> tuple[str, str] | None:
        """``(root, relative path)`` of a real path, or ``None`` outside every root."""
        for name, real in self.roots:
            if path == real:
                return name, "."
            if path.startswith(real.rstrip(os.sep) + os.sep):
                return name, os.path.relpath(path, real)
        return None

    def file(self, path: str) -> dict[str, str] | None:
        got = self.locate(path)
        return None if got is None else {"root": got[0], "path": got[1]}

    def text(self, message: str) -> str:
        """``message`` with every absolute path in a root made ``root:rel``, and any other
        absolute path hidden."""
        if self._pattern is not None:
            by_real = {real: name for name, real in self.roots}

            def sub(m: re.Match[str]) -> str:
                rest = m.string[m.end():m.end() + 1]
                return f"{by_real[m.group(0)]}:" + ("" if rest == "/" else ".")
            message = self._pattern.sub(sub, message)
            message = re.sub(r"(\w[\w.-]*):/", r"\1:", message)
        return re.sub(r"(?<![\w:])/[^\s,;()'\"]+", "<outside the roots>", message)

    def roots_on(self, device: int) -> list[str]:
        """The roots whose directory lives on filesystem ``device``."""
        out = []
        for name, real in self.roots:
            try:
                if os.stat(real).st_dev == device:
                    out.append(name)
            except OSError:
                continue
        return sorted(out)
