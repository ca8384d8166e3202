"""Plans: what an operation will do, before it does anything (the ``--plan`` dry run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    """One phase of an operation with the bytes it reads and writes."""

    name: str
    description: str
    read_bytes: int = 0
    write_bytes: int = 0
    irreversible: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description,
                "read_bytes": self.read_bytes, "write_bytes": self.write_bytes,
                "irreversible": self.irreversible}


@dataclass
class Plan:
    """A serializable dry run: steps, totals, and the exact extra bytes per volume."""

    operation: str
    target: str
    inputs: list[str]
    outputs: list[str]
    steps: list[Step] = field(default_factory=list)
    space: list[dict[str, object]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def read_bytes(self) -> int:
        return sum(s.read_bytes for s in self.steps)

    @property
    def write_bytes(self) -> int:
        return sum(s.write_bytes for s in self.steps)

    @property
    def space_ok(self) -> bool:
        return all(int(str(v["needed_bytes"])) <= int(str(v["free_bytes"])) for v in self.space)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "target": self.target,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "steps": [s.to_dict() for s in self.steps],
            "read_bytes": self.read_bytes,
            "write_bytes": self.write_bytes,
            "space": list(self.space),
            "space_ok": self.space_ok,
            "details": dict(self.details),
        }
