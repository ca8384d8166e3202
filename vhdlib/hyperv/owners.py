"""Which VM owns a disk: configurations found on roots, mapped to the files they name.

``inventory(roots)`` finds the configurations (``Virtual Machines/*.xml``: VMs,
``Snapshots/*.xml``: checkpoints; ``.vmcx`` files are listed as unreadable with their
reason) and maps every hard-disk drive to a local file. ``lookup(chain)`` and
``owner_of(chain)`` answer for one chain: the VM whose configuration names one of its layers
(the newest first: that is the file a running VM uses), with its controller slot, and the
checkpoints whose configurations name any layer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from vhdlib.errors import VhdlibError
from vhdlib.hyperv import vmcx, xmlconfig
from vhdlib.hyperv.paths import PathMapper, PathMapping, Runner, samba_shares
from vhdlib.hyperv.xmlconfig import Drive, VmConfig

#: Folder names (any case) holding configurations, and the kind of configuration in each.
CONFIG_FOLDERS = {"virtual machines": "vm", "snapshots": "checkpoint"}
#: How deep below a root configurations are looked for, and how many entries at most.
MAX_DEPTH = 4
MAX_ENTRIES = 50_000
#: Default roots: the chain's folder and this many parents (a VM's folder usually holds
#: ``Virtual Hard Disks``, ``Virtual Machines`` and ``Snapshots`` side by side).
PARENT_LEVELS = 2


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint whose configuration names a disk file."""

    id: str | None
    name: str | None
    config: str
    windows_path: str
    local_path: str

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "config": self.config,
                "windows_path": self.windows_path, "local_path": self.local_path}


