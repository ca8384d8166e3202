"""Samba's view: SMB opens and disconnected durable handles on files it serves.

A Hyper-V host that lost its connection keeps a *durable handle*: Samba remembers the open
in ``locking.tdb`` with no descriptor on the server, so neither a lease nor /proc sees it.
``smbstatus --json`` (Samba 4.16+; ``smbstatus -L`` before) lists every open, live or
disconnected; ``testparm -s`` gives the shares' paths, so a chain outside every share is
not asked about (nor is anything when testparm cannot load smb.conf: Samba is not
configured). smbstatus missing: skipped. smbstatus failing while a share covers the chain
(or the shares are unknown): :class:`~vhdlib.errors.InUseUnknownError` (the guard cannot
answer, so it refuses).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from vhdlib.errors import InUseUnknownError
from vhdlib.inuse.model import Holder

TIMEOUT = 30.0
#: ``server_id.pid`` of a disconnected open (UINT64_MAX, lib/util/server_id.c).
DISCONNECTED_PID = str(2**64 - 1)
_LOCK_LINE = re.compile(r"^(?P<pid>\S+)\s+(?P<uid>\S+)\s+(?P<deny>DENY_\S+)\s+"
                        r"(?P<access>0x[0-9a-fA-F]+)\s+(?P<rw>RDONLY|WRONLY|RDWR)\s+"
                        r"(?P<oplock>\S+)\s+(?P<rest>.*)$")


@dataclass
class SambaView:
    """What Samba was asked (``status``) and the opens it reported on the chain."""

    status: str
    holders: list[Holder] = field(default_factory=list)


@dataclass(frozen=True)
class Targets:
    """The chain's files by real path and by ``(st_dev, st_ino)``."""

    by_path: dict[str, str]
    by_id: dict[tuple[int, int], str]

    @classmethod
    def of(cls, paths: list[str]) -> Targets:
        by_path, by_id = {}, {}
        for p in paths:
            by_path[os.path.realpath(p)] = p
            st = os.stat(p)
            by_id[(st.st_dev, st.st_ino)] = p
        return cls(by_path, by_id)

    def match(self, service_path: str, filename: str,
              fileid: dict[str, Any] | None = None) -> str | None:
        if fileid:
            try:
                hit = self.by_id.get((int(fileid["devid"]), int(fileid["inode"])))
            except (KeyError, TypeError, ValueError):
                hit = None
            if hit:
                return hit
        name = os.path.join(service_path, filename) if filename not in ("", ".") \
            else service_path
        return self.by_path.get(os.path.realpath(name))


# --- parsing ---------------------------------------------------------------------------


def parse_shares(text: str) -> dict[str, str]:
    """``testparm -s`` output -> share name -> path (shares without a path left out)."""
    shares: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if sep and section and section.lower() != "global" and key.strip().lower() == "path":
            shares[section] = value.strip()
    return shares


def parse_status_json(text: str, targets: Targets) -> list[Holder]:
    """The opens ``smbstatus --json`` lists for the chain's files.

    Shape (source3/utils/status_json.c): ``open_files`` keyed by the full path, each with
    ``service_path``, ``filename``, ``fileid`` and ``opens`` keyed by ``"<pid>/<id>"``;
    a disconnected durable handle has the pid ``disconnected`` (server_id pid UINT64_MAX).
    """
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in smbstatus output")
    doc, _ = json.JSONDecoder().raw_decode(text[start:])
    if not isinstance(doc, dict):
        raise ValueError("smbstatus JSON is not an object")
    machines = _session_machines(doc.get("sessions") or {})
    holders: list[Holder] = []
    for key, entry in (doc.get("open_files") or {}).items():
        if not isinstance(entry, dict):
            continue
        service = str(entry.get("service_path") or "")
        filename = str(entry.get("filename") or "")
        path = targets.match(service, filename, entry.get("fileid")) if service else None
        if path is None:
            path = targets.by_path.get(os.path.realpath(str(key)))
        if path is None:
            continue
        for open_key, op in (entry.get("opens") or {}).items():
            holders.append(_json_holder(path, str(open_key), op or {}, machines))
    return holders


def _session_machines(sessions: dict[str, Any]) -> dict[str, str]:
    out = {}
    for s in sessions.values():
        if isinstance(s, dict):
            pid = str((s.get("server_id") or {}).get("pid", ""))
            out[pid] = str(s.get("remote_machine") or s.get("hostname") or "")
    return out


