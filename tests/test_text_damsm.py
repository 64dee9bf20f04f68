"""DAMSM losses (hand-computed cases, masking, padding) and the two encoders' shapes and backbones."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from stackgan2.config import TextConfig
from stackgan2.errors import CheckpointError
from stackgan2.text import ImageEncoder, PromptEncoder, TextEncoder, Vocabulary
from stackgan2.text.damsm import (
    regression_loss,
    same_class_negatives,
    sentence_loss,
    word_loss,
    word_region_scores,
)


def test_sentence_loss_matches_hand_computation() -> None:
    eye = torch.eye(2)
    # scores = gamma3 * I; each direction: mean over rows of -log(e^10 / (e^10 + e^0))
    expected = 2 * math.log1p(math.exp(-10))
    assert sentence_loss(eye, eye, torch.tensor([0, 1]), gamma3=10.0).item() == pytest.approx(expected, rel=1e-3)
    # same class everywhere: no negatives remain, so nothing to contrast
    assert sentence_loss(eye, eye, torch.tensor([3, 3])).item() == pytest.approx(0.0, abs=1e-7)


def test_same_class_pairs_are_not_negatives() -> None:
    assert same_class_negatives(torch.tensor([0, 1, 0])).tolist() == [
        [False, False, True],
        [False, False, False],
        [True, False, False],
    ]
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    captions = images.clone()
    # image 2 is almost identical to image 0: a harsh negative, unless they share a class
    different = sentence_loss(images, captions, torch.tensor([0, 1, 2]))
    same = sentence_loss(images, captions, torch.tensor([0, 1, 0]))
    assert same.item() < 0.01 < different.item()


def test_word_scores_single_word_single_region_is_scaled_cosine() -> None:
    word = torch.tensor([[[1.0], [2.0], [0.5]]])        # (1, D=3, T=1)
    region = torch.tensor([[[[2.0]], [[1.0]], [[0.0]]]])  # (1, D=3, 1, 1)
    cosine = torch.nn.functional.cosine_similarity(word[0, :, 0], region[0, :, 0, 0], dim=0)
    score = word_region_scores(region, word, torch.tensor([1]), gamma1=4.0, gamma2=5.0)
    assert score.shape == (1, 1)
    assert score.item() == pytest.approx(5.0 * cosine.item(), rel=1e-5)


def attngan_word_scores(regions, words, lengths, gamma1, gamma2):
    """AttnGAN's func_attention + words_loss loop, transcribed literally (one caption at a time)."""
    batch, ndf = regions.shape[:2]
    context = regions.reshape(batch, ndf, -1)
    columns = []
    for i in range(len(lengths)):
        word = words[i, :, : lengths[i]].unsqueeze(0).repeat(batch, 1, 1)      # B x D x n
        attn = torch.bmm(context.transpose(1, 2), word)                        # B x R x n
        attn = torch.softmax(attn, dim=2).transpose(1, 2)                      # over words
        attn = torch.softmax(attn * gamma1, dim=2)                             # over regions
        weighted = torch.bmm(context, attn.transpose(1, 2))                    # B x D x n
        row_sim = torch.nn.functional.cosine_similarity(word, weighted, dim=1)  # B x n
        columns.append(torch.log(torch.exp(row_sim * gamma2).sum(dim=1, keepdim=True)))
    return torch.cat(columns, dim=1)                                           # images x captions


def test_word_scores_match_the_attngan_loop() -> None:
    torch.manual_seed(1)
    regions, words, lengths = torch.randn(4, 6, 3, 3), torch.randn(4, 6, 7), torch.tensor([7, 3, 1, 5])
    expected = attngan_word_scores(regions, words, lengths, gamma1=4.0, gamma2=5.0)
    assert torch.allclose(word_region_scores(regions, words, lengths, 4.0, 5.0), expected, atol=1e-4)


def test_word_loss_gradients_stay_finite_for_zero_features() -> None:
    regions = torch.randn(3, 8, 2, 2)
    regions[1] = 0  # an image whose region features are all zero
    words = torch.randn(3, 8, 5)
    regions.requires_grad_()
    words.requires_grad_()
    word_loss(regions, words, torch.tensor([3, 5, 1]), torch.tensor([0, 1, 2])).backward()
    assert torch.isfinite(regions.grad).all() and torch.isfinite(words.grad).all()


