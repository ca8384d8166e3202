"""The job-kind registry: every kind of job the service runs, declared once.

A kind is a :class:`~service.kinds.kind.JobKind` (name, options, mutating or read-only,
how it runs). Each module of this package that defines ``KIND`` (or ``KINDS``) is
registered, so adding a kind is adding one module here.
"""

from __future__ import annotations

import importlib
import pkgutil

from service.errors import ClientError
from service.kinds.kind import Context, JobKind

_REGISTRY: dict[str, JobKind] = {}
#: The order kinds are listed in (built-ins first, then the others by module name).
_ORDER = ("inspect", "plan", "operations")


def register(kind: JobKind) -> JobKind:
    """Add ``kind`` (a name taken twice is a bug)."""
    if kind.name in _REGISTRY and _REGISTRY[kind.name] is not kind:
        raise ValueError(f"job kind {kind.name!r} registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def _discover() -> None:
    names = [m.name for m in pkgutil.iter_modules(__path__)
             if m.name != "kind"]
    for name in sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER),
                                             n)):
        module = importlib.import_module(f"{__name__}.{name}")
        for kind in (getattr(module, "KIND", None), *getattr(module, "KINDS", ())):
            if kind is not None:
                register(kind)


def get(name: str) -> JobKind:
    """The kind ``name``, or :class:`ClientError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ClientError(f"unknown job type {name!r}; one of {list(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
    """Every registered kind's name."""
    return tuple(_REGISTRY)


_discover()

__all__ = ["Context", "JobKind", "get", "names", "register"]
