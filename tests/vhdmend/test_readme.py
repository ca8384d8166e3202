"""The README's two commands stay what .ci/run and a user run."""

from __future__ import annotations

import os
import re

from tests.vhdmend.helpers import REPO


def readme_commands() -> list[str]:
    """The shell code blocks of the README's "Two commands" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_two_commands_each_one_line() -> None:
    cmds = readme_commands()
    assert len(cmds) == 2
    assert all("\n" not in c for c in cmds)
    # Command 1 runs the stack demo (directly, or through the script it names).
    first = cmds[0]
    if first.startswith("./scripts/"):
        script = REPO / first.split()[0]
        assert os.access(script, os.X_OK)
        first = script.read_text()
    assert "vhdmend demo --stack" in first
    assert "pytest" in cmds[1] and "ruff" in cmds[1] and "mypy" in cmds[1]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = readme_commands()[1]
    # The command line itself, with only the status capture after it.
    assert f"\n{test_cmd} || status=$?\n" in ci
    assert os.access(REPO / ".ci" / "run", os.X_OK)
