"""StackGAN++ losses as pure functions of tensors.

The defaults reproduce what the official hanzhanggit/StackGAN-v2 ``code/trainer.py`` computes
(``train_Dnet`` / ``train_Gnet``, ``KL_loss``, ``compute_mean_covariance``), which differs from the
paper's equations in two places: the discriminator also sees mismatched ("wrong") real images, and
with the unconditional head on, the real / wrong / fake terms are summed without the paper's
halving. ``damsm_loss`` is AttnGAN's DAMSM generator term (taoxugit/AttnGAN ``miscc/losses.py``), usable by
every family through ``train.damsm_coef``. Sigmoid + ``BCELoss`` (official) is replaced by the numerically safe
``binary_cross_entropy_with_logits``; tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stackgan2.text.damsm import sentence_loss, word_loss

Logits = tuple[Tensor, Tensor]  # (conditional logits, unconditional logits), each (B,)


def bce(logits: Tensor, target: float) -> Tensor:
    """Mean binary cross-entropy of ``logits`` against a constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def hinge(logits: Tensor, target: float) -> Tensor:
    """D's hinge term: mean(relu(1 - x)) for target 1, mean(relu(1 + x)) for target 0 (BigGAN-PyTorch
    ``losses.py`` ``loss_hinge_dis``; DF-GAN and XMC-GAN use the same)."""
    return F.relu(1.0 - logits).mean() if target == 1.0 else F.relu(1.0 + logits).mean()


LOSSES = {"bce": bce, "hinge": hinge}


def discriminator_loss(
    real: Logits, wrong: Logits, fake: Logits, uncond_coef: float, kind: str = "bce"
) -> tuple[Tensor, dict[str, Tensor]]:
    """One stage's D loss from three separate forward passes (official ``train_Dnet``).

    With u = uncond_coef > 0:
        [BCE(real_c, 1) + u BCE(real_u, 1)] + [BCE(wrong_c, 0) + u BCE(wrong_u, 1)] + [BCE(fake_c, 0) + u BCE(fake_u, 0)]
    (a mismatched real image is still "real" for the unconditional head). With u = 0:
        BCE(real_c, 1) + 0.5 (BCE(wrong_c, 0) + BCE(fake_c, 0)).
    ``kind="hinge"`` puts the hinge terms in place of every BCE term. Returns the total and its terms
    (detached) for logging.
    """
    term = LOSSES[kind]
    real_term, wrong_term, fake_term = term(real[0], 1.0), term(wrong[0], 0.0), term(fake[0], 0.0)
    if uncond_coef > 0:
        real_term = real_term + uncond_coef * term(real[1], 1.0)
        wrong_term = wrong_term + uncond_coef * term(wrong[1], 1.0)
        fake_term = fake_term + uncond_coef * term(fake[1], 0.0)
        total = real_term + wrong_term + fake_term
    else:
        total = real_term + 0.5 * (wrong_term + fake_term)
    terms = {"real": real_term.detach(), "wrong": wrong_term.detach(), "fake": fake_term.detach()}
    return total, terms