def _json_holder(path: str, open_key: str, op: dict[str, Any],
                 machines: dict[str, str]) -> Holder:
    pid_text = str((op.get("server_id") or {}).get("pid", open_key.split("/")[0]))
    disconnected = open_key.startswith("disconnected") or pid_text == DISCONNECTED_PID
    access = op.get("access_mask") or {}
    writes = bool(access.get("WRITE_DATA") or access.get("APPEND_DATA")
                  or "W" in str(access.get("text", "")))
    user = str(op.get("username") or op.get("uid", "?"))
    if disconnected:
        return Holder(path, None, "a disconnected SMB durable handle",
                      "write" if writes else "read", "smb-durable", f"user {user}")
    machine = machines.get(pid_text, "")
    detail = f"user {user}" + (f" from {machine}" if machine else "")
    pid = int(pid_text) if pid_text.isdigit() else None
    return Holder(path, pid, "smbd", "write" if writes else "read", "smb", detail)


def parse_status_locks(text: str, targets: Targets) -> list[Holder]:
    """The opens of ``smbstatus -L`` (text, older Samba) for the chain's files.

    Each line: Pid, User(ID), DenyMode, Access, R/W, Oplock, then ``SharePath   Name
    Time`` separated by three spaces (source3/utils/status.c print_share_mode).
    """
    holders: list[Holder] = []
    for line in text.splitlines():
        m = _LOCK_LINE.match(line.strip())
        if not m:
            continue
        parts = m["rest"].split("   ")
        if len(parts) < 2:
            continue
        service, name = parts[0].strip(), "   ".join(parts[1:-1] or parts[1:]).strip()
        path = targets.match(service, name)
        if path is None:
            continue
        writes = m["rw"] != "RDONLY"
        mode = "write" if writes else "read"
        if m["pid"] == "disconnected" or m["pid"] == DISCONNECTED_PID:
            holders.append(Holder(path, None, "a disconnected SMB durable handle", mode,
                                  "smb-durable", f"uid {m['uid']}"))
        else:
            pid = int(m["pid"]) if m["pid"].isdigit() else None
            holders.append(Holder(path, pid, "smbd", mode, "smb", f"uid {m['uid']}"))
    return holders


# --- asking ----------------------------------------------------------------------------


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _covering_shares(paths: list[str]) -> tuple[dict[str, str] | None, str]:
    """Shares whose path holds a file of ``paths`` (None: testparm cannot tell), and why
    there are none."""
    exe = shutil.which("testparm")
    if exe is None:
        return None, ""
    try:
        proc = _run([exe, "-s"])
    except (OSError, subprocess.TimeoutExpired):
        return None, ""
    if proc.returncode != 0:
        if "can't load" in proc.stderr.lower() or "error loading" in proc.stderr.lower():
            # No smb.conf: smbd cannot run (and smbstatus would fail on the same file).
            return {}, "Samba is not configured (testparm -s: " \
                f"{_first_line(proc.stderr)})"
        return None, ""
    covering = {}
    for name, share_path in parse_shares(proc.stdout).items():
        if "%" in share_path:
            continue  # per-user substitutions ([homes]): cannot be mapped here
        root = os.path.realpath(share_path)
        if any(os.path.commonpath([root, os.path.realpath(p)]) == root for p in paths):
            covering[name] = share_path
    return covering, "no share covers these files (testparm -s)"


def query(paths: list[str]) -> SambaView:
    """Ask Samba about ``paths`` (existing files). See the module docstring."""
    exe = shutil.which("smbstatus")
    if exe is None:
        return SambaView("smbstatus not installed")
    shares, why_not = _covering_shares(paths)
    if shares is not None and not shares:
        return SambaView(why_not)
    where = f"share {', '.join(sorted(shares))}" if shares else "shares unknown"
    targets = Targets.of(paths)
    try:
        proc = _run([exe, "--json"])
        if proc.returncode != 0 and "json" in (proc.stderr + proc.stdout).lower():
            # Samba before 4.16 has no --json: the text list of locked files.
            proc = _run([exe, "-L"])
            how = "smbstatus -L"
            parse = parse_status_locks
        else:
            how = "smbstatus --json"
            parse = parse_status_json
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InUseUnknownError(f"cannot ask Samba ({where}) whether an SMB client holds "
                                f"the chain: {exe}: {e}", path=paths[0]) from e
    if proc.returncode != 0:
        raise InUseUnknownError(
            f"cannot ask Samba ({where}) whether an SMB client holds the chain: {how} "
            f"exited {proc.returncode}: {_first_line(proc.stderr or proc.stdout)}",
            path=paths[0])
    try:
        holders = parse(proc.stdout, targets)
    except ValueError as e:
        raise InUseUnknownError(f"cannot read Samba's answer ({how}, {where}): {e}",
                                path=paths[0]) from e
    return SambaView(f"{how} ({where})", holders)
