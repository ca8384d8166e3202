"""A disk that takes an original's place keeps its owner, group, mode, ACL and xattrs
(issue 14 item 1), on tmpfs and on an ext4 loop mount, compared byte for byte."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import fsmounts
from tests.chains import build_chain, read_all
from tests.conftest import require_tool
from tests.vhdmend.helpers import Forked, assert_clean_error, cli_env, file_tree, run_cli

MiB = 1 << 20
UID, GID, MODE = 3000, 3001, 0o640
#: What Samba's vfs_acl_xattr and DOS attributes look like: binary, NULs included.
NTACL = bytes.fromhex("04000400000002000400020001000000") + bytes(range(256)) + b"\0\0"
DOSATTRIB = b"0x20\0" + bytes.fromhex("0400040000001100000020000000") + bytes(8)
TRUSTED = b"vhdmend-test\0\xff"


@pytest.fixture(params=["tmpfs", "ext4"])
def volume(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    with (fsmounts.tmpfs() if request.param == "tmpfs" else fsmounts.ext4(tmp_path)) as d:
        yield d


def dress(path: Path) -> None:
    """The original's identity: a Samba-served VM disk."""
    require_tool("setfacl")
    os.chown(path, UID, GID)
    os.chmod(path, MODE)
    os.setxattr(path, "user.DOSATTRIB", DOSATTRIB)
    os.setxattr(path, "security.NTACL", NTACL)
    os.setxattr(path, "trusted.vhdmend", TRUSTED)
    subprocess.run(["setfacl", "-m", "u:3005:rw,g:3006:r", str(path)], check=True)


def identity(path: Path) -> dict[str, object]:
    """Owner, mode, every xattr by name (bytes), and getfacl's and getfattr's view."""
    st = os.stat(path)
    getfattr = require_tool("getfattr")
    dump = subprocess.run([getfattr, "--absolute-names", "-d", "-m", "-", "-e", "hex",
                           str(path)], capture_output=True, text=True, check=True).stdout
    acl = subprocess.run(["getfacl", "-c", "-n", "--absolute-names", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {"uid": st.st_uid, "gid": st.st_gid, "mode": stat.S_IMODE(st.st_mode),
            "xattrs": {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))},
            "getfattr": dump.partition("\n")[2], "getfacl": acl}


def _chain(folder: Path, fmt: str = "vhd") -> list[Path]:
    return build_chain(folder, fmt, size=8 * MiB, children=2, writes=12).paths


def test_identity_fixture_is_what_it_claims(volume: Path) -> None:
    p = volume / "probe"
    p.write_bytes(b"x")
    dress(p)
    got = identity(p)
    assert got["uid"] == UID and got["gid"] == GID
    assert got["xattrs"]["security.NTACL"] == NTACL  # type: ignore[index]
    assert "user:3005:rw-" in str(got["getfacl"]) and "group:3006:r--" in str(got["getfacl"])
    assert set(got["xattrs"]) == {"security.NTACL", "system.posix_acl_access",  # type: ignore[arg-type]
                                  "trusted.vhdmend", "user.DOSATTRIB"}


@pytest.mark.parametrize("variant", ["remediate", "remediate-vhdx", "remediate-dynamic",
                                     "merge", "compact"])
def test_replacing_output_keeps_the_identity(volume: Path, variant: str) -> None:
    chain = _chain(volume)
    base = chain[0]
    dress(base)
    if variant == "compact":
        dress(chain[-1])
    want = identity(base)
    want_top = identity(chain[-1])
    argv: list[object] = {
        "remediate": ["remediate", chain[-1], "--archive", volume / "archive", "--json"],
        "remediate-vhdx": ["remediate", chain[-1], "--format", "vhdx", "--delete",
                           "--json"],
        "remediate-dynamic": ["remediate", chain[-1], "--type", "dynamic", "--json"],
        "merge": ["merge", chain[-1], "--into", base, "--delete"],
        "compact": ["compact", chain[-1]],
    }[variant]
    r = run_cli(*argv)
    assert r.code == 0, r.err
    result = base.with_suffix(".vhdx") if variant == "remediate-vhdx" else base
    if variant == "compact":
        assert identity(chain[-1]) == want_top
    assert identity(result) == want
    if variant.startswith("remediate"):
        assert r.json()["result"]["attributes"] == {"from": str(base), "dropped": []}


