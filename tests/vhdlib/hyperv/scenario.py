"""A 2012 R2-style VM folder on a Samba share, around a real chain made by vhdlib."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.chains import Chain, build_chain
from tests.vhdlib.hyperv.vmfolder import Disk, config_xml, write_config

MiB = 1 << 20
VM_ID = "6A0C6E2E-0F3C-4C1E-9D4B-1234567890AB"
VM_NAME = "Bob's \"web\" 01"
OTHER_ID = "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0"
CHECKPOINT_IDS = ["C0000000-0000-0000-0000-00000000000" + str(k) for k in range(3)]


@dataclass
class VmShare:
    share: Path  # the share's path
    vm_dir: Path  # <share>/Web 01
    chain: Chain
    testparm: str  # what `testparm -s` prints for this share
    config: Path
    checkpoints: list[Path]

    def runner(self, argv: list[str]) -> str:
        assert argv == ["testparm", "-s"]
        return self.testparm


def unc(path: Path) -> str:
    """The host's UNC name of a file in the VM's disk folder (other case than on disk)."""
    return rf"\\FS01\VMs\WEB 01\Virtual Hard Disks\{path.name.upper()}"


def make_vm_share(root: Path, fmt: str = "vhdx", *, controller: str = "SCSI",
                  number: int = 0, location: int = 1) -> VmShare:
    share = root / "srv" / "vms"
    vm_dir = share / "Web 01"
    disks = vm_dir / "Virtual Hard Disks"
    disks.mkdir(parents=True)
    chain = build_chain(disks, fmt, size=8 * MiB, children=3, writes=6)
    # The VM runs on the newest layer; checkpoint k was taken while layer k was current.
    config = write_config(vm_dir / "Virtual Machines", VM_ID, config_xml(
        VM_NAME, VM_ID, [Disk(controller, number, location, unc(chain.newest)),
                         Disk("IDE", 1, 0, r"D:\iso\setup.iso", type="ISO")],
        generation=2 if controller == "SCSI" else 1, processors=4, memory_mib=4096))
    checkpoints = [write_config(vm_dir / "Snapshots", cid, config_xml(
        f"{VM_NAME} - ({k + 1})", cid, [Disk(controller, number, location,
                                             unc(chain.paths[k]))]))
        for k, cid in enumerate(CHECKPOINT_IDS)]
    # Another VM beside it (a disk of its own), a hostile configuration and a 2016 one.
    other = share / "Other"
    (other / "Virtual Hard Disks").mkdir(parents=True)
    write_config(other / "Virtual Machines", OTHER_ID, config_xml(
        "other", OTHER_ID, [Disk("IDE", 0, 0, r"\\FS01\VMs\Other\Virtual Hard Disks\o.vhdx")]))
    (other / "Snapshots").mkdir()
    (other / "Snapshots" / "EVIL.xml").write_bytes(
        b'<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]><configuration>&x;'
        b"</configuration>")
    newer = share / "New" / "Virtual Machines"
    newer.mkdir(parents=True)
    (newer / "11111111-2222-3333-4444-555555555555.vmcx").write_bytes(b"\x00" * 1024)
    testparm = f"[global]\n\tserver role = standalone server\n\n[VMs]\n\tpath = {share}\n"
    return VmShare(share, vm_dir, chain, testparm, config, checkpoints)
