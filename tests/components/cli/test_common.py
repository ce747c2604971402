"""The CLI's shared helpers: error output."""

from __future__ import annotations

import pytest
import typer

from components.cli.common import fail


def test_fail_prints_bracketed_yaml_literally(capsys):
    """Messages quote YAML (`train: [codec]`); rich markup must not swallow it."""
    with pytest.raises(typer.Exit) as exited:
        fail("add a stage with train: [codec] before it; known: [text, vision]")
    assert exited.value.exit_code == 2
    assert "train: [codec] before it; known: [text, vision]" in capsys.readouterr().err
