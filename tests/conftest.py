"""Shared fixtures: tiny configs, an isolated cache dir, and the CLI runner."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache: every test session renders into its own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def text_encoder_dir(tmp_path_factory):
    """A tiny pretrained DAMSM text encoder, made once per test session by the real CLI."""
    from typer.testing import CliRunner

    from stackgan2.cli.main import app

    out = tmp_path_factory.mktemp("shared-text") / "encoder"
    result = CliRunner().invoke(app, ["--quiet", "pretrain-text", "--preset", "tiny", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out