def stackgan1_discriminator_loss(
    real_c: Tensor, wrong_c: Tensor, fake_c: Tensor, real_u: Tensor | None = None, fake_u: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """StackGAN v1's D loss (PT ``miscc/utils.py`` ``compute_discriminator_loss``) on conditional logits
    of real, wrong and fake pairs and, with an unconditional head, its logits of real and fake images.

    Without (Stage I): real + (fake + wrong) / 2. With (Stage II):
    (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3. Returns the total and its terms (detached).
    """
    real, wrong, fake = bce(real_c, 1.0), bce(wrong_c, 0.0), bce(fake_c, 0.0)
    terms = {"real": real.detach(), "wrong": wrong.detach(), "fake": fake.detach()}
    if real_u is None or fake_u is None:
        return real + 0.5 * (fake + wrong), terms
    uncond_real, uncond_fake = bce(real_u, 1.0), bce(fake_u, 0.0)
    terms.update({"uncond_real": uncond_real.detach(), "uncond_fake": uncond_fake.detach()})
    return (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3, terms


def generator_adversarial_loss(fake: Logits, uncond_coef: float, kind: str = "bce") -> tuple[Tensor, dict[str, Tensor]]:
    """One stage's G adversarial loss: BCE(cond, 1) + u BCE(uncond, 1) (official ``train_Gnet``);
    with ``kind="hinge"`` -mean(cond) - u mean(uncond) (the hinge G loss, ``loss_hinge_gen``)."""
    def term(logits: Tensor) -> Tensor:
        return bce(logits, 1.0) if kind == "bce" else -logits.mean()

    cond = term(fake[0])
    uncond = term(fake[1]) if uncond_coef > 0 else torch.zeros_like(cond)
    return cond + uncond_coef * uncond, {"cond": cond.detach(), "uncond": uncond.detach()}


def matching_aware_gradient_penalty(logits: Tensor, images: Tensor, condition: Tensor, coef: float,
                                    power: float) -> Tensor:
    """DF-GAN's MA-GP: ``coef * mean(||(d logits / d images, d logits / d condition)||_2 ^ power)``.

    ``logits`` come from a pass over real images and their matching text code, both with
    ``requires_grad``; the penalty keeps the graph (it is part of D's loss). DF-GAN uses coef 2 and
    power 6 (tobran/DF-GAN ``code/lib/modules.py`` ``MA_GP``: ``2.0 * torch.mean(grad_l2norm ** 6)``).
    """
    grad_images, grad_condition = torch.autograd.grad(logits.sum(), (images, condition), create_graph=True)
    grads = torch.cat([grad_images.flatten(1), grad_condition.flatten(1)], dim=1)
    return coef * grads.pow(2).sum(dim=1).sqrt().pow(power).mean()


def kl_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma) || N(0, I)) as the official code computes it: a mean over batch AND dimensions."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def mean_covariance(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image channel mean (B, C) and covariance (B, C, C) over all pixels (official, biased)."""
    batch, channels = images.shape[:2]
    pixels = images.reshape(batch, channels, -1)
    mu = pixels.mean(dim=2)
    centred = pixels - mu[:, :, None]
    return mu, centred @ centred.transpose(1, 2) / centred.shape[2]


def color_consistency_loss(images: Sequence[Tensor]) -> Tensor:
    """Paper eq. 5, unweighted: sum over consecutive branches (i, i-1), branch i-1 detached, of
    MSE(mu_i, mu_{i-1}) + 5 MSE(Sigma_i, Sigma_{i-1}). Multiply by ``color_coef`` (official: 0 for
    birds/flowers, 50 for unconditional datasets). Zero for a single branch."""
    total = images[0].new_zeros(())
    for upper, lower in zip(images[1:], images[:-1], strict=False):
        mu_up, cov_up = mean_covariance(upper)
        mu_low, cov_low = mean_covariance(lower.detach())
        total = total + F.mse_loss(mu_up, mu_low) + 5.0 * F.mse_loss(cov_up, cov_low)
    return total


def damsm_loss(
    regions: Tensor,
    image_global: Tensor,
    words: Tensor,
    sentence: Tensor,
    lengths: Tensor,
    class_ids: Tensor,
    gammas: tuple[float, float, float] = (4.0, 5.0, 10.0),
    negatives: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """AttnGAN's DAMSM generator loss, unweighted: (w_loss0 + w_loss1) + (s_loss0 + s_loss1).

    ``regions`` (B, D, h, w) and ``image_global`` (B, D) are the frozen image encoder's features of
    the generated images, ``words`` (B, D, T), ``sentence`` (B, D) and ``lengths`` (B,) the text
    encoder's features of their captions. Word and sentence matching are scored in both directions
    (image -> caption and caption -> image) with different-item same-class pairs left out of the
    negatives (``stackgan2.text.damsm``); ``gammas`` = (gamma1, gamma2, gamma3), AttnGAN 4 / 5 / 10.
    The official ``generator_loss`` multiplies the sum by LAMBDA (``train.damsm_coef``: 5 birds, 50 COCO).
    Returns the sum and its two terms (detached) for logging.

    ``negatives`` = (regions (N, D, h, w), global (N, D)) of extra images, e.g. generated ones when the
    image encoder itself is trained (``train.damsm_fake_negatives``): in the caption -> image direction of
    both the word and the sentence loss, each caption must rank its own image above every one of them too.
    """
    gamma1, gamma2, gamma3 = gammas
    negative_regions, negative_global = negatives if negatives is not None else (None, None)
    word = word_loss(regions, words, lengths, class_ids, gamma1, gamma2, gamma3, negative_regions)
    sentence_term = sentence_loss(image_global, sentence, class_ids, gamma3, negative_global)
    return word + sentence_term, {"word": word.detach(), "sentence": sentence_term.detach()}
