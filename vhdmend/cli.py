"""``vhdmend``: parser, dispatch, and the one place exceptions become exit codes.

Exit codes: 0 ok, 1 check found problems, 2 usage, 3 invalid or corrupt input, 4 not
enough free space, 5 refused for safety, 130 cancelled, 70 internal error. Every
:class:`vhdlib.errors.VhdlibError` carries its own ``exit_code``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from vhdlib.errors import VhdlibError
from vhdmend import __version__, commands
from vhdmend.output import PROG, emit_json, error_line

log = logging.getLogger("vhdmend")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_SPACE = 4
EXIT_INTERNAL = 70
EXIT_CANCELLED = 130


def build_parser(*, with_service: bool = True) -> argparse.ArgumentParser:
    """The full parser; ``with_service`` adds the service commands when they import."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Remediate bloated Hyper-V virtual disks: inspect, check, create, and "
                    "resumably merge, compact, convert and remediate VHD/VHDX chains.",
        epilog="exit codes: 0 ok, 1 check found problems, 2 usage, 3 invalid or corrupt "
               "input, 4 not enough free space, 5 refused for safety, 130 cancelled, "
               "70 internal error")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands.MODULES:
        module.register(sub)
    if with_service:
        _add_service_commands(sub)
    return parser


def _add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register up/serve/worker/submit/status/watch when the service code is importable."""
    try:
        from vhdmend import service_cli, volumes_cli
    except ImportError as e:  # the service extras are not installed, or not written yet
        log.debug("service commands unavailable: %s", e)
        return
    service_cli.add_commands(sub)
    # volumes_cli builds on service_cli's HTTP client: registered here, not from there.
    volumes_cli.add_command(sub, service_cli.client_args)


def _first_command(argv: Sequence[str]) -> str | None:
    """The first positional word (top-level options take no values)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def _configure_logging(args: argparse.Namespace) -> None:
    verbose = getattr(args, "verbose", 0) or 0
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def report_error(args: argparse.Namespace | None, exc: BaseException, code: int,
                 *, kind: str | None = None) -> int:
    """One line on stderr; with ``--json`` also a JSON error object on stdout."""
    if isinstance(exc, VhdlibError):
        message = str(exc)
        body: dict[str, object] = exc.to_dict()
    else:
        message = str(exc) or type(exc).__name__
        if kind == "internal":
            message = f"internal error: {type(exc).__name__}: {message}"
        body = {"type": kind or "error", "title": type(exc).__name__, "detail": message}
    body["exit_code"] = code
    if args is not None and getattr(args, "json", False):
        emit_json({"error": body})
    error_line(message)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The disk commands never import the service (Flask, Celery, Redis).
    parser = build_parser(with_service=_first_command(argv) not in commands.NAMES)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args)
    try:
        return int(func(args) or EXIT_OK)
    except VhdlibError as e:
        if os.environ.get("VHDMEND_DEBUG"):
            traceback.print_exc()
        return report_error(args, e, e.exit_code)
    except KeyboardInterrupt as e:
        return report_error(args, e, EXIT_CANCELLED, kind="cancelled")
    except BrokenPipeError:
        # `vhdmend map ... | head`: the reader left; stop quietly.
        # Point stdout at /dev/null so the flush at exit does not raise a second EPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:
        if os.environ.get("VHDMEND_DEBUG"):
            traceback.print_exc()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return report_error(args, e, EXIT_NO_SPACE, kind="insufficient_space")
        return report_error(args, e, EXIT_INTERNAL, kind="internal")
    except Exception as e:
        if os.environ.get("VHDMEND_DEBUG"):
            traceback.print_exc()
        if _is_config_error(e):   # the service's settings (VHDMEND_*): a usage error
            return report_error(args, e, EXIT_USAGE, kind="invalid_config")
        return report_error(args, e, EXIT_INTERNAL, kind="internal")


def _is_config_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the service's :class:`~service.errors.ConfigError` (imported only
    here: the disk commands never load the service)."""
    try:
        from service.errors import ConfigError
    except ImportError:
        return False
    return isinstance(exc, ConfigError)
