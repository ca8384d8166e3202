"""What a job kind is: its name, its options, whether it changes disks, how it runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vhdlib.ops.options import Option


@dataclass(frozen=True)
class Context:
    """What a read-only kind's ``run`` is given: the confined disk path, its root's real
    directory, the job's options (file options already resolved), the operation engine."""

    path: str
    root_real: str
    options: dict[str, Any]
    engine: Any
    #: The job store and settings of the worker (kinds that record what they find).
    store: Any = None
    settings: Any = None


#: A read-only kind's whole job: returns the job fields to store (``result``, ``plan``).
Run = Callable[[Context], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    A *read-only* kind has a ``run``: it opens disks read-only and returns its result, with
    no journal, no run lock and no chain lock. A *mutating* kind names the engine's
    ``operation``: it runs chunk by chunk under the chain lock, with the journal on disk as
    its checkpoint, resumable, pausable and cancellable.
    """

    name: str
    summary: str
    #: The options the kind takes, as vhdlib declares them (:mod:`vhdlib.ops.options`):
    #: the API's options schema of the kind is derived from them.
    declared: tuple[Option, ...] = ()
    #: Their names (default: the declarations'; a kind without declarations may list
    #: names alone: the API then takes no options for it).
    options: tuple[str, ...] = ()
    #: Options naming files relative to the job's root -> whether the file must exist
    #: (default: the declarations' ``form="path"`` ones).
    path_options: Mapping[str, bool] = field(default_factory=dict)
    mutating: bool = False
    run: Run | None = None
    operation: str | None = None
    #: The job's path names a folder of the root (``"."``: the root), not a disk.
    folder: bool = False

    def __post_init__(self) -> None:
        # Derived from the declarations, once (the dataclass is frozen).
        if not self.options:
            object.__setattr__(self, "options", tuple(o.name for o in self.declared))
        if not self.path_options:
            object.__setattr__(self, "path_options", {
                o.name: o.exists for o in self.declared if o.form == "path"})
        if self.mutating != (self.operation is not None) or self.mutating == (
                self.run is not None):
            raise ValueError(f"job kind {self.name!r}: a mutating kind names an operation, "
                             "a read-only kind has a run")
