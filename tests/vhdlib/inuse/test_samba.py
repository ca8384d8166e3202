"""Samba's view in the in-use guard: SMB opens and disconnected durable handles refuse a
chain like a local holder; fake smbstatus/testparm first on PATH print captured formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chains import build_chain
from tests.vhdlib.inuse import fakesamba
from tests.vhdlib.inuse.fakesamba import DISCONNECTED, SERVER_ID, smb_open, status_json
from tests.vhdmend.helpers import assert_clean_error, file_tree, run_cli
from vhdlib import inuse
from vhdlib.errors import FileInUseError, InUseUnknownError
from vhdlib.inuse import samba
from vhdlib.inuse.model import Purpose

MiB = 1 << 20


# --- parsing ---------------------------------------------------------------------------


def _targets(tmp_path: Path, *names: str) -> tuple[list[Path], samba.Targets]:
    paths = []
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        paths.append(p)
    return paths, samba.Targets.of([str(p) for p in paths])


def test_parse_json_opens_and_durable_handles(tmp_path: Path) -> None:
    (a, b, c), targets = _targets(tmp_path, "base.vhdx", "vm/new.avhdx", "other.vhdx")
    text = "Failed to load config\n" + status_json(tmp_path, {
        "base.vhdx": [smb_open(SERVER_ID, 1, write=False)],
        "vm/new.avhdx": [smb_open(SERVER_ID, 2, write=True),
                         smb_open(DISCONNECTED, 3, write=True)],
        "elsewhere.vhdx": [smb_open(SERVER_ID, 4, write=True)]})
    got = samba.parse_status_json(text, targets)
    assert [(h.path, h.pid, h.name, h.mode, h.via) for h in got] == [
        (str(a), 4242, "smbd", "read", "smb"),
        (str(b), 4242, "smbd", "write", "smb"),
        (str(b), None, "a disconnected SMB durable handle", "write", "smb-durable")]
    assert "from 10.0.0.21" in got[0].detail and "NT VIRTUAL MACHINE" in got[0].detail
    assert c.exists()  # listed nowhere: no holder


def test_parse_json_matches_by_file_id(tmp_path: Path) -> None:
    (a,), targets = _targets(tmp_path, "base.vhdx")
    st = os.stat(a)
    # A share path reached through another name (a symlink, a bind mount): the id holds.
    text = status_json(Path("/srv/elsewhere"), {"x.vhdx": [smb_open(SERVER_ID, 1, False)]},
                       fileids={"x.vhdx": (st.st_dev, st.st_ino)})
    assert [h.path for h in samba.parse_status_json(text, targets)] == [str(a)]


def test_parse_json_rejects_garbage(tmp_path: Path) -> None:
    _, targets = _targets(tmp_path, "a.vhd")
    with pytest.raises(ValueError):
        samba.parse_status_json("smbstatus: no JSON support", targets)


def test_parse_locks_text(tmp_path: Path) -> None:
    (a, b), targets = _targets(tmp_path, "base.vhd", "my disk.avhd")
    text = fakesamba.locks_text(tmp_path, [("4242", "RDONLY", "base.vhd"),
                                           ("disconnected", "RDWR", "my disk.avhd"),
                                           ("4243", "RDWR", "unrelated.vhd")])
    got = samba.parse_status_locks(text, targets)
    assert [(h.path, h.pid, h.mode, h.via) for h in got] == [
        (str(a), 4242, "read", "smb"), (str(b), None, "write", "smb-durable")]


def test_parse_shares() -> None:
    text = fakesamba.testparm_text({"vms": Path("/srv/vms"), "Hyper V": Path("/srv/hv")})
    assert samba.parse_shares(text) == {"vms": "/srv/vms", "Hyper V": "/srv/hv"}


# --- the guard with fake tools on PATH -------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> fakesamba.FakeSamba:
    return fakesamba.install(tmp_path, monkeypatch)


def _chain(tmp_path: Path) -> list[Path]:
    d = tmp_path / "share"
    d.mkdir()
    return build_chain(d, size=8 * MiB, children=2, writes=12).paths


def test_durable_handle_refuses_every_command(tmp_path: Path,
                                              fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    share = chain[0].parent
    fake.serve({"vms": share})
    fake.status(status_json(share, {chain[-1].name: [smb_open(DISCONNECTED, 7, True)]}))
    before = file_tree(tmp_path / "share")
    for argv in (["merge", chain[-1]], ["compact", chain[-1]], ["remediate", chain[-1]],
                 ["convert", chain[-1], share / "out.vhd"],
                 ["remediate", chain[-1], "--output", share / "out.vhd"]):
        r = run_cli(*argv)
        assert_clean_error(r, 5)
        assert "disconnected SMB durable handle" in r.err and str(chain[-1]) in r.err
        assert "smbstatus --json (share vms)" in r.err
    assert file_tree(tmp_path / "share") == before
    assert fake.calls() and all(c == "--json" for c in fake.calls())
    # Samba lets go of the handle: the same command goes ahead.
    fake.status(status_json(share, {}))
    r = run_cli("merge", chain[-1])
    assert r.code == 0, r.err
    assert "samba: smbstatus --json (share vms)" in r.out


def test_a_read_only_smb_open_blocks_a_change_not_a_copy(tmp_path: Path,
                                                         fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    share = chain[0].parent
    fake.serve({"vms": share})
    fake.status(status_json(share, {chain[0].name: [smb_open(SERVER_ID, 1, False)]}))
    strs = [str(p) for p in chain]
    with pytest.raises(FileInUseError, match=r"pid 4242 \(smbd\), read via smb"):
        inuse.guard(strs, Purpose.MODIFY, "swap")
    assert not inuse.guard(strs, Purpose.READ, "convert").blocking()


def test_older_samba_without_json_is_asked_with_L(tmp_path: Path,
                                                  fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    share = chain[0].parent
    fake.serve({"vms": share})
    fake.no_json()
    fake.status(fakesamba.locks_text(share, [("4242", "RDWR", chain[1].name)]), fmt="text")
    with pytest.raises(FileInUseError, match="smbstatus -L") as ei:
        inuse.guard([str(p) for p in chain], Purpose.READ, "convert")
    assert ei.value.holders[0]["path"] == str(chain[1])
    assert fake.calls() == ["--json", "-L"]


def test_failing_smbstatus_refuses_with_its_reason(tmp_path: Path,
                                                   fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    fake.serve({"vms": chain[0].parent})
    fake.fail("ERROR: Failed to initialise locking database")
    before = file_tree(tmp_path / "share")
    r = run_cli("remediate", chain[-1])
    assert_clean_error(r, 5)
    assert "cannot ask Samba" in r.err and "locking database" in r.err, r.err
    assert file_tree(tmp_path / "share") == before
    with pytest.raises(InUseUnknownError):
        inuse.guard([str(chain[0])], Purpose.READ, "convert")


def test_chain_outside_every_share_is_not_asked(tmp_path: Path,
                                                fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    fake.serve({"vms": other})
    fake.fail("must not be asked")
    report = inuse.guard([str(p) for p in chain], Purpose.MODIFY, "merge")
    assert "no share covers" in report.samba and fake.calls() == []


def test_unconfigured_samba_is_skipped(tmp_path: Path, fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    (fake.bin / "testparm.fail").write_text("")
    fake.fail("Can't load /etc/samba/smb.conf")
    report = inuse.guard([str(p) for p in chain], Purpose.MODIFY, "merge")
    assert "not configured" in report.samba and fake.calls() == []


def test_unknown_shares_ask_smbstatus_anyway(tmp_path: Path,
                                             fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    (fake.bin / "testparm").write_text("#!/bin/sh\nexit 2\n")  # fails, says nothing
    fake.status(status_json(chain[0].parent, {chain[0].name: [smb_open(SERVER_ID, 1, True)]}))
    with pytest.raises(FileInUseError, match="shares unknown"):
        inuse.guard([str(p) for p in chain], Purpose.READ, "convert")


def test_missing_smbstatus_is_skipped_silently(tmp_path: Path,
                                               fake: fakesamba.FakeSamba) -> None:
    chain = _chain(tmp_path)
    fake.serve({"vms": chain[0].parent})
    fake.uninstall_smbstatus()
    r = run_cli("merge", chain[-1], "--json")
    assert r.code == 0, r.err
    assert r.json()["result"]["in_use_check"].endswith("samba: smbstatus not installed")
    assert "samba" not in r.err.lower()