def test_word_scores_ignore_padding() -> None:
    torch.manual_seed(0)
    regions, words = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 5)
    lengths = torch.tensor([5, 2, 3])
    padded = torch.cat([words, torch.randn(3, 8, 4)], dim=2)  # garbage beyond every length
    for i, n in enumerate(lengths.tolist()):
        words[i, :, n:] = torch.randn(8, 5 - n)
    scores = word_region_scores(regions, words, lengths)
    assert scores.shape == (3, 3)
    assert torch.allclose(scores, word_region_scores(regions, padded, lengths), atol=1e-5)
    loss = word_loss(regions, words, lengths, torch.tensor([0, 1, 2]))
    assert torch.isfinite(loss)


def test_regression_loss_is_zero_only_for_a_perfect_fit() -> None:
    target = torch.randn(4, 16)
    assert regression_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_loss(2 * target, target).item() > 0  # right direction, wrong length: MSE catches it


def test_text_encoder_shapes_and_padding() -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=10, word_dim=6, dim=8).eval()
    ids = torch.tensor([[2, 3, 4, 0, 0], [5, 6, 0, 0, 0]])
    words, sentence = encoder(ids, torch.tensor([3, 2]))
    assert words.shape == (2, 8, 5) and sentence.shape == (2, 8)
    assert torch.all(words[0, :, 3:] == 0) and torch.all(words[1, :, 2:] == 0)
    # the same caption alone, without padding, gives the same features
    alone_words, alone_sentence = encoder(ids[1:, :2], torch.tensor([2]))
    assert torch.allclose(alone_sentence, sentence[1:], atol=1e-6)
    assert torch.allclose(alone_words, words[1:, :, :2], atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        TextEncoder(10, 6, dim=7)


@pytest.mark.parametrize("size, grid", [(16, 2), (64, 8)])
def test_small_cnn_image_encoder_shapes(size: int, grid: int) -> None:
    encoder = ImageEncoder(dim=12, width=4)
    regions, global_feature = encoder(torch.rand(3, 3, size, size) * 2 - 1)
    assert regions.shape == (3, 12, grid, grid) and global_feature.shape == (3, 12)
    assert all(p.requires_grad for p in encoder.parameters())


def test_mobilenet_backbone_loads_local_weights_and_stays_frozen(tmp_path) -> None:
    from torchvision.models import mobilenet_v2

    state = mobilenet_v2(weights=None).state_dict()
    weights = tmp_path / "mobilenet_v2.pth"
    torch.save(state, weights)
    encoder = ImageEncoder(dim=16, backbone="mobilenet_v2", backbone_weights=weights).train()
    regions, global_feature = encoder(torch.zeros(2, 3, 32, 32))
    assert regions.shape == (2, 16, 14, 14) and global_feature.shape == (2, 16)
    assert torch.equal(encoder.region_net[0][0].weight, state["features.0.0.weight"])
    assert not encoder.region_net.training  # frozen BatchNorm statistics
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"region_proj.weight", "region_proj.bias", "global_proj.weight", "global_proj.bias"}
    # a saved encoder directory rebuilds the backbone without the original weights file
    vocab = Vocabulary.build(["a red bird"])
    text = TextConfig(dim=16, word_dim=4, image_width=4)
    PromptEncoder(vocab, TextEncoder(len(vocab), 4, 16), text, image_encoder=encoder).save(tmp_path / "enc")
    weights.unlink()
    loaded = PromptEncoder.load(tmp_path / "enc").image_encoder
    assert loaded.backbone == "mobilenet_v2"
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(images)[1], encoder.eval()(images)[1], atol=1e-5)


def test_inception_backbone_gives_the_attngan_17x17_grid(tmp_path) -> None:
    from torchvision.models import inception_v3

    weights = tmp_path / "inception.safetensors"
    save_file(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), str(weights))
    encoder = ImageEncoder(dim=8, backbone="inception_v3", backbone_weights=weights).eval()
    with torch.no_grad():
        regions, global_feature = encoder(torch.zeros(1, 3, 64, 64))
    assert regions.shape == (1, 8, 17, 17) and global_feature.shape == (1, 8)


def test_wrong_backbone_weights_are_a_checkpoint_error(tmp_path) -> None:
    weights = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(CheckpointError, match="mobilenet_v2"):
        ImageEncoder(backbone="mobilenet_v2", backbone_weights=weights)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        ImageEncoder(backbone="mobilenet_v2", backbone_weights=tmp_path / "garbage.pth")