@dataclass(frozen=True)
class VmAttachment:
    """A VM's hard-disk drive naming a file: who, which slot, and how the path was mapped."""

    vm_name: str | None
    vm_id: str | None
    config: str
    drive: Drive
    mapping: PathMapping
    generation: int | None = None
    processors: int | None = None
    memory_mib: int | None = None
    checkpoints: tuple[CheckpointRef, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def controller_type(self) -> str | None:
        return self.drive.controller_type

    @property
    def controller_number(self) -> int | None:
        return self.drive.controller_number

    @property
    def controller_location(self) -> int:
        return self.drive.controller_location

    @property
    def local_path(self) -> str:
        return self.mapping.local_path

    def windows_path_of(self, local: str) -> str | None:
        """How the Hyper-V host would name ``local`` (a file beside the mapped one)."""
        return self.mapping.windows_path_of(local)

    def to_dict(self) -> dict[str, object]:
        notes = [*self.notes, *([self.drive.note] if self.drive.note else [])]
        return {"vm_name": self.vm_name, "vm_id": self.vm_id, "config": self.config,
                "controller_type": self.controller_type,
                "controller_number": self.controller_number,
                "controller_location": self.controller_location,
                "windows_path": self.mapping.windows_path, "local_path": self.local_path,
                "mapping": self.mapping.how, "generation": self.generation,
                "checkpoints": [c.to_dict() for c in self.checkpoints], "notes": notes}


@dataclass
class Inventory:
    """Configurations found on roots and, per local file (real path), the drives naming it."""

    roots: list[str]
    configs: list[VmConfig] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    truncated: bool = False
    by_file: dict[str, list[tuple[VmConfig, Drive, PathMapping]]] = field(default_factory=dict)
    #: Real path of each folder asked about (one realpath per folder, not per file: a scan
    #: asks about 10,000 files in 2,000 folders).
    folders: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def key(self, path: str) -> str:
        """What :attr:`by_file` is keyed by: ``path`` with its folder resolved."""
        path = os.path.abspath(path)
        folder, name = os.path.split(path)
        real = self.folders.get(folder)
        if real is None:
            real = self.folders[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    def attachments(self, path: str) -> list[VmAttachment]:
        """Every VM (not checkpoint) drive naming ``path``."""
        return [_attachment(cfg, drive, mapping)
                for cfg, drive, mapping in self.by_file.get(self.key(path), [])
                if cfg.kind == "vm"]

    def checkpoints(self, paths: Iterable[str]) -> list[CheckpointRef]:
        """Checkpoints whose configurations name any of ``paths`` (each listed once)."""
        seen: dict[tuple[str, str], CheckpointRef] = {}
        for path in paths:
            for cfg, _drive, mapping in self.by_file.get(self.key(path), []):
                if cfg.kind == "checkpoint":
                    seen.setdefault((cfg.path, mapping.local_path), CheckpointRef(
                        cfg.id, cfg.name, cfg.path, mapping.windows_path, mapping.local_path))
        return list(seen.values())

    def disks(self) -> dict[str, list[VmAttachment]]:
        """Per disk file: the VM drives naming it (with the checkpoints naming that file)."""
        out: dict[str, list[VmAttachment]] = {}
        for path in self.by_file:
            found = self.attachments(path)
            refs = tuple(self.checkpoints([path]))
            if found or refs:
                out[path] = [_with(a, checkpoints=refs) for a in found]
        return out


@dataclass
class Lookup:
    """The answer for one chain: its owner (or ``None``), checkpoints, what could not be read."""

    attachment: VmAttachment | None
    checkpoints: list[CheckpointRef]
    unreadable: list[dict[str, str]]
    roots: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"vm": self.attachment.to_dict() if self.attachment else None,
                "checkpoints": [c.to_dict() for c in self.checkpoints],
                "unreadable_configs": self.unreadable, "roots": self.roots}


def default_roots(chain_paths: Sequence[str], levels: int = PARENT_LEVELS) -> list[str]:
    """The folders of the chain's files and up to ``levels`` parents (never ``/``)."""
    roots: list[str] = []
    for path in chain_paths:
        folder = os.path.dirname(os.path.abspath(path))
        for _ in range(levels + 1):
            if folder == os.path.dirname(folder):
                break  # the filesystem root: walking it is not "the chain's folder"
            roots.append(folder)
            folder = os.path.dirname(folder)
    return list(dict.fromkeys(roots))


def find_configs(roots: Iterable[str], *, max_depth: int = MAX_DEPTH,
                 max_entries: int = MAX_ENTRIES, folders: dict[str, str] | None = None
                 ) -> tuple[list[tuple[str, str]], bool]:
    """(path, kind) of every configuration file under ``roots``, and whether the walk stopped
    early (``max_entries``). Kinds: "vm", "checkpoint"; a ``.vmcx`` gets "vmcx".
    ``folders`` caches each folder's realpath (shared with :class:`Inventory`)."""
    folders = {} if folders is None else folders
    found: dict[str, str] = {}
    visited: set[str] = set()
    entries = 0
    for root in roots:
        base_depth = root.rstrip(os.sep).count(os.sep)
        for folder, dirs, files in os.walk(root):
            real = folders.get(folder)
            if real is None:
                real = folders[folder] = os.path.realpath(folder)
            if real in visited:
                dirs[:] = []
                continue
            visited.add(real)
            entries += len(dirs) + len(files)
            if entries > max_entries:
                return sorted(found.items()), True
            if folder.rstrip(os.sep).count(os.sep) - base_depth >= max_depth:
                dirs[:] = []
            kind = CONFIG_FOLDERS.get(os.path.basename(folder).casefold())
            if kind is None:
                continue
            for name in files:
                path = os.path.join(folder, name)
                if name.lower().endswith(".xml"):
                    found.setdefault(path, kind)
                elif vmcx.is_vmcx(name):
                    found.setdefault(path, "vmcx")
    return sorted(found.items()), False


def inventory(roots: Iterable[str], *, shares: Mapping[str, str] | None = None,
              known: Iterable[str] = (), runner: Runner | None = None) -> Inventory:
    """Read every configuration under ``roots``; map each drive to a local file.

    ``shares`` (name -> path) default to Samba's, from ``testparm -s``. A configuration that
    cannot be read (malformed, hostile, ``.vmcx``) is listed in ``unreadable`` with its
    typed reason, never fatal: one bad file must not hide the other VMs.
    """
    roots = [os.path.abspath(r) for r in roots]
    inv = Inventory(roots)
    mapper = PathMapper(roots, samba_shares(runner) if shares is None else shares, known,
                        folders=inv.folders)
    files, inv.truncated = find_configs(roots, folders=inv.folders)
    for path, kind in files:
        try:
            if kind == "vmcx":
                vmcx.read(path)
                continue
            cfg = xmlconfig.read(path, kind=kind)
        except VhdlibError as e:
            inv.unreadable.append({"path": path, "code": e.code, "reason": e.message})
            continue
        inv.configs.append(cfg)
        for drive in cfg.drives:
            mapping = mapper.map(drive.pathname)
            if mapping is not None:
                inv.by_file.setdefault(inv.key(mapping.local_path), []).append(
                    (cfg, drive, mapping))
    return inv


def lookup(chain_paths: Sequence[str], roots: Iterable[str] | None = None, *,
           shares: Mapping[str, str] | None = None, runner: Runner | None = None) -> Lookup:
    """The owner and checkpoints of the chain ``chain_paths`` (base first, newest last)."""
    chain = [os.path.abspath(p) for p in chain_paths]
    roots = list(roots) if roots is not None else default_roots(chain)
    inv = inventory(roots, shares=shares, known=chain, runner=runner)
    checkpoints = inv.checkpoints(chain)
    owner: VmAttachment | None = None
    for path in reversed(chain):
        found = inv.attachments(path)
        if not found:
            continue
        owner, notes = found[0], []
        if path != chain[-1]:
            notes.append(f"the VM's configuration names {os.path.basename(path)}, not the "
                         f"newest file {os.path.basename(chain[-1])}")
        others = sorted({f"{a.vm_name} ({a.vm_id})" for a in found[1:]})
        if others:
            notes.append("other VM configurations name the same file: " + ", ".join(others))
        if owner.mapping.guess:
            notes.append(f"{owner.mapping.windows_path} was matched to the local file by its "
                         f"last {owner.mapping.tail} path component(s): a guess")
        owner = _with(owner, checkpoints=tuple(checkpoints), notes=tuple(notes))
        break
    if inv.truncated:
        inv.unreadable.append({"path": ", ".join(roots), "code": "truncated",
                               "reason": f"stopped after {MAX_ENTRIES} entries"})
    return Lookup(owner, checkpoints, inv.unreadable, roots)


def owner_of(chain_paths: Sequence[str], roots: Iterable[str] | None = None, *,
             shares: Mapping[str, str] | None = None,
             runner: Runner | None = None) -> VmAttachment | None:
    """The VM attachment using the chain (its checkpoints included), or ``None``."""
    return lookup(chain_paths, roots, shares=shares, runner=runner).attachment


def _attachment(cfg: VmConfig, drive: Drive, mapping: PathMapping) -> VmAttachment:
    return VmAttachment(cfg.name, cfg.id, cfg.path, drive, mapping, cfg.generation,
                        cfg.processors, cfg.memory_mib)


def _with(a: VmAttachment, **changes: object) -> VmAttachment:
    return replace(a, **changes)  # type: ignore[arg-type]
