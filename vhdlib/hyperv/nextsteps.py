"""After a remediation: the exact PowerShell to run on the Hyper-V host.

An offline merge leaves the VM's configuration naming the newest ``.avhd(x)`` and its
checkpoints naming layers that are now in the archive. What the host must do: keep the VM
off, point its drive at the result (``Set-VMHardDiskDrive``, filled from the VM's
configuration where vhdmend found it), grant the VM's account access again only if the file's
attributes (its Windows ACL) could not be carried over, and leave Hyper-V's checkpoint tools
away from checkpoints whose files were merged by hand: ``Remove-VMSnapshot`` ("Delete
Checkpoint"), ``Restore-VMSnapshot`` and ``Remove-VM`` all merge or revert those files, and
"if you [merge the AVHDX files by hand], you cannot use any of Hyper-V's tools to clean up"
(Altaro, "How to Clean Up After a Failed Hyper-V Checkpoint"); ``Remove-VM`` "deletes the
virtual machine's configuration file, but does not delete any virtual hard drives. If the
virtual machine has any snapshots, these are deleted and merged into the virtual hard disk
files" (Microsoft, Remove-VM). The clean way out is re-creating the VM around the result.

Anything vhdmend does not know is a placeholder in angle brackets (``<VM-NAME>``): unquoted,
PowerShell refuses the line (``<`` is reserved); inside a quoted path the command fails on a
path that does not exist. Either way a forgotten placeholder does nothing.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vhdlib.errors import VhdlibError
from vhdlib.hyperv import owners
from vhdlib.hyperv.owners import Lookup, VmAttachment
from vhdlib.hyperv.paths import PathMapper, Runner, join_windows, samba_shares

log = logging.getLogger(__name__)

#: PowerShell treats these as single quotes too (about_Quoting_Rules): each is doubled.
_SINGLE_QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")


def ps_quote(text: str) -> str:
    """``text`` as a PowerShell single-quoted (verbatim) string."""
    for q in _SINGLE_QUOTES:
        text = text.replace(q, q + q)
    return f"'{text}'"


def _plain(text: str) -> str:
    """``text`` safe inside a ``#`` comment line (no line breaks)."""
    return " ".join(str(text).split())


def result_windows_path(result: str, attachment: VmAttachment | None,
                        shares: Mapping[str, str]) -> tuple[str, str]:
    """(how the host names ``result``, how that was found: "vm", "share", "unknown")."""
    if attachment is not None:
        win = attachment.windows_path_of(result)
        if win is not None:
            return win, "guess" if attachment.mapping.guess else "vm"
    found = PathMapper([], shares).share_for(result)
    if found is not None:
        name, base = found
        rel = os.path.relpath(os.path.realpath(result), base)
        parts = [] if rel == os.curdir else rel.split(os.sep)
        return join_windows(f"\\\\<FILE-SERVER>\\{name}", parts), "share"
    return "<UNC-PATH-OF-RESULT>", "unknown"


