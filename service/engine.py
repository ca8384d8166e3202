"""The operation engine that runs jobs: :mod:`vhdlib.ops` (tests run it too, on real chains).

It follows the Operations contract of docs/ARCHITECTURE.md::

    op = prepare(kind, path, **options); op.plan.to_dict()
    op.run(progress=, cancel=, pause=, on_checkpoint=, before_irreversible=, fence=)
    op = resume(journal_path, fence=N)
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Operation(Protocol):
    """What the worker needs of a prepared operation."""

    plan: Any

    @property
    def journal_path(self) -> str: ...

    def run(self, **kwargs: Any) -> dict[str, Any]: ...


class Backend(Protocol):
    """A module with ``prepare`` and ``resume``."""

    def prepare(self, kind: str, path: str, *args: Any, **options: Any) -> Any: ...

    def resume(self, journal_path: str, *, fence: int | None = None) -> Any: ...


def backend(name: str) -> Backend:
    """``"vhdlib"`` -> :mod:`vhdlib.ops`; any other name is imported as a module."""
    module = {"vhdlib": "vhdlib.ops"}.get(name, name)
    mod: Any = importlib.import_module(module)
    return mod  # type: ignore[no-any-return,unused-ignore]


def prepare(engine: Backend, kind: str, path: str, options: dict[str, Any]) -> Any:
    """``engine.prepare(kind, path, **options)``, the options not given left out.

    Every option goes by name: :func:`vhdlib.ops.prepare` places the one an operation also
    takes positionally (its class's ``second``) itself.
    """
    return engine.prepare(kind, path, **{k: v for k, v in options.items() if v is not None})


def run(op: Any, **kwargs: Any) -> dict[str, Any]:
    """Call ``op.run`` with the keyword arguments it accepts (older engines lack some)."""
    params = inspect.signature(op.run).parameters
    accepted = {k: v for k, v in kwargs.items()
                if k in params and (v is not None or k == "fence")}
    dropped = sorted(set(kwargs) - set(accepted) - {k for k, v in kwargs.items() if v is None})
    if dropped:
        log.debug("operation engine ignores %s", dropped)
    result = op.run(**accepted)
    return dict(result) if isinstance(result, dict) else {"status": "done"}


def journal_path(op: Any) -> str | None:
    """The journal of an operation, if the engine names it."""
    path = getattr(op, "journal_path", None)
    if path is None:
        state = getattr(op, "state", None)
        if isinstance(state, dict):
            path = state.get("journal")
    return str(path) if path else None
