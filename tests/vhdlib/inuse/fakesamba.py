"""Fake ``smbstatus`` and ``testparm`` executables, first on PATH, printing captured-format
output (the JSON shape of Samba 4.x source3/utils/status_json.c; the -L text of status.c)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SMBSTATUS = """#!/bin/sh
d="$(dirname "$0")"
echo "$@" >> "$d/smbstatus.calls"
if [ "$1" = "--json" ] && [ -f "$d/json-unsupported" ]; then
  echo "smbstatus: unrecognized option '--json'" >&2; exit 1
fi
if [ -f "$d/fail" ]; then cat "$d/fail" >&2; exit 1; fi
if [ "$1" = "--json" ]; then cat "$d/status.json"; else cat "$d/status.txt"; fi
"""

TESTPARM = """#!/bin/sh
d="$(dirname "$0")"
if [ -f "$d/testparm.fail" ]; then
  echo "Can't load /etc/samba/smb.conf - run testparm to debug it" >&2; exit 1
fi
echo "Load smb config files from /etc/samba/smb.conf" >&2
cat "$d/testparm.out"
"""

SERVER_ID = {"pid": "4242", "task_id": "0", "vnn": "4294967295",
             "unique_id": "10756714984493602300"}
DISCONNECTED = {"pid": "18446744073709551615", "task_id": "4294967295",
                "vnn": "4294967295", "unique_id": "18446744073709551615"}


def smb_open(server_id: dict[str, str], file_id: int, write: bool,
             username: str = "NT VIRTUAL MACHINE\\5CE8C2A1") -> dict[str, Any]:
    """One entry of ``opens`` as status_json.c add_open_to_json writes it."""
    return {
        "server_id": server_id, "username": username, "uid": 3000,
        "share_file_id": str(file_id),
        "sharemode": {"hex": "0x00000001", "READ": True, "WRITE": False, "DELETE": False,
                      "text": "R"},
        "access_mask": {"hex": "0x0012019f" if write else "0x00120089",
                        "READ_DATA": True, "WRITE_DATA": write, "APPEND_DATA": write,
                        "READ_EA": True, "WRITE_EA": write, "EXECUTE": False,
                        "READ_ATTRIBUTES": True, "WRITE_ATTRIBUTES": write,
                        "DELETE_CHILD": False, "DELETE": False, "READ_CONTROL": True,
                        "WRITE_DAC": False, "SYNCHRONIZE": True,
                        "ACCESS_SYSTEM_SECURITY": False, "text": "RW" if write else "R"},
        "caching": {"READ": True, "WRITE": False, "HANDLE": True, "hex": "0x00000005",
                    "text": "RH"},
        "oplock": {"EXCLUSIVE": False, "BATCH": False, "LEVEL_II": False, "LEASE": True,
                   "text": "LEASE(RH)"},
        "lease": {"lease_key": "a1b2c3d4-0000-0000-0000-000000000001", "hex": "0x00000005",
                  "READ": True, "WRITE": False, "HANDLE": True, "text": "RH"},
        "opened_at": "2026-12-01T20:00:00+0000",
    }


def _pid_text(smb_open: dict[str, Any]) -> str:
    # server_id_str_buf() prints a disconnected server id as "disconnected".
    sid = smb_open["server_id"]
    return "disconnected" if sid["pid"] == DISCONNECTED["pid"] else str(sid["pid"])


def status_json(share_path: Path, files: dict[str, list[dict[str, Any]]],
                fileids: dict[str, tuple[int, int]] | None = None) -> str:
    """A whole ``smbstatus --json`` document with ``open_files`` for ``files``."""
    open_files = {}
    for name, opens in files.items():
        devid, inode = (fileids or {}).get(name, (59, 11404245))
        open_files[f"{share_path}/{name}"] = {
            "service_path": str(share_path), "filename": name,
            "fileid": {"devid": devid, "inode": inode, "extid": 0},
            "num_pending_deletes": 0,
            "opens": {f"{_pid_text(o)}/{o['share_file_id']}": o for o in opens}}
    doc = {
        "timestamp": "2026-12-01T21:00:00.000000+0000", "version": "4.17.12-Debian",
        "smb_conf": "/etc/samba/smb.conf",
        "sessions": {"3639217376": {"session_id": "3639217376", "server_id": SERVER_ID,
                                    "uid": 3000, "gid": 3001, "username": "HV\\hv01$",
                                    "groupname": "HV\\domain computers",
                                    "remote_machine": "10.0.0.21",
                                    "hostname": "ipv4:10.0.0.21:50110",
                                    "session_dialect": "SMB3_11",
                                    "encryption": {"cipher": "", "degree": "none"},
                                    "signing": {"cipher": "AES-128-GMAC",
                                                "degree": "partial"}}},
        "tcons": {}, "open_files": open_files}
    return json.dumps(doc, indent=2)


def locks_text(share_path: Path, rows: list[tuple[str, str, str]]) -> str:
    """``smbstatus -L`` output: rows of (pid, R/W, filename)."""
    out = ["", "Locked files:",
           "Pid          User(ID)   DenyMode   Access      R/W        Oplock           "
           "SharePath   Name   Time",
           "-" * 98]
    for pid, rw, name in rows:
        out.append(f"{pid:<11}  {3000:<9}  DENY_NONE  0x{0x12019f:<8x}  {rw:<9}  "
                   f"{'LEASE(RH)':<15}  {share_path}   {name}   Tue Dec  1 20:00:00 2026")
    return "\n".join(out) + "\n"


def testparm_text(shares: dict[str, Path]) -> str:
    lines = ["# Global parameters", "[global]", "\tserver role = standalone server",
             "\tmap to guest = Bad User", "", "[homes]", "\tbrowseable = No",
             "\tcomment = Home Directories", "\tread only = No", ""]
    for name, path in shares.items():
        lines += [f"[{name}]", f"\tpath = {path}", "\tread only = No",
                  "\tvfs objects = acl_xattr", ""]
    return "\n".join(lines)


class FakeSamba:
    """The fake tools' folder; write what they print, read what they were asked."""

    def __init__(self, bindir: Path) -> None:
        self.bin = bindir

    def serve(self, shares: dict[str, Path]) -> None:
        (self.bin / "testparm.out").write_text(testparm_text(shares))

    def status(self, text: str, *, fmt: str = "json") -> None:
        (self.bin / ("status.json" if fmt == "json" else "status.txt")).write_text(text)

    def fail(self, message: str) -> None:
        (self.bin / "fail").write_text(message + "\n")

    def no_json(self) -> None:
        (self.bin / "json-unsupported").write_text("")

    def calls(self) -> list[str]:
        p = self.bin / "smbstatus.calls"
        return p.read_text().splitlines() if p.exists() else []

    def uninstall_smbstatus(self) -> None:
        (self.bin / "smbstatus").unlink()


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSamba:
    """Put fake ``smbstatus`` and ``testparm`` first on PATH (subprocesses inherit it)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, text in (("smbstatus", SMBSTATUS), ("testparm", TESTPARM)):
        p = bindir / name
        p.write_text(text)
        p.chmod(0o755)
    fake = FakeSamba(bindir)
    fake.serve({})
    fake.status(status_json(tmp_path, {}))
    fake.status(locks_text(tmp_path, []), fmt="text")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return fake
