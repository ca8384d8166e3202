"""Options declared once: prepare validates against them and the operations' signatures
agree with them (the CLI and API derivations are tested beside their code)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tests.chains import build_chain
from vhdlib import ops
from vhdlib.errors import UsageError
from vhdlib.ops.options import Option


def test_each_operation_declares_its_prepare_signature() -> None:
    for kind, cls in ops.OPERATIONS.items():
        params = inspect.signature(cls.prepare).parameters  # type: ignore[attr-defined]
        names = [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD]
        assert names[0] not in {o.name for o in cls.options}, kind  # the subject
        declared = {o.name: o.default for o in cls.options}
        taken = {n: p.default for n, p in list(params.items())[1:]
                 if p.kind is not p.VAR_KEYWORD}
        assert set(taken) == set(declared), kind
        for name, default in declared.items():
            assert taken[name] == default, (kind, name)
        if cls.second is not None:
            assert next(iter(taken)) == cls.second


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    return build_chain(tmp_path_factory.mktemp("opts"), "vhd", size=4 << 20, children=1,
                       writes=4)


@pytest.mark.parametrize(("kind", "options", "match"), [
    ("compact", {"colour": "red"}, r"unknown option\(s\) \['colour'\]"),
    ("convert", {"output": "x.vhd", "type": "sparse"}, "type 'sparse' is not one of"),
    ("convert", {"output": "x.vhd", "format": "qcow2"}, "format 'qcow2' is not one of"),
    ("convert", {"output": "x.vhd", "block_size": 3 << 20}, "block_size"),
    ("convert", {"output": "x.vhd", "sparse": "yes"}, "must be a bool"),
    ("convert", {"output": "x.vhd", "uuid": "not-a-uuid"}, "not a UUID"),
    ("convert", {"output": "x.vhd", "timestamp": 5}, "outside"),
    ("convert", {}, "convert needs output"),
    ("remediate", {"archive": "old", "delete": True}, "exclude each other"),
    ("merge", {"into": 7}, "must be a str"),
])
def test_prepare_refuses_what_the_declarations_refuse(chain, tmp_path: Path, kind: str,
                                                      options: dict, match: str) -> None:
    if "output" in options:
        options = {**options, "output": str(tmp_path / options["output"])}
    with pytest.raises(UsageError, match=match):
        ops.prepare(kind, str(chain.newest), **options)
    assert not list(tmp_path.iterdir())


def test_prepare_fills_declared_defaults_and_takes_the_second_positionally(chain,
                                                                           tmp_path: Path):
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhdx"))
    assert op.plan.details["output"]["type"] == "fixed"  # TYPE's declared default
    assert op.plan.details["output"]["fmt"] == "vhdx"     # from the suffix
    with pytest.raises(UsageError, match="given twice"):
        ops.prepare("convert", str(chain.newest), str(tmp_path / "a.vhd"),
                    output=str(tmp_path / "b.vhd"))
    with pytest.raises(UsageError, match="too many"):
        ops.prepare("compact", str(chain.base), "extra")


def test_a_declaration_checks_its_own_values() -> None:
    opt = Option("n", int, None, choices=lambda: (1, 2))
    assert opt.check(2) == 2
    with pytest.raises(UsageError, match="not one of 1, 2"):
        opt.check(3)
    with pytest.raises(UsageError, match="must be a int"):
        opt.check(True)
