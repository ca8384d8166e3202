"""VM and checkpoint configurations of Hyper-V on Windows Server 2008 to 2012 R2 (XML).

Layout on a VM's data root (Ben Armstrong, "Understanding where your virtual machine files
are", Virtual PC Guy's blog, and "Where are my snapshot files? [Hyper-V]"):
``<root>\\Virtual Machines\\<VM GUID>.xml`` and one ``<root>\\Snapshots\\<checkpoint GUID>.xml``
per checkpoint, a copy of the VM's configuration as it was then.

Element names, as Hyper-V writes them (every leaf carries a ``type`` attribute such as
``type="string"``; the file is UTF-16 with a byte-order mark), taken from two public readers and
writers of these files: Vagrant's ``plugins/providers/hyperv/scripts/import_vm_xml.ps1``
(hashicorp/vagrant) and Red Hat imagefactory's Hyper-V OVF descriptor (Apache-2.0, derived
from Matt Wrock's packer-templates ``vm.xml``):

* ``configuration/properties/name`` - the VM's (or checkpoint's) name;
  ``properties/global_id``; ``properties/subtype`` - 0 generation 1, 1 generation 2.
* ``configuration/_<device GUID>_/controller<N>/drive<M>/pathname`` and ``.../type``
  (``VHD`` a hard disk, ``ISO`` a DVD image, ``NONE`` empty). The emulated IDE controller
  device is ``_83f8638b-8dca-4152-9eda-2ca8b33039b4_`` (controller<N> = IDE N, drive<M> =
  location M). A synthetic SCSI controller is a device element holding a
  ``ChannelInstanceGuid`` (the test Vagrant uses); ``configuration/manifest/vdev<NNN>``
  lists devices in order, SCSI ones with ``device`` = ``d422512d-2bf2-4752-809d-7b82b5fcb1b4``
  and ``instance`` = the element's GUID.
* ``settings/processors/count``; ``settings/memory/bank/size`` (MiB).

The files are untrusted (anyone with write access to the share can plant one): parsed with
``defusedxml``, DTDs refused (Hyper-V writes none), size bounded.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from vhdlib.hyperv.errors import ConfigError, UnsafeConfigError

#: The emulated IDE controller device (both IDE controllers live under it).
IDE_DEVICE = "83f8638b-8dca-4152-9eda-2ca8b33039b4"
#: The manifest's device class of a synthetic SCSI controller.
SCSI_DEVICE = "d422512d-2bf2-4752-809d-7b82b5fcb1b4"
#: Real configurations are tens of KiB; anything far larger is not one.
MAX_BYTES = 8 << 20

_DEVICE_TAG = re.compile(r"^_([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                         r"[0-9A-Fa-f]{12})_$")


@dataclass(frozen=True)
class Drive:
    """One hard-disk drive of a configuration: its controller slot and the path it names."""

    controller_type: str | None  # "IDE" or "SCSI"; None: a device vhdlib does not know
    controller_number: int | None  # None: not determinable from the file
    controller_location: int
    pathname: str
    #: Why a value is uncertain (empty when everything came straight from the file).
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"controller_type": self.controller_type,
                "controller_number": self.controller_number,
                "controller_location": self.controller_location,
                "pathname": self.pathname, "note": self.note or None}


@dataclass(frozen=True)
class VmConfig:
    """A parsed configuration: a VM's (``kind`` "vm") or a checkpoint's ("checkpoint")."""

    path: str
    kind: str
    #: The GUID naming the file (the VM id, or the checkpoint id); else ``global_id``.
    id: str | None
    name: str | None
    global_id: str | None
    generation: int | None
    processors: int | None
    memory_mib: int | None
    drives: tuple[Drive, ...] = field(default=())


def read(path: str, *, kind: str = "vm") -> VmConfig:
    """Read and parse the configuration XML at ``path`` (at most :data:`MAX_BYTES`)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path=path) from e
    if len(data) > MAX_BYTES:
        raise ConfigError(f"larger than {MAX_BYTES} bytes: not a VM configuration", path=path)
    return parse(data, path=path, kind=kind)


