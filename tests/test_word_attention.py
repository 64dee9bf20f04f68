"""StackGAN++ with word attention in the generator (``model.g_word_attention``, ``--g-word-attention``)."""

from __future__ import annotations

import pytest
import torch

from stackgan2.config import resolve_config
from stackgan2.errors import ConfigError
from stackgan2.models import build_generator
from stackgan2.models.blocks import WordAffine
from stackgan2.models.stackgan2 import Generator


def _config(**update):
    return resolve_config("tiny").model.model_copy(update={"g_word_attention": True, **update})


def _inputs(cfg, batch=3, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, cfg.z_dim, generator=g)
    sentence = torch.randn(batch, cfg.text_dim, generator=g)
    words = torch.randn(batch, cfg.text_dim, length, generator=g)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[0, 3:] = True  # caption 0 has three words, the others five
    return z, sentence, words, mask


def test_word_fusion_starts_as_the_identity_and_reports_its_maps():
    cfg = _config()
    torch.manual_seed(0)
    plain = Generator(cfg.model_copy(update={"g_word_attention": False})).eval()
    attending = Generator(cfg).eval()
    missing, unexpected = attending.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".word_fusion." in key for key in missing)
    z, sentence, words, mask = _inputs(cfg)
    with torch.no_grad():
        eps = torch.randn(3, cfg.c_dim)
        expected, _, _ = plain(z, sentence, eps)
        images, _, _, maps = attending(z, sentence, eps, words=words, mask=mask, return_attention=True)
    for a, b in zip(images, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # the last two blocks of the 8 px init stage (4 -> 8 px: one up-block at base 8) and each refine stage
    sizes = [m.shape[-1] for m in maps]
    assert sizes == [8, 16, 32] and all(m.shape[:2] == (3, 5) for m in maps)
    for m in maps:
        assert m[0, 3:].abs().max() == 0  # masked words get no attention
        assert torch.allclose(m.sum(dim=1), torch.ones_like(m[:, 0]), atol=1e-5)


def test_official_weight_init_keeps_the_identity_start():
    """The trainer's ``init_weights`` (orthogonal convs) must leave every WordAffine at the identity, as it
    leaves TextAffine (it once overwrote their 1x1 convs, so `--g-word-attention` started from noise)."""
    from stackgan2.models import init_weights

    torch.manual_seed(0)
    G = build_generator(_config())
    init_weights(G)
    affines = [m for m in G.modules() if isinstance(m, WordAffine)]
    assert affines
    for m in affines:
        assert m.gamma.weight.abs().max() == 0 and m.beta.weight.abs().max() == 0
        assert torch.all(m.gamma.bias == 1) and torch.all(m.beta.bias == 0)


def test_the_words_steer_the_image_pixel_by_pixel():
    cfg = _config()
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    for module in G.modules():
        if isinstance(module, WordAffine):
            torch.nn.init.normal_(module.gamma.weight, std=0.5)
            torch.nn.init.normal_(module.beta.weight, std=0.5)
    z, sentence, words, mask = _inputs(cfg)
    eps = torch.zeros(3, cfg.c_dim)
    with torch.no_grad():
        base = G(z, sentence, eps, words=words, mask=mask)[0][-1]
        other_words = words.clone()
        other_words[:, :, 1] += 3.0
        changed = G(z, sentence, eps, words=other_words, mask=mask)[0][-1]
        masked_only = words.clone()
        masked_only[0, :, 3:] = 100.0  # only caption 0's masked slots change
        same = G(z, sentence, eps, words=masked_only, mask=mask)[0][-1]
    assert (changed - base).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image follows its words
    assert torch.allclose(same, base, atol=1e-6)
    with pytest.raises(ValueError, match="g_word_attention"):
        G(z, sentence)


def test_word_attention_is_a_stackgan2_option_on_our_own_words():
    assert not resolve_config("toy").model.g_word_attention and not resolve_config("birds").model.g_word_attention
    assert resolve_config("toy", overrides={"model.g_word_attention": True}).model.attends_to_words
    with pytest.raises(ConfigError, match="g_word_attention"):
        resolve_config("attngan-toy", overrides={"model.g_word_attention": True})
    with pytest.raises(ConfigError, match="train.embeddings must be damsm"):
        resolve_config("tiny", overrides={"model.g_word_attention": True, "train.embeddings": "char-cnn-rnn"})
