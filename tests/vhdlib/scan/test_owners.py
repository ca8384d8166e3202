"""The scan names the Hyper-V VM of each chain, from the 2012 R2-style configurations on
its roots (issue 14, "which VM owns a chain"), through the library and the CLI."""

from __future__ import annotations

import json
import subprocess

from tests.vhdlib.hyperv.scenario import CHECKPOINT_IDS, VM_ID, VM_NAME, make_vm_share
from tests.vhdlib.hyperv.test_remediate_next_steps import fake_testparm
from tests.vhdmend.helpers import cli_argv, cli_env
from vhdlib import scan


def test_scan_names_the_vm_its_slot_and_checkpoints(tmp_path, monkeypatch):
    vm = make_vm_share(tmp_path / "root", controller="SCSI", number=0, location=1)
    monkeypatch.setenv("PATH", fake_testparm(tmp_path / "bin", vm))
    result = scan.scan([str(vm.share)], reserve=0)
    chain = next(c for c in result.chains if c.leaf == str(vm.chain.newest))
    assert chain.vm is not None
    assert (chain.vm["vm_name"], chain.vm["vm_id"]) == (VM_NAME, VM_ID)
    assert (chain.vm["controller_type"], chain.vm["controller_number"],
            chain.vm["controller_location"]) == ("SCSI", 0, 1)
    assert chain.vm["local_path"] == str(vm.chain.newest)
    assert sorted(c["id"] for c in chain.checkpoints) == sorted(CHECKPOINT_IDS)
    # The hostile XML and the 2016 configuration beside it are reported, not fatal.
    codes = {c["code"] for c in result.unreadable_configs}
    assert "unsafe_vm_config" in codes and "unsupported_vm_config" in codes


def test_without_the_share_map_the_match_is_marked_a_guess(tmp_path):
    vm = make_vm_share(tmp_path / "root")
    result = scan.scan([str(vm.share)], reserve=0)  # real testparm: no such share here
    # Without the share map the UNC path is matched by its tail: still this VM, marked.
    chain = next(c for c in result.chains if c.leaf == str(vm.chain.newest))
    assert chain.vm is not None and chain.vm["vm_id"] == VM_ID
    assert any("a guess" in n for n in chain.vm["notes"])
    other = [c for c in result.chains if c.leaf != str(vm.chain.newest)]
    assert all(c.vm is None for c in other)


def test_cli_json_and_text_name_the_vm(tmp_path):
    vm = make_vm_share(tmp_path / "root", controller="IDE", number=1, location=0)
    env = cli_env()
    env["PATH"] = fake_testparm(tmp_path / "bin", vm)
    out = subprocess.run(cli_argv("scan", vm.share, "--json", "--reserve", "0"), env=env,
                         capture_output=True, text=True, timeout=120)
    data = json.loads(out.stdout)
    chain = next(c for c in data["chains"] if c["leaf"] == str(vm.chain.newest))
    assert chain["vm"]["vm_id"] == VM_ID and chain["vm"]["controller_type"] == "IDE"
    assert len(chain["checkpoints"]) == len(CHECKPOINT_IDS)
    text = subprocess.run(cli_argv("scan", vm.share, "--reserve", "0"), env=env,
                          capture_output=True, text=True, timeout=120).stdout
    assert f"VM {VM_NAME} ({VM_ID}), IDE 1:0, 3 checkpoint(s)" in text