def parse(data: bytes, *, path: str, kind: str = "vm") -> VmConfig:
    """Parse configuration bytes; hostile XML raises :class:`UnsafeConfigError`."""
    try:
        root = SafeElementTree.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                          forbid_external=True)
    except DefusedXmlException as e:
        raise UnsafeConfigError(
            f"refused ({type(e).__name__}): the file declares a DTD or entities, which a "
            "hostile file uses to expand into gigabytes or to read other files; Hyper-V "
            "writes neither", path=path) from e
    except (ParseError, ValueError) as e:
        raise ConfigError(f"not well-formed XML: {e}", path=path) from e
    if root.tag != "configuration":
        raise ConfigError(f"root element is <{root.tag}>, not <configuration>", path=path)
    props = root.find("properties")
    global_id = _text(props, "global_id")
    subtype = _int(props, "subtype", path)
    stem = os.path.splitext(os.path.basename(path))[0]
    return VmConfig(
        path=path, kind=kind, id=_guid(stem) or global_id, name=_text(props, "name"),
        global_id=global_id, generation=None if subtype is None else subtype + 1,
        processors=_int(root.find("settings/processors"), "count", path),
        memory_mib=_int(root.find("settings/memory/bank"), "size", path),
        drives=tuple(_drives(root, path)))


def _drives(root: Element, path: str) -> list[Drive]:
    manifest_scsi = _manifest_scsi(root)
    devices = []
    for dev in root:
        m = _DEVICE_TAG.match(dev.tag)
        controllers = [(n, c) for c in dev if (n := _numbered(c.tag, "controller")) is not None]
        if m and controllers:
            devices.append((m.group(1).lower(), dev, controllers))
    scsi_like = [g for g, dev, _ in devices
                 if g in manifest_scsi or dev.find("ChannelInstanceGuid") is not None]
    out: list[Drive] = []
    for guid, _dev, controllers in devices:
        for n, ctl in controllers:
            for drive in ctl:
                location = _numbered(drive.tag, "drive")
                pathname = _text(drive, "pathname")
                if location is None or not pathname:
                    continue
                if (_text(drive, "type") or "").upper() != "VHD":
                    continue  # ISO, VFD (floppy), NONE: not a hard disk
                ctype, number, note = _slot(guid, n, scsi_like, manifest_scsi)
                out.append(Drive(ctype, number, location, pathname, note))
    return out


def _slot(guid: str, n: int, scsi_like: list[str],
          manifest_scsi: list[str]) -> tuple[str | None, int | None, str]:
    """Controller type and number of drive under device ``guid``, controller<n>."""
    if guid == IDE_DEVICE:
        return "IDE", n, ""
    if guid not in scsi_like:
        return None, None, f"device _{guid}_ is neither the IDE nor a SCSI controller"
    if guid in manifest_scsi:
        # Each synthetic SCSI controller is its own device (always controller0 inside); its
        # number is its rank among SCSI devices in the manifest, inferred when there are two+.
        rank = manifest_scsi.index(guid)
        note = "" if len(manifest_scsi) == 1 else (
            "SCSI controller number inferred from the device manifest's order; check with "
            "Get-VMHardDiskDrive")
        return "SCSI", rank, note
    if len(scsi_like) == 1:
        return "SCSI", 0, ""
    return "SCSI", None, "several SCSI controllers and no manifest: number unknown"


def _manifest_scsi(root: Element) -> list[str]:
    """Instance GUIDs (lower case) of the SCSI controllers, in manifest (vdev) order."""
    manifest = root.find("manifest")
    if manifest is None:
        return []
    entries = []
    for vdev in manifest:
        m = re.fullmatch(r"vdev(\d{1,4})", vdev.tag)
        if m and (_text(vdev, "device") or "").lower() == SCSI_DEVICE:
            instance = (_text(vdev, "instance") or "").strip("{}").lower()
            if instance:
                entries.append((int(m.group(1)), instance))
    return [instance for _n, instance in sorted(entries)]


def _numbered(tag: str, prefix: str) -> int | None:
    m = re.fullmatch(prefix + r"(\d{1,3})", tag)
    return int(m.group(1)) if m else None


def _text(parent: Element | None, name: str) -> str | None:
    if parent is None:
        return None
    el = parent.find(name)
    if el is None or el.text is None:
        return None
    return el.text.strip() or None


def _int(parent: Element | None, name: str, path: str) -> int | None:
    text = _text(parent, name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as e:
        raise ConfigError(f"<{name}> is {text!r}, not an integer", path=path) from e


def _guid(text: str) -> str | None:
    try:
        uuid.UUID(text)
    except ValueError:
        return None
    return text