def test_new_path_outputs_get_process_defaults_or_the_base(volume: Path) -> None:
    chain = _chain(volume)
    dress(chain[0])
    want = identity(chain[0])
    r = run_cli("convert", chain[-1], volume / "plain.vhd")
    assert r.code == 0, r.err
    plain = identity(volume / "plain.vhd")
    assert plain["uid"] == os.geteuid() and "security.NTACL" not in plain["xattrs"]  # type: ignore[operator]
    for argv in (["convert", chain[-1], volume / "copy.vhd"],
                 ["remediate", chain[-1], "--output", volume / "out.vhd"]):
        r = run_cli(*argv, "--attributes-from", "base", "--json")
        assert r.code == 0, r.err
        assert r.json()["result"]["attributes"]["dropped"] == []
        assert identity(Path(str(argv[-1]))) == want


def test_attributes_that_cannot_be_set_refuse_unless_dropped(tmp_path: Path) -> None:
    """An NTFS volume (ntfs-3g) keeps no POSIX owner or mode: an output there with
    --attributes-from base cannot carry them."""
    with fsmounts.tmpfs() as src, fsmounts.ntfs3g(tmp_path) as dest:
        chain = _chain(src)
        dress(chain[0])
        out = dest / "out.vhd"
        before = file_tree(src)
        r = run_cli("remediate", chain[-1], "--output", out, "--attributes-from", "base")
        assert_clean_error(r, 5)
        assert "owner" in r.err and "mode" in r.err and "--drop-attributes" in r.err, r.err
        assert not out.exists() and file_tree(src) == before
        # The journal stays (for a resume once the destination is fixed).
        assert os.path.exists(str(out) + ".vhdmend.json")
        for p in dest.glob("out.vhd.vhdmend*"):
            p.unlink()
        r = run_cli("remediate", chain[-1], "--output", out, "--attributes-from", "base",
                    "--drop-attributes", "--json")
        assert r.code == 0, r.err
        dropped = r.json()["result"]["attributes"]["dropped"]
        assert {"owner", "group", "mode"} <= set(dropped)
        assert set(dropped) <= {"owner", "group", "mode", *identity(chain[0])["xattrs"]}  # type: ignore[misc]
        assert read_all(out) == read_all(chain[-1])


