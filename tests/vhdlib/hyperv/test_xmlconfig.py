"""Reading 2008-2012 R2 configuration XMLs; hostile XML refused with a typed error."""

from __future__ import annotations

import time

import pytest

from tests.vhdlib.hyperv.vmfolder import Disk, config_xml, write_config
from vhdlib.hyperv import xmlconfig
from vhdlib.hyperv.errors import ConfigError, UnsafeConfigError

VM_ID = "6A0C6E2E-0F3C-4C1E-9D4B-1234567890AB"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<configuration><properties><name type="string">&lol9;</name></properties></configuration>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE configuration [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<configuration><properties><name type="string">&secret;</name></properties></configuration>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE configuration SYSTEM "http://127.0.0.1:9/evil.dtd">
<configuration><properties><name type="string">x</name></properties></configuration>
"""


def test_drives_name_and_ids(tmp_path):
    data = config_xml("Bob's web 01", VM_ID, [
        Disk("IDE", 0, 0, r"D:\VMs\web\boot.vhdx"),
        Disk("IDE", 1, 0, r"D:\iso\setup.iso", type="ISO"),
        Disk("SCSI", 0, 3, r"\\fs01\vms\web\data.avhdx"),
        Disk("SCSI", 1, 0, r"\\fs01\vms\web\logs.vhdx")], generation=1, memory_mib=4096)
    cfg = xmlconfig.read(str(write_config(tmp_path / "Virtual Machines", VM_ID, data)))
    assert cfg.name == "Bob's web 01" and cfg.id == VM_ID and cfg.global_id == VM_ID
    assert (cfg.generation, cfg.processors, cfg.memory_mib) == (1, 2, 4096)
    slots = {(d.controller_type, d.controller_number, d.controller_location): d.pathname
             for d in cfg.drives}
    # The ISO is a DVD, not a hard disk; empty drives (type NONE) are skipped.
    assert slots == {("IDE", 0, 0): r"D:\VMs\web\boot.vhdx",
                     ("SCSI", 0, 3): r"\\fs01\vms\web\data.avhdx",
                     ("SCSI", 1, 0): r"\\fs01\vms\web\logs.vhdx"}
    # Two SCSI controllers: numbers come from the manifest's order, flagged as inferred.
    assert all("manifest" in d.note for d in cfg.drives if d.controller_type == "SCSI")


def test_scsi_number_follows_manifest_order_not_element_order(tmp_path):
    first, second = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    data = config_xml("vm", VM_ID, [Disk("SCSI", 0, 0, r"D:\a.vhdx"),
                                    Disk("SCSI", 1, 0, r"D:\b.vhdx")],
                      scsi_instances=[first, second])
    cfg = xmlconfig.parse(data, path=f"/x/{VM_ID}.xml")
    assert {d.pathname: d.controller_number for d in cfg.drives} == {
        r"D:\a.vhdx": 0, r"D:\b.vhdx": 1}
    # Swap the two entries in the manifest only: the first element's device is now SCSI 1.
    text = data.decode("utf-16")
    head, sep, manifest = text.partition("<manifest")
    manifest = manifest.replace(first, "X").replace(second, first).replace("X", second)
    cfg = xmlconfig.parse((head + sep + manifest).encode("utf-16"), path=f"/x/{VM_ID}.xml")
    assert {d.pathname: d.controller_number for d in cfg.drives} == {
        r"D:\a.vhdx": 1, r"D:\b.vhdx": 0}


def test_one_scsi_controller_without_manifest_is_number_0(tmp_path):
    data = config_xml("vm", VM_ID, [Disk("SCSI", 0, 5, r"D:\a.vhdx")], manifest=False)
    (drive,) = xmlconfig.parse(data, path=f"/x/{VM_ID}.xml").drives
    assert (drive.controller_type, drive.controller_number, drive.controller_location,
            drive.note) == ("SCSI", 0, 5, "")


def test_two_scsi_controllers_without_manifest_number_unknown():
    data = config_xml("vm", VM_ID, [Disk("SCSI", 0, 0, r"D:\a.vhdx"),
                                    Disk("SCSI", 1, 0, r"D:\b.vhdx")], manifest=False)
    cfg = xmlconfig.parse(data, path=f"/x/{VM_ID}.xml")
    assert [d.controller_number for d in cfg.drives] == [None, None]
    assert all("unknown" in d.note for d in cfg.drives)


def test_id_from_global_id_when_the_file_name_is_not_a_guid():
    data = config_xml("vm", VM_ID, [])
    cfg = xmlconfig.parse(data, path="/x/vm.xml")
    assert cfg.id == VM_ID and cfg.drives == ()


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD],
                         ids=["billion-laughs", "external-entity", "external-dtd"])
def test_hostile_xml_refused_quickly(tmp_path, payload):
    path = tmp_path / f"{VM_ID}.xml"
    path.write_bytes(payload)
    started = time.monotonic()
    with pytest.raises(UnsafeConfigError) as info:
        xmlconfig.read(str(path))
    assert time.monotonic() - started < 2
    assert info.value.code == "unsafe_vm_config" and info.value.path == str(path)
    assert "passwd" not in str(info.value) and "root:" not in str(info.value)


@pytest.mark.parametrize(("data", "words"), [
    (b"<configuration><properties>", "well-formed"),
    (b"<vm/>", "<vm>"),
    (b"<configuration><properties><subtype type='integer'>x</subtype></properties>"
     b"</configuration>", "integer"),
])
def test_malformed_config_typed(data, words):
    with pytest.raises(ConfigError) as info:
        xmlconfig.parse(data, path="/x/a.xml")
    assert not isinstance(info.value, UnsafeConfigError)
    assert words in str(info.value)


def test_oversized_file_refused_without_parsing(tmp_path):
    path = tmp_path / "big.xml"
    with open(path, "wb") as f:
        f.truncate(xmlconfig.MAX_BYTES + 1)
    with pytest.raises(ConfigError, match="larger than"):
        xmlconfig.read(str(path))
