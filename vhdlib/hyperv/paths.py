"""Windows and UNC paths of a Hyper-V configuration -> files on this (Samba) server.

A configuration names its disks as the Hyper-V host sees them: ``\\\\fs01\\vms\\web\\web.vhdx``
(through a share) or ``D:\\VMs\\web\\web.vhdx`` (a local disk of the host, later copied here).
A UNC path whose share Samba defines maps exactly (``testparm -s`` gives share -> path); any
other path is matched by its tail under the given roots, the longest tail that resolves to
exactly one file, and marked as a guess. Windows compares names case-insensitively, the Linux
filesystem does not: each component is matched case-insensitively, and a name that matches
two entries (``Disk.vhdx`` and ``disk.vhdx``) matches neither - vhdlib does not pick one.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from vhdlib.inuse import samba

_DRIVE = re.compile(r"^([A-Za-z]):$")

#: ``testparm -s`` is quick; a hung one must not hang a remediation.
TESTPARM_TIMEOUT = 15.0


@dataclass(frozen=True)
class WindowsPath:
    """A Windows path split: ``anchor`` (``\\\\server\\share`` or ``D:``) and components."""

    anchor: str
    components: tuple[str, ...]
    server: str | None = None
    share: str | None = None

    @classmethod
    def parse(cls, text: str) -> WindowsPath | None:
        """Split an absolute Windows or UNC path; ``None`` for anything else."""
        path = text.strip().replace("/", "\\")
        if path.upper().startswith("\\\\?\\UNC\\"):
            path = "\\\\" + path[8:]
        elif path.startswith("\\\\?\\") or path.startswith("\\\\.\\"):
            path = path[4:]
        if path.startswith("\\\\"):
            parts = [p for p in path[2:].split("\\") if p]
            if len(parts) < 3:
                return None
            return cls(f"\\\\{parts[0]}\\{parts[1]}", tuple(parts[2:]), parts[0], parts[1])
        head, sep, rest = path.partition("\\")
        if not sep or not _DRIVE.match(head):
            return None
        comps = tuple(p for p in rest.split("\\") if p)
        return cls(head.upper(), comps) if comps else None

    def __str__(self) -> str:
        return join_windows(self.anchor, self.components)


def join_windows(anchor: str, components: Iterable[str]) -> str:
    """``anchor`` and components joined with backslashes."""
    return "\\".join([anchor.rstrip("\\"), *components])


@dataclass(frozen=True)
class PathMapping:
    """A configuration's Windows path resolved to a local file, and how sure that is."""

    windows_path: str
    local_path: str
    #: "share" (a UNC path through a share Samba defines: exact) or "guess" (matched by the
    #: last ``tail`` components under a root: probably right, shown as a guess).
    how: str
    tail: int
    #: The Windows prefix that corresponds to ``local_prefix`` (for other files beside it).
    windows_prefix: str
    local_prefix: str

    @property
    def guess(self) -> bool:
        return self.how != "share"

    def windows_path_of(self, local: str) -> str | None:
        """How the Hyper-V host names ``local`` by this mapping's prefix (``None``: outside)."""
        rel = os.path.relpath(_real(local), self.local_prefix)
        if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
            return None
        # Folders shared with the mapped file keep the host's spelling of them.
        mine = os.path.relpath(self.local_path, self.local_prefix).split(os.sep)
        theirs = self.windows_path.replace("/", "\\").split("\\")[-len(mine):]
        parts = rel.split(os.sep)
        for i, part in enumerate(parts):
            if i >= len(mine) or part != mine[i]:
                break
            parts[i] = theirs[i]
        return join_windows(self.windows_prefix, parts)

    def to_dict(self) -> dict[str, object]:
        return {"windows_path": self.windows_path, "local_path": self.local_path,
                "how": self.how, "guess": self.guess, "tail_components": self.tail}


def parse_testparm(text: str) -> dict[str, str]:
    """Share name -> path from ``testparm -s`` output (``[global]`` and path-less skipped).

    Paths with ``%`` substitutions (``%U``, ``%S``) depend on the connecting user: skipped.
    """
    return {name: os.path.normpath(path) for name, path in samba.parse_shares(text).items()
            if path.startswith("/") and "%" not in path}


Runner = Callable[[list[str]], str]


