"""A file's identity beyond its bytes: owner, group, mode, POSIX ACL and extended attributes.

A disk served by Samba to Hyper-V keeps its Windows permissions in ``security.NTACL``
(``vfs_acl_xattr``), its DOS attributes in ``user.DOSATTRIB`` and its POSIX ACL in
``system.posix_acl_access``; the VM's account must keep access to its disk. A file that
takes an original's place gets all of these *before* it takes the name, so the name never
points at a disk with other permissions.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from vhdlib.errors import AttributeCarryError

#: Namespaces carried over, as the process can read them (trusted.* needs root).
NAMESPACES = ("user.", "security.", "trusted.")
ACL = "system.posix_acl_access"
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass
class FileAttributes:
    """What :func:`capture` read; ``xattrs`` includes the ACL when there is one."""

    uid: int
    gid: int
    mode: int
    xattrs: dict[str, bytes] = field(default_factory=dict)
    #: Listed but unreadable by this process (left out: it cannot carry them).
    unreadable: list[str] = field(default_factory=list)


def _carried(name: str) -> bool:
    return name == ACL or name.startswith(NAMESPACES)


def _list(path: str) -> list[str]:
    try:
        return [n for n in os.listxattr(path) if _carried(n)]
    except OSError as e:
        if e.errno in _NO_XATTRS:
            return []
        raise


def capture(path: str) -> FileAttributes:
    """Owner, group, permission bits, ACL and every carried xattr of ``path``."""
    st = os.stat(path)
    attrs = FileAttributes(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    for name in _list(path):
        try:
            attrs.xattrs[name] = os.getxattr(path, name)
        except OSError:
            attrs.unreadable.append(name)
    return attrs


def carry(src: str, dest: str, *, drop: bool = False) -> list[str]:
    """Give ``dest`` the attributes of ``src``, verified by reading them back.

    Raises :class:`AttributeCarryError` naming each attribute that could not be set,
    unless ``drop``; returns the names dropped (``owner``, ``group``, ``mode`` or an xattr
    name). Extra carried xattrs ``dest`` has (a default ACL inherited from its folder)
    are removed. Idempotent; ``dest`` is fsync'd.
    """
    want = capture(src)
    failed: dict[str, str] = {}

    def attempt(name: str, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except OSError as e:
            failed[name] = e.strerror or str(e)

    uid = want.uid if os.stat(dest).st_uid != want.uid else -1
    gid = want.gid if os.stat(dest).st_gid != want.gid else -1
    if uid != -1 or gid != -1:
        attempt("owner" if uid != -1 else "group", os.chown, dest, uid, gid)
    for name in _list(dest):
        if name not in want.xattrs:
            attempt(name, os.removexattr, dest, name)
    # chown clears set-id bits; the ACL (last) rewrites the group bits from its mask.
    for name, value in want.xattrs.items():
        if name != ACL:
            attempt(name, os.setxattr, dest, name, value)
    attempt("mode", os.chmod, dest, want.mode)
    if ACL in want.xattrs:
        attempt(ACL, os.setxattr, dest, ACL, want.xattrs[ACL])
    failed.update({n: why for n, why in _differences(want, capture(dest)).items()
                   if n not in failed})
    if failed and not drop:
        raise AttributeCarryError(
            "cannot carry over " + "; ".join(f"{n} ({why})" for n, why in failed.items())
            + f" from {src}; refusing to put the new disk in its place "
            "(--drop-attributes goes ahead without them)", path=dest,
            attributes=list(failed))
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sorted(failed)


def _differences(want: FileAttributes, got: FileAttributes) -> dict[str, str]:
    out: dict[str, str] = {}
    if got.uid != want.uid:
        out["owner"] = f"is {got.uid}, not {want.uid}"
    if got.gid != want.gid:
        out["group"] = f"is {got.gid}, not {want.gid}"
    if got.mode != want.mode:
        out["mode"] = f"is {got.mode:o}, not {want.mode:o}"
    for name, value in want.xattrs.items():
        if got.xattrs.get(name) != value:
            out[name] = "reads back differently" if name in got.xattrs else "not set"
    for name in got.xattrs:
        if name not in want.xattrs:
            out[name] = "extra attribute could not be removed"
    return out
