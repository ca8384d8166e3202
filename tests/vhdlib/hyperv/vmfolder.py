"""Write 2012 R2-style Hyper-V VM folders: configuration XMLs from the documented element names.

The shape follows vhdlib/hyperv/xmlconfig.py's sources (Vagrant's import_vm_xml.ps1, Red Hat
imagefactory's Hyper-V descriptor): ``type`` attributes on every leaf, UTF-16 with a BOM, the
IDE device ``_83f8638b-..._``, a synthetic SCSI controller as its own device with a
``ChannelInstanceGuid`` and a manifest entry, ``properties/name`` and ``global_id``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

IDE = "83f8638b-8dca-4152-9eda-2ca8b33039b4"
SCSI_CLASS = "d422512d-2bf2-4752-809d-7b82b5fcb1b4"


@dataclass
class Disk:
    controller_type: str  # "IDE" or "SCSI"
    number: int
    location: int
    pathname: str
    type: str = "VHD"


def _leaf(parent: ET.Element, tag: str, text: str | None, kind: str = "string") -> None:
    el = ET.SubElement(parent, tag, {"type": kind})
    el.text = text


def config_xml(name: str, global_id: str, disks: list[Disk], *, generation: int = 2,
               scsi_instances: list[str] | None = None, processors: int = 2,
               memory_mib: int = 2048, manifest: bool = True) -> bytes:
    """A configuration naming ``disks``; SCSI controller N is ``scsi_instances[N]``."""
    root = ET.Element("configuration")
    ide = ET.SubElement(root, f"_{IDE}_")
    _leaf(ide, "VDEVVersion", "1280", "integer")
    scsi_count = max([d.number + 1 for d in disks if d.controller_type == "SCSI"], default=0)
    scsi_instances = scsi_instances or [str(uuid.uuid4()).upper() for _ in range(scsi_count)]
    for n in range(2):
        ctl = ET.SubElement(ide, f"controller{n}")
        for loc in range(2):
            drive = ET.SubElement(ctl, f"drive{loc}")
            hit = [d for d in disks if d.controller_type == "IDE" and (d.number, d.location)
                   == (n, loc)]
            _leaf(drive, "pathname", hit[0].pathname if hit else None)
            _leaf(drive, "type", hit[0].type if hit else ("ISO" if n == 1 else "NONE"))
    for n, instance in enumerate(scsi_instances):
        dev = ET.SubElement(root, f"_{instance.lower()}_")
        _leaf(dev, "ChannelInstanceGuid", "{" + str(uuid.uuid4()) + "}")
        ctl = ET.SubElement(dev, "controller0")
        for d in disks:
            if d.controller_type == "SCSI" and d.number == n:
                drive = ET.SubElement(ctl, f"drive{d.location}")
                _leaf(drive, "pathname", d.pathname)
                _leaf(drive, "type", d.type)
                _leaf(drive, "weight", "100", "integer")
    # A network adapter also has a ChannelInstanceGuid, but no controllers.
    nic = ET.SubElement(root, f"_{str(uuid.uuid4()).lower()}_")
    _leaf(nic, "ChannelInstanceGuid", "{" + str(uuid.uuid4()) + "}")
    _leaf(nic, "FriendlyName", "Network Adapter")
    if manifest:
        man = ET.SubElement(root, "manifest")
        _leaf(man, "size", str(len(scsi_instances)), "integer")
        for i, instance in enumerate(scsi_instances):
            vdev = ET.SubElement(man, f"vdev{i + 1:03d}")
            _leaf(vdev, "device", SCSI_CLASS)
            _leaf(vdev, "flags", "1", "integer")
            _leaf(vdev, "instance", instance)
            _leaf(vdev, "name", "Synthetic SCSI Controller")
    props = ET.SubElement(root, "properties")
    _leaf(props, "creation_time", "AAAAAAAAAAA=", "bytes")
    _leaf(props, "global_id", global_id)
    _leaf(props, "name", name)
    _leaf(props, "subtype", str(generation - 1), "integer")
    _leaf(props, "type_id", "Virtual Machines")
    _leaf(props, "version", "1280", "integer")
    settings = ET.SubElement(root, "settings")
    _leaf(ET.SubElement(settings, "processors"), "count", str(processors), "integer")
    bank = ET.SubElement(ET.SubElement(settings, "memory"), "bank")
    _leaf(bank, "size", str(memory_mib), "integer")
    return ET.tostring(root, encoding="utf-16", xml_declaration=True)


def write_config(folder: Path, config_id: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config_id}.xml"
    path.write_bytes(data)
    return path
