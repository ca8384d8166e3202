"""The PowerShell printed after a remediation: filled from the VM's configuration, quoted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vhdlib.hyperv.scenario import VM_ID, make_vm_share
from vhdlib.hyperv import nextsteps, owners
from vhdlib.hyperv.nextsteps import ps_quote

QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_unquote(literal: str) -> str:
    """PowerShell's reading of a single-quoted string (about_Quoting_Rules): any of the five
    single-quote characters ends it unless doubled, and then it stands for itself."""
    assert literal[0] in QUOTES and literal[-1] in QUOTES
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch in QUOTES:
            assert i + 1 < len(body) and body[i + 1] == ch, f"string ends early at {i}"
            i += 1
        out.append(ch)
        i += 1
    return "".join(out)


@pytest.mark.parametrize(("text", "quoted"), [
    ("web 01", "'web 01'"),
    ("Bob's", "'Bob''s'"),
    ("Bob\u2019s", "'Bob\u2019\u2019s'"),
    ("$env:TEMP `n \"x\"", "'$env:TEMP `n \"x\"'"),
    ("", "''"),
])
def test_ps_quote(text, quoted):
    assert ps_quote(text) == quoted


@given(st.text(alphabet=st.sampled_from(list(QUOTES) + list("a $`\"\\;|&(){}"))))
def test_ps_quote_round_trips(text):
    assert ps_unquote(ps_quote(text)) == text


def code_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line and not line.startswith("#")]


@pytest.fixture
def vm(tmp_path):
    return make_vm_share(tmp_path)


def steps_for(vm, **kw):
    chain = [str(p) for p in vm.chain.paths]
    archive = str(vm.vm_dir / "Virtual Hard Disks" / "vhdmend-archive-1")
    return nextsteps.for_remediation(chain, str(vm.chain.base), archive=archive,
                                     runner=vm.runner, **kw)


def test_steps_name_the_vm_controller_and_location(vm):
    steps = steps_for(vm)
    code = code_lines(steps["powershell"])
    name = "'Bob''s \"web\" 01'"
    unc = r"'\\FS01\VMs\WEB 01\Virtual Hard Disks\base.vhdx'"
    assert code[0] == f"Stop-VM -Name {name}"
    assert code[1] == (f"Set-VMHardDiskDrive -VMName {name} -ControllerType SCSI "
                       f"-ControllerNumber 0 -ControllerLocation 1 -Path {unc}")
    assert code[-1] == f"Start-VM -Name {name}"
    assert steps["placeholders"] == [] and steps["result_path_from"] == "vm"
    assert steps["vm"]["vm_id"] == VM_ID and len(steps["checkpoints"]) == 3
    # No attributes dropped: no icacls line.
    assert not any(line.startswith("icacls") for line in code)
    # Removing the checkpoints with Hyper-V's tools is only ever named as what not to do, and
    # the re-creation renames the result out of reach before Remove-VM.
    assert not any("Remove-VMSnapshot" in line or "Restore-VMSnapshot" in line
                   for line in code)
    assert "Do NOT run" in steps["powershell"]
    rename = code.index(f"Rename-Item -Path {unc} -NewName 'base.vhdx.vhdmend-keep'")
    assert code[rename + 1] == f"Remove-VM -Name {name} -Force"
    assert f"New-VM -Name {name} -Generation 2 -MemoryStartupBytes 4096MB -VHDPath {unc}" \
        in code
    assert f"Set-VMProcessor -VMName {name} -Count 4" in code


def test_icacls_only_when_attributes_were_dropped(vm):
    steps = steps_for(vm, dropped_attributes=["security.NTACL", "user.DOSATTRIB"])
    (line,) = [x for x in code_lines(steps["powershell"]) if x.startswith("icacls")]
    assert line == (r"icacls '\\FS01\VMs\WEB 01\Virtual Hard Disks\base.vhdx' /grant "
                    rf"'NT VIRTUAL MACHINE\{VM_ID}:(F)'")
    assert "security.NTACL, user.DOSATTRIB" in steps["powershell"]


def test_unknown_vm_gets_marked_placeholders(tmp_path):
    disk = tmp_path / "a" / "disk.vhdx"
    disk.parent.mkdir()
    disk.write_bytes(b"x")
    steps = nextsteps.for_remediation([str(disk)], str(disk), runner=lambda argv: "",
                                      dropped_attributes=["security.NTACL"])
    code = code_lines(steps["powershell"])
    assert code[0] == "Stop-VM -Name <VM-NAME>"
    assert code[1].startswith("Get-VMHardDiskDrive -VMName <VM-NAME>")
    assert code[2] == ("Set-VMHardDiskDrive -VMName <VM-NAME> -ControllerType "
                       "<CONTROLLER-TYPE> -ControllerNumber <CONTROLLER-NUMBER> "
                       "-ControllerLocation <CONTROLLER-LOCATION> -Path <UNC-PATH-OF-RESULT>")
    assert steps["placeholders"] == ["<CONTROLLER-LOCATION>", "<CONTROLLER-NUMBER>",
                                     "<CONTROLLER-TYPE>", "<UNC-PATH-OF-RESULT>", "<VM-ID>",
                                     "<VM-NAME>"]
    assert steps["vm"] is None and any(str(disk) in n for n in steps["notes"])


def test_result_on_a_samba_share_without_a_vm(vm):
    # Only the share is known: the path is the share's, the server a placeholder.
    lonely = vm.share / "Lonely" / "d.vhdx"
    lonely.parent.mkdir()
    lonely.write_bytes(b"x")
    steps = nextsteps.for_remediation([str(lonely)], str(lonely), runner=vm.runner)
    assert steps["result_path_on_host"] == r"\\<FILE-SERVER>\VMs\Lonely\d.vhdx"
    assert "<FILE-SERVER>" in steps["placeholders"]


def test_output_mode_leaves_the_checkpoints_alone(vm):
    out = vm.vm_dir / "Virtual Hard Disks" / "new.vhdx"
    steps = nextsteps.for_remediation([str(p) for p in vm.chain.paths], str(out),
                                      in_place=False, runner=vm.runner)
    code = code_lines(steps["powershell"])
    assert any(line.endswith(r"-Path '\\FS01\VMs\WEB 01\Virtual Hard Disks\new.vhdx'")
               for line in code)
    assert not any(line.startswith(("Remove-VM", "New-VM", "Rename-Item")) for line in code)
    assert "still work" in steps["powershell"]


def test_lookup_failure_still_gives_steps(vm, monkeypatch):
    def broken(*a, **kw):
        raise PermissionError(13, "Permission denied", "/srv")

    monkeypatch.setattr(owners, "lookup", broken)
    steps = steps_for(vm)
    assert steps["vm"] is None and "<VM-NAME>" in steps["placeholders"]
    assert any("looking up the VM failed" in n for n in steps["notes"])


def test_format_text(vm):
    text = nextsteps.format_text(steps_for(vm))
    assert text.startswith("next steps on the Hyper-V host (PowerShell):\n")
    assert "    Set-VMHardDiskDrive -VMName 'Bob''s \"web\" 01' -ControllerType SCSI" in text


def test_deleted_chain_is_said_deleted(vm):
    steps = steps_for(vm, deleted=True)
    listed = [line for line in steps["powershell"].splitlines() if ".avhdx," in line]
    assert len(listed) == 2 and all(line.endswith(", deleted") for line in listed)
