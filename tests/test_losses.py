import math

import pytest
import torch
from torch import nn

from stackgan2.losses import (
    bce,
    color_consistency_loss,
    damsm_loss,
    discriminator_loss,
    generator_adversarial_loss,
    kl_loss,
    matching_aware_gradient_penalty,
    mean_covariance,
)


def _official_bce(logits, target):
    """The official code's formulation: sigmoid inside D, then nn.BCELoss."""
    return nn.BCELoss()(torch.sigmoid(logits), torch.full_like(logits, target))


def test_bce_matches_sigmoid_plus_bceloss():
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0])
    for target in (0.0, 1.0):
        assert torch.allclose(bce(logits, target), _official_bce(logits, target), atol=1e-6)


def test_bce_by_hand():
    # BCE(0, 1) = log 2; BCE(x, 0) = log(1 + e^x)
    assert bce(torch.tensor([0.0]), 1.0).item() == pytest.approx(math.log(2))
    assert bce(torch.tensor([2.0]), 0.0).item() == pytest.approx(math.log(1 + math.e**2))


def test_discriminator_loss_with_uncond_head_is_official_plain_sum():
    real = (torch.tensor([0.0]), torch.tensor([0.0]))
    wrong = (torch.tensor([2.0]), torch.tensor([-1.0]))
    fake = (torch.tensor([1.0]), torch.tensor([3.0]))
    total, terms = discriminator_loss(real, wrong, fake, uncond_coef=1.0)
    sp = lambda x: math.log(1 + math.exp(x))  # noqa: E731  BCE(x, 0) = softplus(x), BCE(x, 1) = softplus(-x)
    expected_real = sp(0) + sp(0)
    expected_wrong = sp(2.0) + sp(1.0)  # wrong image is "real" for the unconditional head
    expected_fake = sp(1.0) + sp(3.0)
    assert total.item() == pytest.approx(expected_real + expected_wrong + expected_fake, rel=1e-6)
    assert terms["wrong"].item() == pytest.approx(expected_wrong, rel=1e-6)
    official = (
        _official_bce(real[0], 1) + _official_bce(real[1], 1)
        + _official_bce(wrong[0], 0) + _official_bce(wrong[1], 1)
        + _official_bce(fake[0], 0) + _official_bce(fake[1], 0)
    )
    assert total.item() == pytest.approx(official.item(), rel=1e-5)


def test_discriminator_loss_without_uncond_head_halves_wrong_and_fake():
    real = (torch.tensor([0.5, -0.5]), torch.tensor([9.0, 9.0]))
    wrong = (torch.tensor([1.0, 0.0]), torch.tensor([9.0, 9.0]))
    fake = (torch.tensor([-1.0, 2.0]), torch.tensor([9.0, 9.0]))
    total, _ = discriminator_loss(real, wrong, fake, uncond_coef=0.0)
    expected = _official_bce(real[0], 1) + 0.5 * (_official_bce(wrong[0], 0) + _official_bce(fake[0], 0))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_generator_adversarial_loss_weights_uncond():
    fake = (torch.tensor([0.0, 1.0]), torch.tensor([-2.0, 0.5]))
    total, terms = generator_adversarial_loss(fake, uncond_coef=0.5)
    expected = _official_bce(fake[0], 1) + 0.5 * _official_bce(fake[1], 1)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["cond"].item() == pytest.approx(_official_bce(fake[0], 1).item(), rel=1e-5)


def test_kl_loss_is_a_mean_and_zero_at_standard_normal():
    assert kl_loss(torch.zeros(4, 3), torch.zeros(4, 3)).item() == pytest.approx(0.0)
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # per element: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) -> [0.5, 0.5*(1 - ln 2)], mean over 2 elements
    expected = (0.5 + 0.5 * (1 - math.log(2))) / 2
    assert kl_loss(mu, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_mean_covariance_by_hand():
    image = torch.zeros(1, 3, 1, 2)
    image[0, 0] = torch.tensor([[1.0, 3.0]])  # mean 2, var 1
    image[0, 1] = torch.tensor([[0.0, 2.0]])  # mean 1, var 1, perfectly correlated with channel 0
    mu, cov = mean_covariance(image)
    assert torch.allclose(mu, torch.tensor([[2.0, 1.0, 0.0]]))
    assert torch.allclose(cov[0], torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))


