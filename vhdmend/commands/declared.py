"""argparse options made from vhdlib's option declarations (:mod:`vhdlib.ops.options`).

The disk commands (``merge``, ``compact``, ``convert``, ``remediate``) and ``vhdmend
submit`` both build their flags here, so a flag, its type, its choices and its help are
those the library declares and validates.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from vhdlib.ops.options import Option
from vhdmend.sizes import human_size, parse_size, size_arg


def value_parser(opt: Option) -> Callable[[str], Any]:
    """The argparse ``type`` of ``opt``: parses, then checks choices and range."""
    def parse(text: str) -> Any:
        value: Any
        if opt.form == "size":
            # Positive, unless the declaration allows from a minimum (scan's reserve: 0).
            value = size_arg(text) if opt.minimum is None else _size(text)
        elif opt.form == "uuid":
            try:
                value = str(uuid.UUID(text))
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"invalid UUID {text!r}") from e
        elif opt.type is int:
            try:
                value = int(text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from e
        else:
            value = text
        allowed = opt.allowed
        if opt.type is int and allowed and value not in allowed:
            shown = (human_size(min(allowed)), human_size(max(allowed))) if opt.form == "size" \
                else (min(allowed), max(allowed))
            raise argparse.ArgumentTypeError(f"{text!r} is not one of the allowed values "
                                             f"({shown[0]} .. {shown[1]}, powers of two)"
                                             if opt.form == "size" else
                                             f"{text!r} is not one of {list(allowed)}")
        if (opt.minimum is not None and value < opt.minimum) or \
                (opt.maximum is not None and value > opt.maximum):
            raise argparse.ArgumentTypeError(f"{text!r} is outside [{opt.minimum}, "
                                             f"{opt.maximum}]")
        return value
    parse.__name__ = opt.form or opt.type.__name__  # argparse names it in its errors
    return parse


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_option(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, opt: Option, *,
               positional: bool | None = None, flag: str | None = None,
               defaults: bool = True, prefix: str = "") -> None:
    """Add ``opt`` to ``p`` (its value in ``args.<prefix><name>``); ``defaults=False``
    leaves every value ``None`` unless given (``submit`` sends only what the user typed)."""
    positional = opt.positional if positional is None else positional
    kw: dict[str, Any] = {"help": opt.help}
    if opt.type is bool:
        kw.update(action="store_true", default=opt.default if defaults else None)
    else:
        allowed = opt.allowed
        if not positional and not (opt.type is str and allowed):
            # A declared positional given as a flag (submit's --output) gets its name.
            kw["metavar"] = opt.metavar if opt.metavar and not opt.positional \
                else opt.name.upper()
        if opt.type is str and allowed:
            kw["choices"] = allowed
        elif opt.form in ("size", "uuid") or opt.type is int:
            kw["type"] = value_parser(opt)
        if not positional:
            kw["default"] = opt.default if defaults else None
    if positional:
        if opt.metavar:
            kw["metavar"] = opt.metavar
        p.add_argument(opt.name, **kw)
    else:
        p.add_argument(flag or opt.flag, dest=prefix + opt.name, **kw)


def add_options(p: argparse.ArgumentParser, declared: Iterable[Option], **kw: Any) -> None:
    """Add every option; options that exclude each other share a mutually exclusive group."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for opt in declared:
        target: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup = p
        if opt.excludes:
            group = next((groups[o] for o in (opt.name, *opt.excludes) if o in groups), None)
            if group is None:
                group = p.add_mutually_exclusive_group()
            for name in (opt.name, *opt.excludes):
                groups[name] = group
            target = group
        add_option(target, opt, **kw)


def given(args: argparse.Namespace, declared: Iterable[Option],
          prefix: str = "") -> dict[str, Any]:
    """The declared options' values in ``args``, without those left at ``None``."""
    return {o.name: v for o in declared
            if (v := getattr(args, prefix + o.name, None)) is not None}