def _run(argv: list[str]) -> str:
    # Not check=True: testparm exits non-zero for a warning yet still prints every share.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TESTPARM_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    return done.stdout


def samba_shares(runner: Runner | None = None) -> dict[str, str]:
    """Samba's shares (name -> path) from ``testparm -s``; empty where Samba is absent."""
    try:
        return parse_testparm((runner or _run)(["testparm", "-s"]))
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return {}


def _real(path: str) -> str:
    """realpath of a file that may be gone (archived): its folder resolved, its name kept."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


class PathMapper:
    """Maps configuration paths to files under ``roots`` (and Samba ``shares``).

    ``known`` are files that count as present even when gone from their folder: the layers
    of a chain a remediation has just archived, which the configurations still name.
    """

    def __init__(self, roots: Iterable[str], shares: Mapping[str, str] | None = None,
                 known: Iterable[str] = (), folders: dict[str, str] | None = None) -> None:
        self.roots = list(dict.fromkeys(os.path.realpath(r) for r in roots))
        self.shares = {name.casefold(): path for name, path in (shares or {}).items()}
        self._share_names = {name.casefold(): name for name in (shares or {})}
        self.known: dict[str, set[str]] = {}
        # One realpath per folder (a scan knows 10,000 files in 2,000 folders); ``folders``
        # is the caller's cache of them, shared with its own lookups.
        folders = {} if folders is None else folders
        for path in known:
            folder, name = os.path.split(os.path.abspath(path))
            real = folders.get(folder)
            if real is None:
                real = folders[folder] = os.path.realpath(folder)
            self.known.setdefault(real, set()).add(name)
        self._listings: dict[str, list[str]] = {}

    def share_for(self, local: str) -> tuple[str, str] | None:
        """(share name, path) of the share holding ``local`` (the longest match), if any."""
        real = _real(local)
        best: tuple[str, str] | None = None
        for key, base in self.shares.items():
            base_real = os.path.realpath(base)
            inside = real == base_real or real.startswith(base_real.rstrip(os.sep) + os.sep)
            if inside and (best is None or len(base_real) > len(best[1])):
                best = (self._share_names[key], base_real)
        return best

    def map(self, windows_path: str) -> PathMapping | None:
        """The local file ``windows_path`` names, or ``None`` (unknown, or ambiguous)."""
        win = WindowsPath.parse(windows_path)
        if win is None:
            return None
        if win.share is not None and win.share.casefold() in self.shares:
            base = os.path.realpath(self.shares[win.share.casefold()])
            local = self._resolve(base, win.components)
            if local is not None:
                return PathMapping(windows_path, local, "share", len(win.components),
                                   win.anchor, base)
        # A guess: for a UNC path the share's name is likely a folder's name too.
        anchor, comps = win.anchor, win.components
        if win.share is not None:
            anchor, comps = f"\\\\{win.server}", (win.share, *comps)
        for k in range(len(comps), 0, -1):
            hits = {_real(p) for root in self.roots
                    if (p := self._resolve(root, comps[-k:])) is not None}
            if len(hits) > 1:
                return None  # the same tail names different files: no guess
            if hits:
                local = hits.pop()
                prefix = local
                for _ in range(k):
                    prefix = os.path.dirname(prefix)
                return PathMapping(windows_path, local, "guess", k,
                                   join_windows(anchor, comps[:-k]), prefix)
        return None

    def _resolve(self, base: str, comps: tuple[str, ...]) -> str | None:
        """``base``/comps matched case-insensitively; ``None`` if missing or ambiguous."""
        cur = base
        for i, comp in enumerate(comps):
            last = i == len(comps) - 1
            names = self._listing(cur)
            if last:
                names = sorted(set(names) | self.known.get(_real(cur), set()))
            if comp in names:
                match = comp
            else:
                folded = comp.casefold()
                matches = [n for n in names if n.casefold() == folded]
                if len(matches) != 1:
                    return None
                match = matches[0]
            cur = os.path.join(cur, match)
            if not last and not os.path.isdir(cur):
                return None
        return cur

    def _listing(self, folder: str) -> list[str]:
        if folder not in self._listings:
            try:
                self._listings[folder] = os.listdir(folder)
            except OSError:
                self._listings[folder] = []
        return self._listings[folder]
