"""Which VM owns a chain, on a 2012 R2-style VM folder around a real vhdlib chain."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.vhdlib.hyperv.scenario import CHECKPOINT_IDS, VM_ID, VM_NAME, make_vm_share
from vhdlib.hyperv import owners


@pytest.fixture
def vm(tmp_path):
    return make_vm_share(tmp_path)


def test_owner_of_chain_through_share(vm):
    found = owners.lookup([str(p) for p in vm.chain.paths], runner=vm.runner)
    a = found.attachment
    assert a is not None
    assert (a.vm_name, a.vm_id, a.config) == (VM_NAME, VM_ID, str(vm.config))
    assert (a.controller_type, a.controller_number, a.controller_location) == ("SCSI", 0, 1)
    assert a.local_path == str(vm.chain.newest) and a.mapping.how == "share"
    assert (a.generation, a.processors, a.memory_mib) == (2, 4, 4096)
    assert a.notes == ()
    # Every checkpoint names one layer of the chain.
    refs = {c.id: (c.name, c.local_path) for c in a.checkpoints}
    assert refs == {cid: (f"{VM_NAME} - ({k + 1})", str(vm.chain.paths[k]))
                    for k, cid in enumerate(CHECKPOINT_IDS)}
    # The hostile XML and the .vmcx are reported, not fatal, and not read.
    codes = {os.path.basename(u["path"]): u["code"] for u in found.unreadable}
    assert codes == {"EVIL.xml": "unsafe_vm_config",
                     "11111111-2222-3333-4444-555555555555.vmcx": "unsupported_vm_config"}
    # The result's name on the host, from the VM's own UNC path.
    assert a.windows_path_of(str(vm.chain.base)) == \
        r"\\FS01\VMs\WEB 01\Virtual Hard Disks\base.vhdx"
    assert owners.owner_of([str(p) for p in vm.chain.paths], runner=vm.runner) == a


def test_without_samba_the_path_is_a_marked_guess(vm):
    a = owners.owner_of([str(p) for p in vm.chain.paths], runner=lambda argv: "")
    assert a is not None and a.mapping.guess and a.vm_id == VM_ID
    assert any("a guess" in n for n in a.notes)


def test_owner_after_the_chain_was_archived(vm):
    # After remediate's swap the layers are gone from their names; the configs still name
    # them. Only the base's name is back (the result).
    archive = vm.vm_dir / "Virtual Hard Disks" / "vhdmend-archive-1"
    archive.mkdir()
    for p in vm.chain.paths:
        shutil.move(str(p), archive / p.name)
    vm.chain.base.write_bytes(b"result")
    chain = [str(p) for p in vm.chain.paths]
    assert owners.owner_of(chain, runner=lambda argv: "") is not None  # via known files
    a = owners.owner_of(chain, runner=vm.runner)
    assert a is not None and a.local_path == str(vm.chain.newest)
    assert len(a.checkpoints) == 3


def test_config_naming_an_older_layer_is_noted(vm):
    found = owners.lookup([str(p) for p in vm.chain.paths[:-1]], runner=vm.runner)
    # The VM names the newest layer, which is not in this (shorter) chain: no owner, but the
    # checkpoints naming its layers are still listed.
    assert found.attachment is None and len(found.checkpoints) == 3


def test_no_config_anywhere(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    disk = tmp_path / "a" / "b" / "x.vhdx"
    disk.write_bytes(b"x")
    found = owners.lookup([str(disk)], runner=lambda argv: "")
    assert found.attachment is None and found.checkpoints == [] and found.unreadable == []


def test_inventory_disks_per_file(vm):
    inv = owners.inventory([str(vm.share)], runner=vm.runner)
    disks = inv.disks()
    newest = [a for a in disks[str(vm.chain.newest)]]
    assert [(a.vm_name, a.controller_location) for a in newest] == [(VM_NAME, 1)]
    assert [c.id for c in newest[0].checkpoints] == []  # no checkpoint names the newest
    # The base is named by the first checkpoint only, not by a VM's current configuration.
    assert disks[str(vm.chain.base)] == []
    assert [c.id for c in inv.checkpoints([str(vm.chain.base)])] == [CHECKPOINT_IDS[0]]


def test_default_roots_stop_before_the_filesystem_root():
    assert owners.default_roots(["/a/b/c/d.vhdx"]) == ["/a/b/c", "/a/b", "/a"]
    assert owners.default_roots(["/d.vhdx"]) == []


def test_generation_1_vm_on_ide_with_a_vhd_chain(tmp_path):
    vm = make_vm_share(tmp_path, "vhd", controller="IDE", number=1, location=0)
    a = owners.owner_of([str(p) for p in vm.chain.paths], runner=vm.runner)
    assert a is not None and a.local_path == str(vm.chain.newest)
    assert (a.controller_type, a.controller_number, a.controller_location, a.generation) == \
        ("IDE", 1, 0, 1)
    assert len(a.checkpoints) == 3