def test_in_place_swap_refused_when_an_attribute_cannot_be_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In place (one filesystem) as root every attribute can be set; the refusal path is
    driven by failing one setxattr: nothing swapped, the journal kept, the chain valid."""
    from vhdlib import ops
    from vhdlib.errors import AttributeCarryError
    with fsmounts.tmpfs() as d:
        chain = _chain(d)
        dress(chain[0])
        before = file_tree(d)
        real = os.setxattr

        def setxattr(path: object, name: str, *a: object, **kw: object) -> None:
            if name == "security.NTACL":
                raise OSError(95, "Operation not supported")
            real(path, name, *a, **kw)  # type: ignore[arg-type]
        monkeypatch.setattr(os, "setxattr", setxattr)
        op = ops.prepare("remediate", str(chain[-1]))
        with pytest.raises(AttributeCarryError, match=r"security\.NTACL") as ei:
            op.run()
        assert ei.value.exit_code == 5 and ei.value.attributes == ["security.NTACL"]
        partials = {k for k in file_tree(d) if k.endswith(("-partial", ".json", ".lock"))}
        assert {k: v for k, v in file_tree(d).items() if k not in partials} == before
        assert not any(p.name.startswith("vhdmend-archive") for p in d.iterdir())
        for p in d.glob("*.vhdmend*"):
            p.unlink()
        op = ops.prepare("remediate", str(chain[-1]), drop_attributes=True)
        res = op.run()
        assert res["attributes"]["dropped"] == ["security.NTACL"]
        # The Hyper-V next steps then include the icacls repair for what was dropped.
        assert res["next_steps"]["dropped_attributes"] == ["security.NTACL"]
        assert "icacls" in res["next_steps"]["powershell"]
        monkeypatch.undo()
        got = identity(chain[0])
        assert "security.NTACL" not in got["xattrs"]  # type: ignore[operator]
        assert got["xattrs"]["user.DOSATTRIB"] == DOSATTRIB  # type: ignore[index]


@contextlib.contextmanager
def _crash_at(monkeypatch: pytest.MonkeyPatch, name: str, after: bool) -> Iterator[None]:
    """Die (a BaseException, as kill -9: nothing after runs) at the first ``os.<name>``
    on the partial output (the journal's own renames go through), before or after it."""
    class Crash(BaseException):
        pass
    real = getattr(os, name)

    def crash(*a: object, **kw: object) -> object:
        if not str(a[0]).endswith("-partial"):
            return real(*a, **kw)
        if after:
            real(*a, **kw)
        raise Crash()
    monkeypatch.setattr(os, name, crash)
    with contextlib.suppress(Crash):
        yield
    monkeypatch.undo()


@pytest.mark.parametrize("where", ["setxattr-before", "replace-before", "replace-after"])
def test_crash_between_creating_and_swapping(monkeypatch: pytest.MonkeyPatch,
                                             where: str) -> None:
    """Killed while carrying the attributes, right before the rename that swaps, or right
    after it: whenever the base's name holds the new disk it has the attributes; resume
    finishes with them."""
    from vhdlib import ops
    with fsmounts.tmpfs() as d:
        chain = _chain(d)
        dress(chain[0])
        want = identity(chain[0])
        old_ino = os.stat(chain[0]).st_ino
        op = ops.prepare("remediate", str(chain[-1]), archive=str(d / "archive"))
        name, when = where.split("-")
        with _crash_at(monkeypatch, name, when == "after"):
            op.run()
            pytest.fail("the crash did not happen")
        swapped = os.stat(chain[0]).st_ino != old_ino
        assert swapped == (where == "replace-after")
        assert identity(chain[0]) == want  # old disk or new, the name has its identity
        assert os.path.exists(op.journal_path)
        res = ops.resume(op.journal_path).run()
        assert res["status"] == "done" and os.stat(chain[0]).st_ino != old_ino
        assert identity(chain[0]) == want
        assert read_all(chain[0]) == read_all(d / "archive" / chain[-1].name)


@pytest.mark.slow
def test_kill_9_at_random_instants_keeps_the_identity() -> None:
    """Real SIGKILLs of the CLI (the tests/vhdmend/test_crash.py approach): after every
    kill the base's name has the original identity, whichever disk it names; after
    ``resume`` the result has it."""
    rnd = random.Random(14)
    env = {**cli_env(), "VHDMEND_CHUNK_BYTES": str(256 << 10)}
    with fsmounts.tmpfs() as root:
        def fresh(name: str) -> tuple[list[Path], dict[str, object], int]:
            d = root / name
            d.mkdir()
            chain = _chain(d)
            dress(chain[0])
            return chain, identity(chain[0]), os.stat(chain[0]).st_ino

        chain, want, _ = fresh("reference")
        assert run_cli("remediate", chain[-1]).code == 0
        # The trials' runs are forked from this process (Forked: no interpreter start-up
        # per run); time the kills by a forked run too.
        chain, want, _ = fresh("forked-reference")
        started = time.monotonic()
        proc = Forked(["remediate", chain[-1]], env)
        _, err = proc.communicate(timeout=300)
        duration = time.monotonic() - started
        assert proc.returncode == 0, err.decode()
        assert identity(chain[0]) == want
        swapped_at_kill = 0
        for trial in range(12):
            chain, want, ino = fresh(f"t{trial}")
            proc = Forked(["remediate", chain[-1]], env)
            start = time.monotonic()
            if trial % 2:
                # At the swap: the archive folder appears as the chain is linked into it.
                while proc.poll() is None and not list(chain[0].parent.glob("vhdmend-a*")):
                    time.sleep(0.0005)
                time.sleep(rnd.uniform(0, 0.03))
            else:
                time.sleep(rnd.uniform(0.1, 0.8) * duration - (time.monotonic() - start))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            swapped_at_kill += os.stat(chain[0]).st_ino != ino
            assert identity(chain[0]) == want, trial
            journal = Path(str(chain[0]) + ".vhdmend.json")
            argv = (["resume", journal] if journal.exists() else ["remediate", chain[-1]]
                    if chain[-1].exists() else None)
            if argv is not None:
                proc = Forked(argv, env)
                _, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err.decode()
            assert os.stat(chain[0]).st_ino != ino and identity(chain[0]) == want
        # Kills landed on both sides of the swap (else the test proved half of it).
        assert 0 < swapped_at_kill < 12, swapped_at_kill
