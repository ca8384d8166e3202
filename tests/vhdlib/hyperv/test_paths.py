"""Windows/UNC paths of a configuration -> local files: shares, case, tail guesses."""

from __future__ import annotations

import subprocess

import pytest

from vhdlib.hyperv.paths import PathMapper, WindowsPath, parse_testparm, samba_shares

TESTPARM = """# Global parameters
[global]
\tserver role = standalone server
\tpath = /should/not/count

[homes]
\tbrowseable = No
\tvalid users = %S

[VMs]
\tpath = {root}/srv/vms
\tread only = No

[profiles]
\tpath = /srv/profiles/%U

[printers]
\tpath = /var/tmp
"""


def test_parse_testparm_shares():
    shares = parse_testparm(TESTPARM.format(root="/data"))
    assert shares == {"VMs": "/data/srv/vms", "printers": "/var/tmp"}


def test_samba_shares_runner_and_missing_testparm():
    assert samba_shares(lambda argv: TESTPARM.format(root="")) == {
        "VMs": "/srv/vms", "printers": "/var/tmp"}
    assert argv_seen(TESTPARM) == ["testparm", "-s"]

    def missing(argv):
        raise FileNotFoundError(2, "No such file", argv[0])

    def failing(argv):
        raise subprocess.CalledProcessError(1, argv)

    assert samba_shares(missing) == {} and samba_shares(failing) == {}


def argv_seen(text):
    seen = []
    samba_shares(lambda argv: seen.extend(argv) or text)
    return seen


@pytest.mark.parametrize(("text", "anchor", "comps"), [
    (r"\\FS01\VMs\web\disk.vhdx", r"\\FS01\VMs", ("web", "disk.vhdx")),
    (r"\\?\UNC\fs01\vms\disk.vhdx", r"\\fs01\vms", ("disk.vhdx",)),
    (r"d:\VMs\web\\disk.vhdx", "D:", ("VMs", "web", "disk.vhdx")),
    (r"\\?\C:\a.vhd", "C:", ("a.vhd",)),
    ("C:/VMs/a.vhd", "C:", ("VMs", "a.vhd")),
])
def test_windows_path_parse(text, anchor, comps):
    win = WindowsPath.parse(text)
    assert win is not None and (win.anchor, win.components) == (anchor, comps)


@pytest.mark.parametrize("text", ["relative\\a.vhd", r"\\server\share", "C:", "", "/unix"])
def test_windows_path_rejects(text):
    assert WindowsPath.parse(text) is None


@pytest.fixture
def share(tmp_path):
    disks = tmp_path / "srv" / "vms" / "Web 01" / "Virtual Hard Disks"
    disks.mkdir(parents=True)
    (disks / "Web01.vhdx").write_bytes(b"x")
    return tmp_path


def test_unc_through_share_case_insensitive(share):
    mapper = PathMapper([], parse_testparm(TESTPARM.format(root=share)))
    m = mapper.map(r"\\fs01\vms\WEB 01\virtual hard disks\WEB01.VHDX")
    assert m is not None and m.how == "share" and not m.guess
    assert m.local_path == str(share / "srv/vms/Web 01/Virtual Hard Disks/Web01.vhdx")
    # Another file in the same folder, in the host's spelling of the folders.
    assert m.windows_path_of(str(share / "srv/vms/Web 01/Virtual Hard Disks/new.vhdx")) == \
        r"\\fs01\vms\WEB 01\virtual hard disks\new.vhdx"
    assert m.windows_path_of(str(share / "srv/vms/Web 01/Other/new.vhdx")) == \
        r"\\fs01\vms\WEB 01\Other\new.vhdx"
    assert m.windows_path_of("/elsewhere/x.vhdx") is None


def test_drive_letter_guessed_by_tail(share):
    mapper = PathMapper([str(share / "srv")], {})
    m = mapper.map(r"E:\Hyper-V\VMs\web 01\Virtual Hard Disks\web01.vhdx")
    assert m is not None and m.guess and m.how == "guess"
    assert m.tail == 4  # vms\web 01\Virtual Hard Disks\web01.vhdx under the root "srv"
    assert m.local_path == str(share / "srv/vms/Web 01/Virtual Hard Disks/Web01.vhdx")
    assert m.windows_path_of(str(share / "srv/vms/Web 01/Virtual Hard Disks/b.vhdx")) == \
        r"E:\Hyper-V\VMs\web 01\Virtual Hard Disks\b.vhdx"


def test_unknown_share_falls_back_to_a_guess(share):
    m = PathMapper([str(share / "srv")], {}).map(
        r"\\other\vms\Web 01\Virtual Hard Disks\web01.vhdx")
    # The share's name counts as a folder name: vms\Web 01\... under the root "srv".
    assert m is not None and m.guess and m.tail == 4
    assert m.windows_path_of(str(share / "srv/vms/Web 01/b.vhdx")) == \
        r"\\other\vms\Web 01\b.vhdx"


def test_two_names_differing_only_in_case_match_neither(share):
    folder = share / "srv/vms/Web 01/Virtual Hard Disks"
    (folder / "WEB01.vhdx").write_bytes(b"y")
    mapper = PathMapper([str(share / "srv")], {})
    assert mapper.map(r"D:\vms\Web 01\Virtual Hard Disks\web01.VHDX") is None
    # The exact spelling still resolves (Samba serves the exact name first).
    m = mapper.map(r"D:\vms\Web 01\Virtual Hard Disks\WEB01.vhdx")
    assert m is not None and m.local_path.endswith("WEB01.vhdx")


def test_missing_file_unless_known(share):
    folder = share / "srv/vms/Web 01/Virtual Hard Disks"
    gone = folder / "Web01_1234.avhdx"
    win = r"D:\Web 01\Virtual Hard Disks\web01_1234.avhdx"
    assert PathMapper([str(share / "srv/vms")], {}).map(win) is None
    m = PathMapper([str(share / "srv/vms")], {}, known=[str(gone)]).map(win)
    assert m is not None and m.local_path == str(gone)


def test_same_tail_under_two_roots_is_no_guess(tmp_path):
    for r in ("a", "b"):
        (tmp_path / r / "vm").mkdir(parents=True)
        (tmp_path / r / "vm" / "disk.vhdx").write_bytes(b"x")
    mapper = PathMapper([str(tmp_path / "a"), str(tmp_path / "b")], {})
    assert mapper.map(r"D:\vm\disk.vhdx") is None


def test_share_for(share):
    mapper = PathMapper([], parse_testparm(TESTPARM.format(root=share)))
    assert mapper.share_for(str(share / "srv/vms/Web 01/x.vhdx")) == (
        "VMs", str(share / "srv/vms"))
    assert mapper.share_for("/nowhere/x.vhdx") is None


def test_real_testparm_output_parses():
    # Whatever this machine's Samba defines (or nothing, where testparm is absent): only
    # absolute paths without substitutions come back.
    for name, path in samba_shares().items():
        assert name and path.startswith("/") and "%" not in path
