"""A real remediation on a 2012 R2-style VM folder: its next steps name the VM's slot.

Samba's `testparm -s` is replaced by a script of the same name first on PATH, printing the
share that holds the VM folder, so the UNC paths of the configurations map exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import vhdlib
from tests.vhdlib.hyperv.scenario import VM_ID, VmShare, make_vm_share
from tests.vhdmend.helpers import cli_argv, cli_env
from vhdlib import ops

NAME = "'Bob''s \"web\" 01'"
UNC_BASE = r"\\FS01\VMs\WEB 01\Virtual Hard Disks\base.vhdx"


def fake_testparm(folder: Path, vm: VmShare) -> str:
    """A `testparm` printing ``vm``'s share; returns the PATH to use."""
    folder.mkdir()
    (folder / "shares.txt").write_text(vm.testparm)
    script = folder / "testparm"
    script.write_text(f'#!/bin/sh\n[ "$1" = "-s" ] || exit 2\ncat "{folder}/shares.txt"\n')
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def vm(tmp_path, monkeypatch):
    vm = make_vm_share(tmp_path / "root")
    monkeypatch.setenv("PATH", fake_testparm(tmp_path / "bin", vm))
    return vm


def test_remediate_result_carries_next_steps(vm):
    result = ops.prepare("remediate", str(vm.chain.newest), type="dynamic").run()
    with vhdlib.open(str(vm.chain.base)) as disk:
        assert disk.read(0, disk.virtual_size) == vm.chain.ref  # the cure itself happened
    steps = result["next_steps"]
    assert steps["vm"]["vm_id"] == VM_ID
    assert (steps["vm"]["controller_type"], steps["vm"]["controller_number"],
            steps["vm"]["controller_location"]) == ("SCSI", 0, 1)
    assert steps["result_path_on_host"] == UNC_BASE and steps["placeholders"] == []
    assert (f"Set-VMHardDiskDrive -VMName {NAME} -ControllerType SCSI -ControllerNumber 0 "
            f"-ControllerLocation 1 -Path '{UNC_BASE}'") in steps["powershell"].splitlines()
    # The checkpoints name layers now in the archive (the first one the result's name).
    assert len(steps["checkpoints"]) == 3
    assert result["archive"] in steps["powershell"]
    json.dumps(result)  # the job store keeps it as JSON


def test_cli_prints_next_steps_text_and_json(vm, tmp_path):
    env = cli_env()
    argv = cli_argv("remediate", vm.chain.newest, "--output", tmp_path / "out.vhdx", "--json")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(proc.stdout)["result"]["next_steps"]
    assert steps["vm"]["controller_location"] == 1
    # With --output the result is a new file beside nothing: its path is outside the VM's
    # folder, so the host's path of it is a placeholder, and the checkpoints are untouched.
    assert "still work" in steps["powershell"]
    assert steps["result_path_on_host"] == "<UNC-PATH-OF-RESULT>"
    assert "<UNC-PATH-OF-RESULT>" in steps["placeholders"]

    proc = subprocess.run(cli_argv("remediate", vm.chain.newest), capture_output=True,
                          text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "next steps on the Hyper-V host (PowerShell):" in proc.stdout
    assert (f"    Set-VMHardDiskDrive -VMName {NAME} -ControllerType SCSI -ControllerNumber 0 "
            f"-ControllerLocation 1 -Path '{UNC_BASE}'") in proc.stdout.splitlines()
    assert "Traceback" not in proc.stderr
