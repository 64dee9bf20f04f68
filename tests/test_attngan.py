"""AttnGAN: official parameter counts, word attention and its masking, the refine stages' inputs, the
discriminators' condition and the D/G loss weights (taoxugit/AttnGAN model.py, GlobalAttention.py,
miscc/losses.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stackgan2.config import resolve_config
from stackgan2.losses import generator_adversarial_loss, stackgan1_discriminator_loss
from stackgan2.models import build_discriminators, build_generator, count_parameters
from stackgan2.models.attngan import AttnGANGenerator
from stackgan2.models.blocks import WordAttention
from stackgan2.text import TextEncoder


@pytest.mark.parametrize(
    ("preset", "generator", "discriminators"),
    [
        ("attngan-birds", 7_084_592, [6_313_730, 19_424_002, 71_858_946]),
        ("attngan-coco", 13_811_456, [13_304_450, 42_800_258, 160_774_274]),
    ],
)
def test_parameter_counts_match_official(preset, generator, discriminators):
    cfg = resolve_config(preset)
    with torch.device("meta"):
        G, Ds = build_generator(cfg.model), build_discriminators(cfg.model)
    assert isinstance(G, AttnGANGenerator)
    assert count_parameters(G) == generator
    assert [count_parameters(D) for D in Ds] == discriminators
    if preset == "attngan-birds":  # RNN_ENCODER at the official 5,450-word CUB vocabulary
        text = cfg.text
        assert count_parameters(TextEncoder(5450, text.word_dim, text.dim)) == 2_075_320


def test_presets_carry_the_official_training_recipe():
    birds, coco = resolve_config("attngan-birds"), resolve_config("attngan-coco")
    for cfg, lam, batch in ((birds, 5.0, 20), (coco, 50.0, 14)):
        t = cfg.train
        assert (t.damsm_coef, t.batch_size, t.kl_coef, t.color_coef, t.uncond_coef) == (lam, batch, 1.0, 0.0, 1.0)
        assert (cfg.text.gamma1, cfg.text.gamma2, cfg.text.gamma3) == (4.0, 5.0, 10.0)
        assert not cfg.model.attention_official_mask
    assert (birds.text.max_words, coco.text.max_words) == (18, 12)
    assert resolve_config("attngan-toy").model.arch == "attngan"


def _attention(official: bool) -> WordAttention:
    torch.manual_seed(0)
    return WordAttention(channels=4, word_dim=6, official_mask_order=official)


def test_attention_is_a_softmax_over_projected_words():
    attention = _attention(False)
    hidden, words = torch.randn(1, 4, 2, 3), torch.randn(1, 6, 5)
    context, maps = attention(hidden, words)
    source = attention.project.weight[:, :, 0, 0] @ words[0]                 # (C, T): 1x1 projection, no bias
    logits = hidden[0].flatten(1).t() @ source                                 # (HW, T) plain dot products
    expected_maps = torch.softmax(logits, dim=1)                               # over the words of each pixel
    assert torch.allclose(maps[0].flatten(1).t(), expected_maps, atol=1e-6)
    assert torch.allclose(context[0].flatten(1), source @ expected_maps.t(), atol=1e-5)
    assert maps.shape == (1, 5, 2, 3) and context.shape == hidden.shape


def test_masking_keeps_each_pixel_on_its_own_captions_words_unlike_the_official_order():
    """Two captions of 1 and 4 words (T = 4): aligned masking puts no weight on padding; the official
    mask.repeat(HW, 1) gives most pixels the other caption's mask."""
    hidden, words = torch.randn(2, 4, 3, 3), torch.randn(2, 6, 4)
    mask = torch.tensor([[False, True, True, True], [False, False, False, False]])
    _, aligned = _attention(False)(hidden, words, mask)
    _, official = _attention(True)(hidden, words, mask)
    padding_mass = lambda maps: maps[0, 1:].sum(dim=0)  # caption 0's attention on its padding, per pixel  # noqa: E731
    assert torch.allclose(aligned[0, 0], torch.ones(3, 3))  # a one-word caption: all attention on its word
    assert padding_mass(aligned).max() == 0
    assert padding_mass(official).max() > 0.2  # pixels of caption 0 attend to its padding slots
    # ...and pixels of caption 1 lose real words to caption 0's mask
    assert (official[1, 1:].sum(dim=0) == 0).any()
    assert torch.allclose(aligned.sum(dim=1), torch.ones(2, 3, 3)) and torch.allclose(official.sum(dim=1), torch.ones(2, 3, 3))


