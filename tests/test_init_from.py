"""``train --init-from`` across model configs that differ only where no loaded weight depends on it: the
"shape first, colour second" curriculum (a model trained with the official losses fine-tuned with the
colour recipe's levers), and the differences that are still refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from stackgan2.cli.main import app

TINY = ["--quiet", "train", "--preset", "tiny", "--device", "cpu"]
# The colour recipe's model levers, at tiny size.
LEVERS = {"model.g_text_fusion": True, "model.g_word_attention": True, "model.d_projection": True, "model.ca_noise": 0.0}
LEVER_FLAGS = ["--g-text-fusion", "--g-word-attention", "--d-projection", "--ca-noise", "0"]


def _is_identity_layer(key: str) -> bool:
    return not {"fusion", "word_fusion"}.isdisjoint(key.split("."))


@pytest.fixture(scope="module")
def official_pipe(tiny_run, tmp_path_factory) -> Path:
    """The export of ``tiny_run`` (tiny preset: no fusion, no projection, CA noise 1)."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("official") / "pipe"
    result = CliRunner().invoke(app, ["--quiet", "export", str(tiny_run), str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("source", ["run", "pipe"])
def test_levers_turned_on_load_the_generator_and_draw_the_same_images(source, tiny_run, official_pipe, tmp_path, caplog):
    """Text fusion and word attention start as the identity and the CA noise has no weights, so the new
    G_ema draws the source's images at step 0; d_projection starts the discriminators fresh."""
    from stackgan2.config import resolve_config
    from stackgan2.models import build_generator
    from stackgan2.training.trainer import Trainer
    from stackgan2.training.weights import load_initial_weights

    weights = load_initial_weights(tiny_run if source == "run" else official_pipe)
    m = weights.config.model
    assert not (m.g_text_fusion or m.g_word_attention or m.d_projection) and m.ca_noise == 1.0
    cfg = resolve_config("tiny", overrides={"train.device": "cpu", **LEVERS})
    trainer = Trainer(cfg, tmp_path / "unused")
    fresh_g = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    fresh_d = {k: v.clone() for k, v in trainer.discriminators.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="stackgan2"):
        trainer.start_from(weights)

    for name, module in (("G", trainer.G), ("G_ema", trainer.G_ema)):
        state = module.state_dict()
        added = {k for k in state if _is_identity_layer(k)}
        assert added and added.isdisjoint(weights.states[name])
        assert state.keys() - added == weights.states[name].keys()
        for key, value in state.items():
            assert torch.equal(value, fresh_g[key] if key in added else weights.states[name][key]), (name, key)
    assert all(torch.equal(v, fresh_d[k]) for k, v in trainer.discriminators.state_dict().items())
    messages = [r.getMessage() for r in caplog.records]
    assert any("no g_text_fusion / g_word_attention layers" in msg for msg in messages), messages
    assert any("d_projection: False vs True" in msg for msg in messages) == (source == "run"), messages

    original = build_generator(m).split_condition(cfg.train.split_condition_conv)
    original.load_state_dict(weights.states["G_ema"])
    original.eval()
    torch.manual_seed(0)
    batch, length = 4, 6
    z, embedding = torch.randn(batch, m.z_dim), torch.randn(batch, m.text_dim)
    eps = torch.randn(batch, cfg.model.eps_dim)
    words, mask = torch.randn(batch, m.text_dim, length), torch.rand(batch, length) < 0.3
    with torch.no_grad():
        # ca_noise 0: c is the CA mean whatever eps is; the source (noise 1) gives the mean at eps = 0.
        expected, _, _ = original(z, embedding, torch.zeros_like(eps))
        got, _, _ = trainer.G_ema.eval()(z, embedding, eps, words=words, mask=mask)
    assert len(got) == len(expected) == 3
    for new, old in zip(got, expected, strict=True):
        assert torch.equal(new, old)
    assert expected[-1].std() > 0.01  # a real image, not a constant


def test_levers_turned_on_train_from_the_cli(runner, official_pipe, tmp_path):
    run = tmp_path / "colour"
    result = runner.invoke(app, [*TINY, "--run-dir", str(run), "--max-steps", "1", "--init-from", str(official_pipe),
                                 *LEVER_FLAGS])
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "step-00000001.safetensors").is_file()


def test_turning_a_lever_off_or_another_width_is_refused(runner, tiny_run, tmp_path):
    """Dropping trained fusion layers, or a generator of another width, is one error line; no run is made."""
    from stackgan2.config import resolve_config
    from stackgan2.models import build_generator, init_weights
    from stackgan2.pipeline import Text2ImagePipeline

    cfg = resolve_config("tiny", overrides={"model.g_text_fusion": True, "model.g_word_attention": True})
    generator = build_generator(cfg.model)
    init_weights(generator)
    fused = Text2ImagePipeline(generator, None, cfg).save_pretrained(tmp_path / "fused")
    cases = [  # (source, flags, the difference named, a field that may differ and is not named)
        (fused, ["--g-word-attention"], "g_text_fusion: True vs False", "g_word_attention"),
        (fused, ["--ca-noise", "0"], "g_word_attention: True vs False", "ca_noise"),
        (tiny_run, [*LEVER_FLAGS, "--ngf", "64"], "ngf: 32 vs 64", "d_projection"),
    ]
    for i, (source, flags, message, allowed) in enumerate(cases):
        result = runner.invoke(app, [*TINY, "--run-dir", str(tmp_path / f"r{i}"), "--init-from", str(source), *flags])
        assert result.exit_code == 1 and "different architecture" in result.output and message in result.output, result.output
        assert allowed not in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / f"r{i}").exists()
