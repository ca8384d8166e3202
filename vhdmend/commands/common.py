"""Options shared by the disk commands."""

from __future__ import annotations

import argparse


def common_parent() -> argparse.ArgumentParser:
    """``-q/--quiet`` and ``-v/--verbose``, accepted by every disk command."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no informational lines (errors still print)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log lines on stderr (repeat for debug)")
    return p


def add_json(p: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output on stdout (errors as a JSON object too)."""
    p.add_argument("--json", action="store_true", help="print JSON on stdout")


def add_plan(p: argparse.ArgumentParser) -> None:
    """``--plan``: dry run printing the operation's plan (with ``--json`` as JSON)."""
    p.add_argument("--plan", action="store_true",
                   help="dry run: print the steps, bytes and space needed per volume; "
                        "write nothing")
    add_json(p)


def add_lenient(p: argparse.ArgumentParser) -> None:
    """``--lenient``: accept inputs whose checksums are wrong (vhdlib's declaration)."""
    from vhdlib.ops.options import LENIENT
    from vhdmend.commands.declared import add_option
    add_option(p, LENIENT)