def test_color_consistency_zero_for_consistent_branches_and_detaches_lower():
    base = torch.rand(2, 3, 4, 4)
    up = torch.nn.functional.interpolate(base, scale_factor=2, mode="nearest")  # same colour statistics
    assert color_consistency_loss([base, up]).item() == pytest.approx(0.0, abs=1e-7)
    lower = torch.rand(2, 3, 4, 4, requires_grad=True)
    upper = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = color_consistency_loss([lower, upper])
    assert loss.item() > 0
    loss.backward()
    assert lower.grad is None and upper.grad is not None
    mu_u, cov_u = mean_covariance(upper.detach())
    mu_l, cov_l = mean_covariance(lower.detach())
    expected = ((mu_u - mu_l) ** 2).mean() + 5 * ((cov_u - cov_l) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert color_consistency_loss([lower]).item() == 0.0


def test_hinge_losses_by_hand():
    real = (torch.tensor([0.5, 2.0]), torch.tensor([-1.0, 3.0]))
    wrong = (torch.tensor([-2.0, 0.0]), torch.tensor([0.0, 0.0]))
    fake = (torch.tensor([0.5, -3.0]), torch.tensor([1.0, -1.0]))
    total, terms = discriminator_loss(real, wrong, fake, uncond_coef=1.0, kind="hinge")
    # relu(1 - x) for "real" targets, relu(1 + x) for "fake" targets, means over the batch
    expected_real = (0.5 + 0.0) / 2 + (2.0 + 0.0) / 2
    expected_wrong = (0.0 + 1.0) / 2 + (1.0 + 1.0) / 2  # unconditional head: a wrong image is real
    expected_fake = (1.5 + 0.0) / 2 + (2.0 + 0.0) / 2
    assert terms["real"].item() == pytest.approx(expected_real)
    assert terms["wrong"].item() == pytest.approx(expected_wrong)
    assert total.item() == pytest.approx(expected_real + expected_wrong + expected_fake)
    g_total, g_terms = generator_adversarial_loss(fake, uncond_coef=0.5, kind="hinge")
    assert g_terms["cond"].item() == pytest.approx(1.25)  # -mean(0.5, -3.0)
    assert g_total.item() == pytest.approx(1.25 + 0.5 * 0.0)


def test_matching_aware_gradient_penalty_by_hand():
    # logits = <x, a> + <c, b> per sample: the gradient is (a, b) for every sample, so the penalty is
    # coef * (|a|^2 + |b|^2)^(p/2).
    a = torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)  # D's "weights"
    b = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    images = torch.randn(4, 1, 1, 2, requires_grad=True)
    condition = torch.randn(4, 3, requires_grad=True)
    logits = (images * a).flatten(1).sum(1) + condition @ b
    gp = matching_aware_gradient_penalty(logits, images, condition, coef=2.0, power=6.0)
    assert gp.item() == pytest.approx(2.0 * 10.0**3)
    gp.backward()  # part of D's loss: it keeps the graph down to D's weights
    # d/da of 2 (|a|^2 + |b|^2)^3 = 12 (|a|^2 + |b|^2)^2 a
    assert torch.allclose(a.grad, 12 * 100.0 * a.detach())
def _damsm_batch():
    """Two images with one 1x1 region each and two one-word captions padded to T = 2 with garbage."""
    regions = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    image_global = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    words = torch.tensor([[[1.0, 5.0], [0.0, -3.0]], [[1.0, 5.0], [1.0, -3.0]]])  # (B, D, T); column 1 is padding
    sentence = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return regions, image_global, words, sentence, torch.tensor([1, 1])


def test_damsm_loss_matches_hand_computation():
    regions, image_global, words, sentence, lengths = _damsm_batch()
    total, terms = damsm_loss(regions, image_global, words, sentence, lengths, torch.tensor([0, 1]), (4.0, 5.0, 10.0))

    def softplus(x):
        return math.log1p(math.exp(x))

    a = 1 / math.sqrt(2)
    # One word, one region: R(Q_j, D_i) = gamma2 cos(region_i, word_j); scores[image, caption] = gamma3 * that
    # = 50 [[1, a], [0, a]]. Cross-entropy of the diagonal over rows (image -> caption) and columns.
    rows = (softplus(50 * a - 50) + softplus(-50 * a)) / 2
    columns = (softplus(-50) + math.log(2)) / 2
    word = rows + columns
    # Sentence: gamma3 cos(global_i, sentence_j) = 10 [[1, 0], [a, a]].
    sentence_rows = (softplus(-10) + math.log(2)) / 2
    sentence_columns = (softplus(10 * a - 10) + softplus(-10 * a)) / 2
    sent = sentence_rows + sentence_columns
    assert terms["word"].item() == pytest.approx(word, rel=1e-5)
    assert terms["sentence"].item() == pytest.approx(sent, rel=1e-5)
    assert total.item() == pytest.approx(word + sent, rel=1e-5)


def test_damsm_loss_masks_same_class_negatives_and_reaches_the_images():
    regions, image_global, words, sentence, lengths = _damsm_batch()
    regions.requires_grad_(True)
    total, _ = damsm_loss(regions, image_global, words, sentence, lengths, torch.tensor([3, 3]))
    assert total.item() == pytest.approx(0.0, abs=1e-6)  # both items share a class: no negatives remain
    different, _ = damsm_loss(regions, image_global, words, sentence, lengths, torch.tensor([0, 1]))
    different.backward()
    assert regions.grad.abs().sum() > 0
