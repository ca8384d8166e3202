"""Confine every path a job names to its storage root.

HTTP never carries an absolute path: a job names a root (configured on the worker) and a
path relative to it. The worker re-resolves it with ``realpath`` and refuses ``..``,
absolute paths, NUL bytes, symlinks that lead out of the root, device files, and (through
:func:`check_chain`) parent locators that lead out.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping

from service.errors import PathRefused, UnknownRoot

log = logging.getLogger(__name__)


def validate_relative(rel: str) -> str:
    """Refuse obviously bad relative paths without touching the disk (API side)."""
    if not rel or "\x00" in rel:
        raise PathRefused("path is empty or contains NUL")
    if rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise PathRefused(f"path {rel!r} is absolute; give a path relative to the root")
    parts = rel.replace("\\", "/").split("/")
    if any(p == ".." for p in parts):
        raise PathRefused(f"path {rel!r} contains '..'")
    return rel


def root_dir(roots: Mapping[str, str], name: str) -> str:
    """The real directory of root ``name``."""
    try:
        return os.path.realpath(roots[name])
    except KeyError as e:
        raise UnknownRoot(f"no storage root {name!r} on this host "
                          f"(known: {', '.join(sorted(roots)) or 'none'})") from e


def inside(root: str, real: str) -> bool:
    """Whether the real path ``real`` lies within the real directory ``root``."""
    root = os.path.realpath(root)
    return os.path.commonpath([root, real]) == root


def resolve(roots: Mapping[str, str], root: str, rel: str, *, must_exist: bool = True) -> str:
    """The real absolute path of ``rel`` under root ``root``, or :class:`PathRefused`.

    ``must_exist=False`` is for outputs: the file may be missing but its directory must
    exist inside the root, and if the file exists it must be a regular file.
    """
    validate_relative(rel)
    base = root_dir(roots, root)
    real = os.path.realpath(os.path.join(base, rel))
    if not inside(base, real):
        raise PathRefused(f"path {rel!r} leads out of root {root!r} (via a symlink)")
    try:
        st = os.stat(real)
    except FileNotFoundError as e:
        if must_exist:
            raise PathRefused(f"path {rel!r} does not exist in root {root!r}") from e
        if not os.path.isdir(os.path.dirname(real)):
            raise PathRefused(f"directory of {rel!r} does not exist in root {root!r}") from e
        return real
    if stat.S_ISDIR(st.st_mode) and not must_exist:
        return real
    if not stat.S_ISREG(st.st_mode):
        raise PathRefused(f"path {rel!r} is not a regular file (device, fifo or directory)")
    return real


def check_chain(root_real: str, layer_paths: Iterable[str]) -> None:
    """Refuse a chain whose layers (found through parent locators) leave the root."""
    for p in layer_paths:
        real = os.path.realpath(p)
        if not inside(root_real, real):
            raise PathRefused(f"chain layer {p} lies outside the root {root_real}")
        if not stat.S_ISREG(os.stat(real).st_mode):
            raise PathRefused(f"chain layer {p} is not a regular file")