def remediation_steps(found: Lookup | None, *, result: str, chain: Sequence[str],
                      archive: str | None = None, deleted: bool = False,
                      in_place: bool = True, dropped_attributes: Sequence[str] = (),
                      shares: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The next steps after remediating ``chain`` into ``result`` (a JSON-ready dict).

    ``found`` is the chain's :func:`owners.lookup` (``None``: not looked up). ``archive`` is
    where the old layers went (``deleted``: removed after archiving); ``in_place`` False
    for ``--output``, where the chain stays as it was. ``dropped_attributes`` lists the
    attributes that could not be carried over onto the result (then the ``icacls`` line).
    """
    a = found.attachment if found else None
    win_result, how = result_windows_path(result, a, shares or {})
    name = ps_quote(a.vm_name) if a and a.vm_name else "<VM-NAME>"
    notes: list[str] = [*a.notes, *([a.drive.note] if a.drive.note else [])] if a else []
    lines: list[str] = [f"# vhdmend: next steps on the Hyper-V host for {_describe(a)}",
                        "# Fill in every placeholder in angle brackets first (a line with one "
                        "left does nothing)."]
    if how == "guess":
        notes.append("the result's path on the host was derived from a guessed mapping")
    elif how == "share":
        notes.append("the file server's name is not known from a VM configuration: fill in "
                     f"<FILE-SERVER> (the share is Samba's; the file here is {result})")
    elif how == "unknown":
        notes.append("the result's UNC path is not known (no VM configuration, no Samba share "
                     f"holds it): fill in <UNC-PATH-OF-RESULT> (the file here is {result})")
    lines += ["", "# 1. The VM stays off until its drive names the result (no-op if it is off).",
              f"Stop-VM -Name {name}"]
    if a is None:
        lines += ["#    Its drives and their slots:",
                  f"Get-VMHardDiskDrive -VMName {name} | Format-Table ControllerType, "
                  "ControllerNumber, ControllerLocation, Path"]
    lines += ["", "# 2. Point the VM's drive at the result."
              + ("" if in_place else " (With --output the old chain is left as it was.)"),
              _set_drive(name, a, win_result)]
    if dropped_attributes:
        vm_id = a.vm_id if a and a.vm_id else "<VM-ID>"
        lines += ["", "# 3. Attributes that could not be carried over onto the result: "
                  + _plain(", ".join(dropped_attributes)) + ".",
                  "#    The VM's own account needs its access back (else 'access denied'):",
                  f"icacls {ps_quote(win_result)} /grant "
                  f"{ps_quote(f'NT VIRTUAL MACHINE{chr(92)}{vm_id}:(F)')}"]
    checkpoints = found.checkpoints if found else []
    if checkpoints:
        lines += ["", *_checkpoint_lines(name, a, checkpoints, win_result, chain, archive,
                                         deleted, in_place)]
    lines += ["", "# Then start it.", f"Start-VM -Name {name}"]
    if a is None:  # configurations vhdmend could not read may be the owner's
        notes += [f"not read: {u['path']}: {u['reason']}"
                  for u in (found.unreadable if found else [])]
    script = "\n".join(lines) + "\n"
    placeholders = sorted(set(re.findall(r"<[A-Z][A-Z-]+>", script)))
    return {"vm": a.to_dict() if a else None, "result_path_on_host": win_result,
            "result_path_from": how,
            "checkpoints": [c.to_dict() for c in checkpoints],
            "dropped_attributes": list(dropped_attributes), "placeholders": placeholders,
            "powershell": script, "notes": notes}


def _describe(a: VmAttachment | None) -> str:
    if a is None:
        return "the VM using this disk (no configuration naming it was found)"
    return _plain(f"VM {ps_quote(a.vm_name or '?')} (id {a.vm_id or '?'}, "
                  f"configuration {a.config})")


def _set_drive(name: str, a: VmAttachment | None, win_result: str) -> str:
    ctype = a.controller_type if a and a.controller_type else "<CONTROLLER-TYPE>"
    number = a.controller_number if a and a.controller_number is not None \
        else "<CONTROLLER-NUMBER>"
    location = a.controller_location if a else "<CONTROLLER-LOCATION>"
    path = win_result if win_result.startswith("<") and win_result.endswith(">") \
        and "\\" not in win_result else ps_quote(win_result)
    return (f"Set-VMHardDiskDrive -VMName {name} -ControllerType {ctype} "
            f"-ControllerNumber {number} -ControllerLocation {location} -Path {path}")


def _checkpoint_lines(name: str, a: VmAttachment | None, checkpoints: Sequence[Any],
                      win_result: str, chain: Sequence[str], archive: str | None,
                      deleted: bool, in_place: bool) -> list[str]:
    base = os.path.abspath(chain[0]) if chain else ""
    where = "deleted" if deleted else f"moved to {archive}" if archive else "archived"
    out = [f"# 4. Checkpoints: {len(checkpoints)} checkpoint(s) name layers of the old chain:"]
    for c in checkpoints:
        now = "now the result's name (a new disk)" if c.local_path == base else where
        out.append("#      " + _plain(f"{ps_quote(c.name or '?')} ({c.id}): "
                                      f"{os.path.basename(c.local_path)}, {now}"))
    if not in_place:
        return [*out,
                "#    The chain is unchanged, so they still work - but only while the VM "
                "runs on that chain.",
                "#    Once it runs on the new disk, treat them as merged (see vhdmend's "
                "README, 'after the cure')."]
    result_name = win_result.rsplit("\\", 1)[-1]
    keep = f"{result_name}.vhdmend-keep"
    keep_path = win_result[: len(win_result) - len(result_name)] + keep
    gen = a.generation if a and a.generation else "<GENERATION>"
    mem = f"{a.memory_mib}MB" if a and a.memory_mib else "<MEMORY-BYTES>"
    cpus = a.processors if a and a.processors else "<PROCESSOR-COUNT>"
    return [
        *out,
        "#    Their data is in the result. Do NOT run",
        f"#      Get-VMSnapshot -VMName {name} | Remove-VMSnapshot",
        "#    ('Delete Checkpoint'), Restore-VMSnapshot ('Apply') or Remove-VM while the",
        "#    result can be reached: each merges or reverts the checkpoints' recorded files,",
        "#    already merged by hand (Remove-VM merges a VM's checkpoints after deleting it).",
        "#    Never put the archived files back at their old names.",
        "#    Either keep the checkpoints listed and never apply them, or (clean) re-create the",
        "#    VM around the result, the result renamed meanwhile so nothing can merge into it:",
        f"Get-VM -Name {name} | Format-List *",
        f"Get-VMNetworkAdapter -VMName {name} | Format-List *   # note the settings",
        f"Rename-Item -Path {ps_quote(win_result)} -NewName {ps_quote(keep)}",
        f"Remove-VM -Name {name} -Force",
        f"Rename-Item -Path {ps_quote(keep_path)} -NewName {ps_quote(result_name)}",
        f"New-VM -Name {name} -Generation {gen} -MemoryStartupBytes {mem} "
        f"-VHDPath {ps_quote(win_result)}",
        f"Set-VMProcessor -VMName {name} -Count {cpus}",
        "#    then connect its network adapter(s) again (Connect-VMNetworkAdapter) as noted;",
        "#    the new VM has a new id, and Hyper-V grants it access when it attaches the disk."]


def for_remediation(chain: Sequence[str], result: str, *, archive: str | None = None,
                    deleted: bool = False, in_place: bool = True,
                    dropped_attributes: Sequence[str] = (), roots: Iterable[str] | None = None,
                    runner: Runner | None = None) -> dict[str, Any]:
    """:func:`remediation_steps` with the owner looked up on ``roots`` (default: the chain's
    folder and its parents). Never raises for a lookup that fails: the steps then carry
    placeholders and the reason, since the remediation itself has succeeded."""
    try:
        shares = samba_shares(runner)
        found: Lookup | None
        error = None
        try:
            found = owners.lookup(chain, roots, shares=shares)
        except (VhdlibError, OSError) as e:
            found, error = None, f"looking up the VM failed: {e}"
        steps = remediation_steps(found, result=result, chain=chain, archive=archive,
                                  deleted=deleted, in_place=in_place,
                                  dropped_attributes=dropped_attributes, shares=shares)
    except Exception as e:
        # The remediation has succeeded; advice that fails must not make it look failed.
        log.exception("next steps for %s failed", result)
        return {"error": f"{type(e).__name__}: {e}", "powershell": "", "notes": [
            "vhdmend could not work out the next steps; see its log"]}
    if error:
        steps["notes"].append(error)
    if found is not None:
        steps["searched"] = found.roots
    return steps


def format_text(steps: Mapping[str, Any]) -> str:
    """The next steps for people: notes, then the PowerShell."""
    out = ["next steps on the Hyper-V host (PowerShell):"]
    out += [f"  note: {n}" for n in steps.get("notes") or []]
    out += ["", *("    " + line if line else "" for line in
                  str(steps.get("powershell", "")).splitlines())]
    return "\n".join(out) + "\n"
