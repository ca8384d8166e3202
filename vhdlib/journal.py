"""The checkpoint of a running operation: ``<target>.vhdmend.json`` beside its target.

Written atomically (temp file, fsync, rename, fsync of the folder) so that after a
``kill -9`` at any instant it holds either the previous or the next checkpoint, never a
mix. The journal is the single source of truth for resuming.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vhdlib.errors import ImageError, OperationInProgressError

log = logging.getLogger(__name__)

SUFFIX = ".vhdmend.json"
VERSION = 1


def journal_path_for(target: str) -> str:
    """The journal's path for an operation whose target is ``target``."""
    return os.path.abspath(target) + SUFFIX


def fsync_dir(folder: str) -> None:
    """Make a rename or create in ``folder`` durable (POSIX; NTFS journals its metadata
    and cannot open a folder as a file)."""
    if os.name == "nt":
        return
    fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(folder)


def save(path: str, state: dict[str, Any]) -> None:
    """Write the checkpoint ``state`` (a JSON-ready dict) durably."""
    state = dict(state)
    state["journal_version"] = VERSION
    write_atomic(path, json.dumps(state, sort_keys=True, separators=(",", ":")).encode())


def load(path: str) -> dict[str, Any]:
    """Read a checkpoint; a damaged journal is an :class:`ImageError` naming the file."""
    try:
        with open(path, "rb") as f:
            state = json.loads(f.read())
    except FileNotFoundError as e:
        raise ImageError("no such journal", path=path) from e
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"unreadable journal: {e}", path=path) from e
    if not isinstance(state, dict) or state.get("journal_version") != VERSION:
        raise ImageError("not a vhdmend journal (or an unsupported version)", path=path)
    return state


#: Suffix of the fence lock beside a journal (``<journal>.fence``): it serialises a
#: checkpoint's fence check and save with :func:`set_fence`.
FENCE_LOCK = ".fence"


@contextlib.contextmanager
def fence_lock(journal_path: str) -> Iterator[None]:
    """Hold ``<journal>.fence`` exclusively (blocking) around a fence check and a save.

    A separate file from the run lock (``<journal>.lock``): the stale executor holds that
    one for its whole run, and a second ``flock`` on it would refuse the holder itself.
    Freed by the kernel if the process dies.
    """
    fd = os.open(journal_path + FENCE_LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                 0o644)
    try:
        _lock_blocking(fd, journal_path + FENCE_LOCK)
        yield
    finally:
        os.close(fd)  # frees the lock


def set_fence(path: Path, fence: int) -> None:
    """Record fencing number ``fence`` in the journal at ``path`` before resuming it.

    An older executor frozen past its lease (SIGSTOP, a VM pause) may still hold the
    journal's run lock and wake up later: with the newer fence on disk, its next checkpoint
    and its irreversible steps are refused (:class:`~vhdlib.errors.FenceError`), so it
    stops instead of rolling the cursor back or swapping files. A journal already at a
    newer fence is left alone (resuming it with ``fence`` is then refused). Done under
    :func:`fence_lock`, which a checkpoint's check-and-save also holds: a checkpoint lands
    wholly before the new fence (and the next one is refused) or sees it.
    """
    with fence_lock(str(path)):
        state = load(str(path))
        if int(state.get("fence") or 0) < fence:
            state["fence"] = fence
            save(str(path), state)


def refuse_if_present(target: str) -> None:
    """Refuse to start when an unfinished operation's journal exists for ``target``."""
    jp = journal_path_for(target)
    if os.path.exists(jp):
        raise OperationInProgressError(
            f"an unfinished operation's journal exists ({jp}); run 'vhdmend resume {jp}' "
            "or 'vhdmend check --repair' first", path=target)


def _lock_exclusive(fd: int) -> None:
    """Take an exclusive, non-blocking lock freed by the kernel when the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock_blocking(fd: int, path: str) -> None:
    """Wait for an exclusive lock on ``fd`` (short holds: one journal save)."""
    try:
        import fcntl
    except ImportError:  # Windows: LK_LOCK retries for about 10 s, then raises
        import msvcrt
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined,unused-ignore]
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("%s: no file locks on this file system (%s)", path, e.strerror)


class RunLock:
    """Exclusive hold on an operation while a process runs it (``<journal>.lock``).

    ``flock`` dies with its process, so a ``kill -9`` frees it at once; a second process
    (a duplicate ``resume``, a redelivered task) is refused instead of racing the first.
    """

    def __init__(self, journal_path: str) -> None:
        self.path = journal_path + ".lock"
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            _lock_exclusive(fd)
        except (BlockingIOError, PermissionError) as e:  # held (EWOULDBLOCK; EACCES on NT)
            os.close(fd)
            raise OperationInProgressError(
                "another process is running this operation right now", path=self.path) from e
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            # A file system without locks: the journal's fence still guards the service.
            log.warning("%s: no file locks on this file system (%s)", self.path, e.strerror)
        self.fd = fd

    def release(self, *, remove_file: bool) -> None:
        if self.fd < 0:
            return
        if remove_file:
            # Also a temp journal left by a kill before the first checkpoint landed.
            journal = self.path[:-len(".lock")]
            for leftover in (self.path, journal + ".tmp", journal + FENCE_LOCK):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        os.close(self.fd)
        self.fd = -1

    @staticmethod
    def forget(journal_path: str) -> None:
        """Remove the lock file's name (the holder keeps its flock until it closes)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal_path + ".lock")


def remove(path: str) -> None:
    """Delete a finished operation's journal (durably)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(os.path.abspath(path)))
