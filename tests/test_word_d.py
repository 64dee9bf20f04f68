"""ControlGAN's word-level discriminator (``train.d_word_coef``): each word of a caption against the frozen DAMSM
image regions it attends to, through a trained ``WordCritic``; real images with their captions are 1, with the
batch's captions shifted by one 0; G's last branch with its own caption is scored as matching."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import make_damsm_encoder

from stackgan2.cli.main import app
from stackgan2.config import PRESETS, resolve_config
from stackgan2.errors import ConfigError
from stackgan2.losses import bce
from stackgan2.models.blocks import WordCritic
from stackgan2.text.damsm import matched_word_region_scores, word_region_scores
from stackgan2.training.checkpoint import load_checkpoint, save_checkpoint
from stackgan2.training.objectives import WordDiscriminator
from stackgan2.training.trainer import Trainer

CAPTIONS = ["a red bird", "a blue bird with black wings", "red wings", "a bird"]


def _cfg(coef: float = 0.5, **overrides):
    return resolve_config("tiny", overrides={"train.device": "cpu", "train.d_word_coef": coef, **overrides})


def _trainer(cfg, path):
    trainer = Trainer(cfg, path)
    trainer.attach_text_encoder(make_damsm_encoder(cfg.text))
    return trainer


def _batch(trainer, size=4):
    g = torch.Generator().manual_seed(0)
    real = [torch.rand(size, 3, r, r, generator=g) * 2 - 1 for r in trainer.cfg.model.resolutions]
    wrong = [torch.rand(size, 3, r, r, generator=g) * 2 - 1 for r in trainer.cfg.model.resolutions]
    text = trainer.damsm.captions(CAPTIONS[:size], torch.arange(size))
    return real, wrong, text.sentence, text


def _controlgan_correlation(regions, words, length, gamma1=4.0, gamma2=5.0):
    """mrlibw/ControlGAN ``word_level_correlation`` for one (image, caption) pair, step by step: AttnGAN's
    ``func_attention`` of the first ``length`` words, the word-level self-attention on the contexts, cosines,
    log(sum exp(gamma2 * cos)) (before its sigmoid)."""
    word = words[:, :length]                                         # (D, T)
    context = regions.flatten(1)                                     # (D, R)
    attn = torch.softmax(context.t() @ word, dim=1)                  # each region over the words
    attn = torch.softmax(gamma1 * attn.t(), dim=1)                   # each word over the regions, (T, R)
    weighted = context @ attn.t()                                    # (D, T)
    self_attention = torch.softmax(word.mean(dim=1) @ word, dim=0)   # (T,)
    cos = F.cosine_similarity(word, weighted * self_attention, dim=0)
    return torch.log(torch.exp(gamma2 * cos).sum())


# ------------------------------------------------------------------------------------------ the maths
def test_matched_scores_are_controlgans_correlation_and_the_diagonal_of_all_pairs():
    g = torch.Generator().manual_seed(0)
    regions, words = torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 8, 6, generator=g)
    lengths = torch.tensor([6, 2, 4])
    scores = matched_word_region_scores(regions, words, lengths, 4.0, 5.0)
    assert scores.shape == (3,)
    expected = torch.stack([_controlgan_correlation(regions[b], words[b], int(lengths[b])) for b in range(3)])
    assert torch.allclose(scores, expected, atol=1e-5)  # the self-attention scales contexts: no effect on cosines
    assert torch.allclose(scores, torch.diagonal(word_region_scores(regions, words, lengths, 4.0, 5.0)), atol=1e-5)


def test_a_word_scores_higher_against_the_region_it_names_and_padding_does_not_count():
    e = torch.eye(4)
    red, wing, sky, grass = e  # one feature direction per thing an image region or a word can be
    # three images of two regions each: both named things, one of them, none
    regions = torch.stack([torch.stack([red, wing]), torch.stack([red, grass]), torch.stack([sky, grass])])
    regions = regions.transpose(1, 2)[:, :, None, :]                 # (3, D=4, 1, 2)
    caption = torch.stack([red, wing, 10 * sky]).t()                 # "red wing" + one padding slot
    words, lengths = caption.expand(3, -1, -1), torch.tensor([2, 2, 2])
    both, one, none = matched_word_region_scores(regions, words, lengths).tolist()
    assert both > one > none
    # whatever sits in the padding slot, and however many there are, the scores stay the same
    trimmed = matched_word_region_scores(regions, words[:, :, :2], lengths)
    padded = matched_word_region_scores(regions, torch.cat([words, torch.randn(3, 4, 3)], dim=2), lengths)
    assert torch.allclose(trimmed, torch.tensor([both, one, none])) and torch.allclose(padded, trimmed)


def test_the_head_starts_as_controlgans_score():
    critic = WordCritic(6, 6)
    regions, relevance = torch.randn(2, 6, 3, 3), torch.randn(5)
    assert torch.equal(critic(regions), regions) and torch.equal(critic.logits(relevance), relevance)
    assert WordCritic(8, 6)(torch.randn(2, 8, 3, 3)).shape == (2, 6, 3, 3)


# ---------------------------------------------------------------------------------------- the term
def test_d_pairs_real_images_with_their_own_and_the_next_caption_and_g_scores_its_fakes(tmp_path):
    trainer = _trainer(_cfg(), tmp_path)
    (term,) = (t for t in trainer.terms if isinstance(t, WordDiscriminator))
    real, _, _, text = _batch(trainer)
    with torch.no_grad():
        regions = trainer.damsm.images(real[-1])[0]
        own, shifted = term.logits(regions, text), term.logits(regions[:-1], text.select(slice(1, None)))
    seen = {}
    stats = term.discriminator_update(SimpleNamespace(real=real, text=text, damsm=trainer.damsm),
                                      lambda loss, *args: seen.update(loss=loss, terms=args[-1]))
    assert stats["Wd/real"].item() == pytest.approx(bce(own, 1.0).item(), rel=1e-6)
    assert stats["Wd/wrong"].item() == pytest.approx(bce(shifted, 0.0).item(), rel=1e-6)
    assert seen["loss"].item() == pytest.approx(((stats["Wd/real"] + stats["Wd/wrong"]) / 2).item(), rel=1e-6)
    assert stats["Wd/total"].item() == pytest.approx(seen["loss"].item())
    # G: the fakes with their own captions as matching; the gradient reaches the images through the frozen encoder
    fakes = (real[-1] * 0.5).requires_grad_(True)
    loss, logged = term.generator_loss(SimpleNamespace(fakes=[fakes], text=text, damsm=trainer.damsm))
    with torch.no_grad():
        expected = bce(term.logits(trainer.damsm.images(fakes)[0], text), 1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and logged == {"G/word_d": loss.detach()}
    loss.backward()
    assert fakes.grad is not None and fakes.grad.abs().sum() > 0
    assert all(p.grad is None for p in trainer.damsm.encoder.image_encoder.parameters())


def test_training_steps_move_the_head_and_the_generator_and_resume_exactly(tmp_path):
    on = _cfg(0.5)
    trainer = _trainer(on, tmp_path / "a")
    head = trainer.term_modules["W"]
    before = [p.detach().clone() for p in head.parameters()]
    generator = [p.detach().clone() for p in trainer.G.parameters()]
    frozen = [p.detach().clone() for p in trainer.damsm.encoder.image_encoder.parameters()]
    batch = _batch(trainer)
    stats = trainer.train_step(*batch)
    assert {"Wd/real", "Wd/wrong", "Wd/total", "G/word_d"} <= set(stats)
    t = on.train
    rest = stats["G/adversarial"] + t.kl_coef * stats["KL"] + t.color_coef * stats["color"]
    assert stats["G/total"].item() == pytest.approx((rest + 0.5 * stats["G/word_d"]).item(), rel=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))  # W's own optimiser
    assert any(not torch.equal(a, b) for a, b in zip(generator, trainer.G.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen, trainer.damsm.encoder.image_encoder.parameters(), strict=True))

    tensors, meta = trainer.state_tensors()
    assert {"W.project.weight", "W.scale", "W.bias"} <= tensors.keys() and any(k.startswith("opt_W.") for k in tensors)
    path = save_checkpoint(tmp_path / "ckpt", trainer.step, tensors, {**meta, "config": on.model_dump(mode="json")}, 2)
    resumed = _trainer(on, tmp_path / "b")
    resumed.load_state(load_checkpoint(path))
    for _ in range(2):
        a, b = trainer.train_step(*batch), resumed.train_step(*batch)
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}


@pytest.mark.parametrize("family", [{"model.arch": "attngan"}, {"model.arch": "stackgan1", "model.stage_num": 1}])
def test_every_family_can_use_it(family, tmp_path):
    cfg = _cfg(1.0, **family)
    trainer = _trainer(cfg, tmp_path)
    real, _, sentence, text = _batch(trainer)
    stats = trainer.train_step(real, [], sentence, text)  # these families' steps have no wrong images
    assert torch.isfinite(torch.stack([stats["Wd/total"], stats["G/word_d"]])).all()


def test_off_by_default_and_in_every_preset(tmp_path):
    assert all(resolve_config(preset).train.d_word_coef == 0 for preset in PRESETS)
    trainer = Trainer(_cfg(0.0), tmp_path)
    assert not any(isinstance(t, WordDiscriminator) for t in trainer.terms) and "W" not in trainer.term_modules
    assert not any(k.startswith(("W.", "opt_W")) for k in trainer.state_tensors()[0])


def test_config_refuses_what_it_cannot_score():
    with pytest.raises(ConfigError, match="d_word_coef"):
        _cfg(1.0, **{"train.embeddings": "char-cnn-rnn", "model.text_dim": 1024})
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        _cfg(1.0, **{"train.batch_size": 1})


def test_init_from_a_model_without_it_starts_a_fresh_head(tiny_run, tmp_path):
    from stackgan2.training.weights import load_initial_weights

    weights = load_initial_weights(tiny_run)
    assert not any(k.startswith("W.") for k in load_checkpoint(next((tiny_run / "checkpoints").glob("*.safetensors"))).tensors)
    trainer = _trainer(_cfg(1.0), tmp_path)
    trainer.start_from(weights)
    assert all(torch.equal(trainer.G.state_dict()[k], v) for k, v in weights.states["G"].items())
    head = trainer.term_modules["W"]
    assert torch.equal(head.project.weight[:, :, 0, 0], torch.eye(head.project.weight.shape[0]))
    assert "Wd/total" in trainer.train_step(*_batch(trainer))


# ----------------------------------------------------------------------------------------- the CLI
def test_the_flag_sets_it(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run",
                                      "--d-word-coef", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[: result.output.rindex("}") + 1])["train"]["d_word_coef"] == 0.5


@pytest.mark.parametrize("first, then", [(["--d-word-coef", "1"], ["--d-word-coef", "0"]), ([], ["--d-word-coef", "1"])])
def test_switching_it_on_or_off_at_resume_is_one_usage_error(first, then, tmp_path, text_encoder_dir):
    from typer.testing import CliRunner

    run = tmp_path / "run"
    common = ["--quiet", "train", "--preset", "tiny", "--device", "cpu", "--text-encoder", str(text_encoder_dir),
              "--run-dir", str(run), "--checkpoint-every", "2"]
    result = CliRunner().invoke(app, [*common, *first, "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*common, *then, "--max-steps", "4", "--resume"])
    assert result.exit_code == 2, result.output
    assert "was trained with" in result.output and "--d-word-coef" in result.output
    assert "--init-from" in result.output and "Traceback" not in result.output
    assert [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()][-1] == 2