def test_unknown_words_get_no_attention_and_an_all_unknown_caption_gets_zero_context():
    hidden, words = torch.randn(2, 4, 2, 2, requires_grad=True), torch.randn(2, 6, 3)
    mask = torch.tensor([[False, True, False], [True, True, True]])  # word 1 unknown; caption 1 all unknown
    context, maps = _attention(False)(hidden, words, mask)
    assert maps[0, 1].abs().max() == 0 and torch.allclose(maps[0].sum(dim=0), torch.ones(2, 2))
    assert maps[1].abs().max() == 0 and context[1].abs().max() == 0
    context.sum().backward()
    assert torch.isfinite(hidden.grad).all()


def _pinned_init_images(G, cfg, sentence, eps, words):
    """Images with the init stage's output replaced by a fixed map: what the refine stages make of it."""
    fixed = torch.randn(2, *G.init_stage(torch.zeros(2, cfg.z_dim + cfg.c_dim)).shape[1:], generator=torch.Generator().manual_seed(1))
    handle = G.init_stage.register_forward_hook(lambda *_: fixed)
    try:
        kwargs = {"words": words, "mask": torch.zeros(2, words.shape[2], dtype=torch.bool)} if words is not None else {}
        return G(torch.zeros(2, cfg.z_dim), sentence, eps, **kwargs)[0]
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ["attngan", "stackgan2"])
def test_attngan_refine_stages_ignore_the_sentence_code(arch):
    cfg = resolve_config("tiny", overrides={"model.arch": arch}).model
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    words = torch.randn(2, cfg.text_dim, 5) if arch == "attngan" else None
    first = _pinned_init_images(G, cfg, torch.randn(2, cfg.text_dim), torch.randn(2, cfg.c_dim), words)
    second = _pinned_init_images(G, cfg, torch.randn(2, cfg.text_dim), torch.randn(2, cfg.c_dim), words)
    same = all(torch.equal(a, b) for a, b in zip(first[1:], second[1:], strict=True))
    assert same == (arch == "attngan")  # StackGAN++ refine stages do read the code (the test can fail)


def test_attngan_generator_needs_words():
    cfg = resolve_config("tiny", overrides={"model.arch": "attngan"}).model
    G = build_generator(cfg)
    with pytest.raises(ValueError, match="word features"):
        G(torch.zeros(2, cfg.z_dim), torch.zeros(2, cfg.text_dim))


def _official_bce(logits, target):
    return nn.BCELoss()(torch.sigmoid(logits), torch.full_like(logits, target))


def test_discriminator_loss_weights_match_official_on_fixed_logits():
    """AttnGAN's discriminator_loss has StackGAN v1 Stage II's weights; the trainer uses that one function."""
    real = (torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.5, 0.1, -0.4]))
    fake = (torch.tensor([-0.7, 0.9, 0.2]), torch.tensor([0.4, -2.0, 1.1]))
    wrong = torch.tensor([0.8, -0.3])
    total, terms = stackgan1_discriminator_loss(real[0], wrong, fake[0], real[1], fake[1])
    b = _official_bce
    # errD = ((real_errD + cond_real_errD) / 2. + (fake_errD + cond_fake_errD + cond_wrong_errD) / 3.)
    expected = (b(real[1], 1) + b(real[0], 1)) / 2 + (b(fake[1], 0) + b(fake[0], 0) + b(wrong, 0)) / 3
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["wrong"].item() == pytest.approx(b(wrong, 0).item(), rel=1e-5)
    # G: BCE(cond, 1) + BCE(uncond, 1), summed over stages by the trainer (official generator_loss)
    g_total, _ = generator_adversarial_loss(fake, 1.0)
    assert g_total.item() == pytest.approx((b(fake[0], 1) + b(fake[1], 1)).item(), rel=1e-5)


def test_info_lists_the_attention_modules(runner):
    from stackgan2.cli.main import app

    result = runner.invoke(app, ["info", "--preset", "attngan-birds"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "AttnGAN, 3 stages (attngan-birds preset)" in result.output
    assert result.output.count("(WordAttention)") == 2 and "AttentionRefineStage" in result.output
    assert "7,084,592" in result.output and "71,858,946" in result.output
