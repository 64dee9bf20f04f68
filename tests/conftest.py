"""Shared fixtures: tiny configs, an isolated cache dir, and the CLI runner."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache: every test session renders into its own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(autouse=True)
def _library_logger_propagates():
    """The CLI's setup_logging turns propagation off on the "stackgan2" logger and adds its own stderr
    handler; after an in-process CLI run (a test's or a session fixture's), a later test's caplog (a root
    handler) would see no library warning. Every test starts and ends with the library's own state."""

    def reset() -> None:
        logger = logging.getLogger("stackgan2")
        logger.propagate, logger.handlers[:] = True, []
        logger.setLevel(logging.NOTSET)

    reset()
    yield
    reset()


TINY_CAPTIONS = ["a small red bird with black wings", "a large blue bird with a short yellow beak"]


def make_tiny_pipeline(seed: int = 0, arch: str = "stackgan2"):
    """A tiny-preset ``Text2ImagePipeline`` built directly (no training), 8/16/32 px, vocabulary of TINY_CAPTIONS;
    ``arch`` chooses the model family (``attngan``: attention refine stages at tiny size)."""
    from stackgan2.config import resolve_config
    from stackgan2.models import build_generator, init_weights
    from stackgan2.pipeline import Text2ImagePipeline
    from stackgan2.text import PromptEncoder, TextEncoder, Vocabulary

    cfg = resolve_config("tiny", overrides={"model.arch": arch})
    torch.manual_seed(seed)
    generator = build_generator(cfg.model)
    generator.apply(init_weights)
    vocab = Vocabulary.build(TINY_CAPTIONS)
    encoder = PromptEncoder(vocab, TextEncoder(len(vocab), cfg.text.word_dim, cfg.text.dim), cfg.text)
    return Text2ImagePipeline(generator, encoder, cfg)


def make_damsm_encoder(text_cfg):
    """A small untrained DAMSM text + image encoder pair matching ``text_cfg`` (no pretraining needed)."""
    from stackgan2.text import ImageEncoder, PromptEncoder, TextEncoder, Vocabulary

    torch.manual_seed(0)
    vocab = Vocabulary(["a", "red", "blue", "bird", "with", "wings", "black"])
    tc = text_cfg
    return PromptEncoder(vocab, TextEncoder(len(vocab), tc.word_dim, tc.dim), tc, None, ImageEncoder(tc.dim, tc.image_width))


@contextlib.contextmanager
def cli_server(log: Path, *args: str) -> Iterator[str]:
    """The real ``stackgan2 serve --port 0 --device cpu *args`` (the shipped model unless ``args`` name one) as
    a subprocess; yields its base URL, read from the startup line. All its output goes to ``log``. On leaving
    it gets Ctrl-C, and it must stop cleanly (exit 0) in 30 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "stackgan2.cli", "serve", "--port", "0", "--device", "cpu", *args],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (match := re.search(r" at (http://127\.0\.0\.1:\d+)/", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, f"stackgan2 serve did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, f"stackgan2 serve exited with {process.returncode}:\n{log.read_text()}"


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real tiny training run made once per session: phase 0 text encoder + 4 GAN steps, one checkpoint.
    Read-only for the tests that share it."""
    from typer.testing import CliRunner

    from stackgan2.cli.main import app

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    args = ["--quiet", "train", "--preset", "tiny", "--device", "cpu", "--max-steps", "4", "--run-dir", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run
