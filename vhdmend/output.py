"""Printing results: JSON on stdout for machines, aligned text for people, one-line errors."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any, TextIO

from vhdmend.sizes import human_size

PROG = "vhdmend"


def _default(obj: object) -> object:
    """JSON fallback for the objects vhdlib hands back (enums, paths, to_dict() objects)."""
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def to_json(obj: object) -> str:
    """Stable, indented JSON text of ``obj``."""
    return json.dumps(obj, indent=2, default=_default, sort_keys=False)


def emit_json(obj: object, stream: TextIO | None = None) -> None:
    """Print ``obj`` as JSON on stdout (or ``stream``)."""
    print(to_json(obj), file=stream or sys.stdout)


def error_line(message: str) -> None:
    """The one-line error every failure ends with (stderr)."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def note(message: str, *, quiet: bool = False) -> None:
    """An informational line for people (stderr, so stdout stays clean for data)."""
    if not quiet:
        print(f"{PROG}: {message}", file=sys.stderr)


def _is_size_key(key: str) -> bool:
    return key.endswith(("_size", "_bytes")) or key in ("size", "bytes", "needed",
                                                         "available", "free")


def format_value(key: str, value: object) -> str:
    """A scalar for people: sizes get a binary unit beside the exact byte count."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, int) and _is_size_key(key) and value >= 1024:
        return f"{human_size(value)} ({value} bytes)"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def print_mapping(data: Mapping[str, Any], *, indent: int = 0,
                  skip: Sequence[str] = (), stream: TextIO | None = None) -> None:
    """Print a (nested) mapping as ``key: value`` lines, aligned; lists of dicts indented."""
    out = stream or sys.stdout
    pad = " " * indent
    keys = [k for k in data if k not in skip]
    scalars = [k for k in keys if not isinstance(data[k], Mapping | list | tuple)]
    width = max((len(k) for k in scalars), default=0)
    for key in keys:
        value = data[key]
        label = key.replace("_", " ")
        if isinstance(value, Mapping):
            if not value:
                continue
            print(f"{pad}{label}:", file=out)
            print_mapping(value, indent=indent + 2, stream=out)
        elif isinstance(value, list | tuple):
            if not value:
                continue
            print(f"{pad}{label}:", file=out)
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    print(f"{pad}  [{i}]", file=out)
                    print_mapping(item, indent=indent + 4, stream=out)
                else:
                    print(f"{pad}  - {format_value(key, item)}", file=out)
        else:
            print(f"{pad}{label + ':':<{width + 2}}{format_value(key, value)}", file=out)


def print_plan(plan: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """A dry run for people: steps with their bytes, totals, space per volume."""
    out = stream or sys.stdout
    print(f"{plan.get('operation')} {plan.get('target')}  (dry run: nothing written)",
          file=out)
    for label in ("inputs", "outputs"):
        items = plan.get(label) or []
        if items:
            print(f"  {label}: " + ", ".join(map(str, items)), file=out)
    steps = plan.get("steps") or []
    if steps:
        print("  steps:", file=out)
        width = max(len(str(s.get("name", ""))) for s in steps)
        for s in steps:
            io = []
            if s.get("read_bytes"):
                io.append(f"read {human_size(int(s['read_bytes']))}")
            if s.get("write_bytes"):
                io.append(f"write {human_size(int(s['write_bytes']))}")
            mark = " [irreversible]" if s.get("irreversible") else ""
            print(f"    {s.get('name', ''):<{width}}  {', '.join(io) or '-':<32} "
                  f"{s.get('description', '')}{mark}", file=out)
    print(f"  total: read {human_size(int(plan.get('read_bytes', 0)))}, "
          f"write {human_size(int(plan.get('write_bytes', 0)))}", file=out)
    for v in plan.get("space") or []:
        needed = int(v.get("needed_bytes", 0))
        free = int(v.get("free_bytes", 0))
        verdict = "ok" if needed <= free else "NOT ENOUGH"
        print(f"  space on {v.get('volume')}: needs {format_value('needed', needed)}, "
              f"free {format_value('free', free)}: {verdict}", file=out)
        for reason in v.get("reasons") or []:
            print(f"    - {reason}", file=out)


def print_volumes(vmap: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """One line per partition: where, what, how much is free (and, in a plan, how many
    whole blocks ``--reclaim fs`` drops), or why it is kept whole."""
    out = stream or sys.stdout
    print(f"partitions ({vmap['scheme']}, {vmap['sector_size']}-byte sectors):", file=out)
    if vmap["kept_whole"]:
        print(f"  whole disk kept: {vmap['kept_whole']}", file=out)
    for note in vmap["notes"]:
        print(f"  note: {note}", file=out)
    for p in vmap["partitions"]:
        where = f"  [{p['number']}] at {p['start']}, {human_size(p['length'])}"
        fs = p["file_system"] or "?"
        if p["kept_whole"]:
            print(f"{where}  {fs}  kept whole: {p['kept_whole']}", file=out)
            continue
        blocks = (f", {p['reclaimable_blocks']} whole blocks of "
                  f"{human_size(vmap['block_size'])} reclaimable"
                  if "reclaimable_blocks" in p else "")
        print(f"{where}  {fs}, clusters {human_size(p['cluster_size'])}, "
              f"free {human_size(p['free_bytes'])}{blocks}", file=out)


def print_info(info: dict[str, Any]) -> None:
    """The top layer's description, then the chain newest first."""
    print_mapping(info, skip=("chain", "warnings"))
    chain = info.get("chain") or []
    if len(chain) > 1 or (chain and chain[0].get("path") != info.get("path")):
        print(f"chain ({len(chain)} files, newest first):")
        for i, layer in enumerate(chain):
            print(f"  [{i}] {layer.get('path')}  {layer.get('format')} {layer.get('type')}  "
                  f"file {human_size(int(layer.get('file_size', 0)))}, "
                  f"allocated {human_size(int(layer.get('allocated_bytes', 0)))}")
    for layer in chain:
        for w in layer.get("warnings") or []:
            print(f"warning: {layer.get('path')}: {w}", file=sys.stderr)
