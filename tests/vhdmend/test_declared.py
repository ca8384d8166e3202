"""The disk CLI's and ``vhdmend submit``'s flags are vhdlib's option declarations."""

from __future__ import annotations

import argparse

from vhdlib import formats, ops
from vhdlib.ops.options import merged


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _dests(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions}


def test_disk_cli_flags_are_the_declarations() -> None:
    from vhdmend.cli import build_parser
    parser = build_parser(with_service=False)
    for kind, cls in ops.OPERATIONS.items():
        actions = _dests(_subparser(parser, kind))
        for opt in (cls.subject, *cls.options):
            action = actions[opt.name]
            if opt.positional:
                assert not action.option_strings, (kind, opt.name)
            else:
                assert action.option_strings == [opt.flag], (kind, opt.name)
                assert action.default == opt.default
            if opt.type is str and opt.allowed:
                assert tuple(action.choices or ()) == opt.allowed
    # remediate and convert offer the same formats: every writable one.
    conv = _dests(_subparser(parser, "convert"))["format"].choices
    rem = _dests(_subparser(parser, "remediate"))["format"].choices
    assert tuple(conv or ()) == tuple(rem or ()) == formats.writable_names()
    assert "raw" in (rem or ())


def test_submit_flags_cover_every_declared_option() -> None:
    from vhdmend.cli import build_parser
    submit = _subparser(build_parser(), "submit")
    actions = _dests(submit)
    for opt in merged(*(cls.options for cls in ops.OPERATIONS.values())):
        action = actions["option_" + opt.name]
        assert action.default is None  # only what the user gives is sent
        flag = "--disk-type" if opt.name == "type" else opt.flag
        assert action.option_strings == [flag]
    args = submit.parse_args(["convert", "a.vhd", "--root", "r", "--output", "b.vhdx",
                              "--disk-type", "dynamic", "--block-size", "2M", "--sparse"])
    from vhdmend.commands.declared import given
    assert given(args, merged(*(c.options for c in ops.OPERATIONS.values())),
                 prefix="option_") == {"output": "b.vhdx", "type": "dynamic",
                                       "block_size": 2 << 20, "sparse": True}
