"""The disk commands, one module per group; each exposes ``register(subparsers)``.

Every registered sub-parser sets ``func(args) -> int`` (the exit code) through
``set_defaults``; :func:`vhdmend.cli.main` turns exceptions into exit codes.
"""

from __future__ import annotations

from vhdmend.commands import create, demo, inspect, operations, scan

#: In the order ``vhdmend --help`` lists them.
MODULES = (inspect, create, operations, scan, demo)

#: Names of the disk commands: these never import the service (Flask, Celery, Redis).
NAMES = (*inspect.NAMES, *create.NAMES, *operations.NAMES, *scan.NAMES, *demo.NAMES)
