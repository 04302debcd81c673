"""The CLI explains itself (docs/style.md rule 12): every command and sub-command has help with an example, every
option has help text, and `--help` works for each of them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from gtm_pipeline.cli import main


def walk(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out.extend(walk(cmd.commands[name], path + (name,)))
    return out


COMMANDS = walk(main)


def test_the_tree_has_commands():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"demo", "run", "refresh", "generate"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "gtm-pipeline" for p, _ in COMMANDS])
def test_command_help_has_an_example(path, cmd):
    assert (cmd.help or "").strip(), f"gtm-pipeline {' '.join(path)}: no help text"
    assert "Example" in cmd.help, f"gtm-pipeline {' '.join(path)}: help text has no 'Example:' section"
    # The example shows this very command.
    assert f"gtm-pipeline {' '.join(path)}".strip() in cmd.help, \
        f"gtm-pipeline {' '.join(path)}: the example does not show the command itself"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "gtm-pipeline" for p, _ in COMMANDS])
def test_every_option_has_help(path, cmd):
    missing = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, f"gtm-pipeline {' '.join(path)}: options without help: {missing}"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "gtm-pipeline" for p, _ in COMMANDS])
def test_help_renders(path, cmd):
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output
