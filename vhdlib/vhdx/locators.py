"""VHDX parent locators (MS-VHDX 2.6.2.6): from the locator's entries to candidate parent
paths, and the Windows paths :func:`vhdlib.vhdx.create` writes."""

from __future__ import annotations

import os
from uuid import UUID

from vhdlib.errors import ImageError
from vhdlib.layer import ParentLink
from vhdlib.vhdx import structs as S


def parse_guid_text(text: str | None) -> UUID | None:
    """``{...}`` GUID text as a UUID; ``None`` when absent or malformed."""
    if not text:
        return None
    try:
        return UUID(text.strip().strip("{}"))
    except ValueError:
        return None


def windows_candidates(value: str, folder: str, *, relative: bool) -> list[str]:
    """Local paths a Windows path may denote, best first (2.6.2.6.2).

    Relative paths resolve against the child's folder. ``\\\\?\\Volume{...}\\`` and
    ``C:\\...`` paths only exist on Windows: they are mapped onto the child's folder (same
    file name). ``Z:\\`` is Wine's mapping of the Unix root, which create writes.
    """
    v = value.replace("\\", "/")
    name = v.rsplit("/", 1)[-1]
    out: list[str] = []
    if relative:
        rel = v[2:] if v.startswith("./") else v.lstrip("/")
        out.append(os.path.normpath(os.path.join(folder, rel)))
        return out
    if len(v) >= 3 and v[1] == ":" and v[2] == "/" and v[0] in "zZ":
        out.append(v[2:])
    if name:
        out.append(os.path.join(folder, name))
    return out


def relative_windows(target: str, start_dir: str) -> str:
    """``target`` relative to ``start_dir`` in Windows spelling (``.\\`` prefix)."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(start_dir))
    return ".\\" + rel.replace("/", "\\") if not rel.startswith("..") else rel.replace("/", "\\")


def parent_link(locator: S.ParentLocator, child_path: str) -> ParentLink:
    """relative_path, volume_path, absolute_win32_path; linked by parent_linkage (or
    parent_linkage2)."""
    folder = os.path.dirname(os.path.abspath(child_path))
    link = parse_guid_text(locator.get("parent_linkage"))
    if link is None:
        raise ImageError("parent locator lacks a valid parent_linkage", path=child_path)
    alt = parse_guid_text(locator.get("parent_linkage2"))
    cands: list[tuple[str, str]] = []
    for key in ("relative_path", "volume_path", "absolute_win32_path"):
        value = locator.get(key)
        if not value:
            continue
        for p in windows_candidates(value, folder, relative=(key == "relative_path")):
            cands.append((key, p))
    return ParentLink(link, cands, folder,
                      alternate_ids=(alt,) if alt is not None and alt != S.ZERO_GUID else ())
