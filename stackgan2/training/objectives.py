"""What one training step optimises: a family's adversarial losses plus the levers' named terms.

A **family objective** (one per ``model.arch``) knows how the official code of that family scores the
discriminators and the generator:

- ``StackGAN2Objective`` (hanzhanggit/StackGAN-v2 ``trainer.py`` ``train_Dnet`` / ``train_Gnet``): three D
  passes (real, wrong, detached fake) conditioned on the detached CA mean, summed with the
  unconditional heads; G scored with the undetached mean;
- ``StackGAN1Objective`` (hanzhanggit/StackGAN-Pytorch ``miscc/utils.py``): one encoder pass over real
  and one over fake images, the wrong pairs from the real batch shifted by one, the v1 weights; D's
  condition detached in the G step too;
- ``AttnGANObjective`` (taoxugit/AttnGAN ``miscc/losses.py``): the passes and weights of v1 Stage II,
  with every discriminator conditioned on the sentence embedding.

A **term** is a lever with one interface: built from the config, it returns its unweighted loss and the
stats it logs (under the ``stats.jsonl`` names), and may add a loss to each discriminator (MA-GP, FastGAN's
reconstruction, whose decoders D's optimiser trains with D) or run its own optimiser step after them (the
feature D, ControlGAN's word-level D); it says what it needs (extra G rows, the captions' DAMSM features,
the DAMSM image encoder).
``build_terms`` lists the active ones in the order the G loss sums them; the trainer weights each by
``term.coef``. Adding a lever is a term class here, its config field, its flag and its tests.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan2.config import ExperimentConfig, TrainConfig
from stackgan2.losses import (
    bce,
    color_consistency_loss,
    damsm_loss,
    discriminator_loss,
    generator_adversarial_loss,
    kl_loss,
    matching_aware_gradient_penalty,
    stackgan1_discriminator_loss,
)
from stackgan2.models import init_weights
from stackgan2.models.blocks import FeatureDecoders, StageDiscriminator, WordCritic
from stackgan2.models.stackgan2 import FeatureCritic
from stackgan2.text.damsm import matched_word_region_scores
from stackgan2.text.encoders import ImageEncoder
from stackgan2.text.features import CaptionFeatures, FrozenDAMSM

Losses = tuple[Tensor, dict[str, Tensor]]  # a total and its terms (detached) for logging
Update = Callable[[Tensor, torch.optim.Optimizer, torch.amp.GradScaler, list, str, dict[str, Tensor]], None]


@dataclass
class Step:
    """What the terms of one iteration may read: the trained branches' fakes, the CA outputs, the batch."""

    real: list[Tensor]
    wrong: list[Tensor]
    fakes: list[Tensor]
    mu: Tensor
    logvar: Tensor
    condition: Tensor                 # what the discriminators are conditioned on in the D step
    text: CaptionFeatures | None
    damsm: FrozenDAMSM | None
    autocast: Callable[[], contextlib.AbstractContextManager]
    z: Tensor
    twins: list[Tensor] = field(default_factory=list)  # mode seeking: fakes of the first captions with new noise


# ----------------------------------------------------------------------------------- families
class StackGAN2Objective:
    """StackGAN++ as the official code computes it (``stackgan2.losses.discriminator_loss``)."""

    def __init__(self, t: TrainConfig) -> None:
        self.t = t

    def condition(self, mu: Tensor, embedding: Tensor) -> Tensor:
        """D's condition in the D step: the detached CA mean (official ``train_Dnet``)."""
        return mu.detach()

    def discriminator_loss(self, D: StageDiscriminator, D_forward: nn.Module, real: Tensor, wrong: Tensor | None,
                           fake: Tensor, condition: Tensor) -> Losses:
        """Real, wrong and detached fake passes (stacked into one with ``train.stacked_d_passes``, batch norm
        still per third)."""
        if self.t.stacked_d_passes:
            stacked = D_forward(torch.cat([real, wrong, fake.detach()]), condition.repeat(3, 1), groups=3)
            real_out, wrong_out, fake_out = zip(*(logits.chunk(3) for logits in stacked), strict=True)
        else:
            real_out, wrong_out, fake_out = (D_forward(x, condition) for x in (real, wrong, fake.detach()))
        return discriminator_loss(real_out, wrong_out, fake_out, self.t.uncond_coef, self.t.gan_loss)

    def generator_loss(self, D: StageDiscriminator, D_forward: nn.Module, fake: Tensor, mu: Tensor,
                       embedding: Tensor) -> Losses:
        """BCE(D_cond(fake, mu), 1) + u BCE(D_uncond(fake), 1), mu undetached (official ``train_Gnet``)."""
        return generator_adversarial_loss(D_forward(fake, mu), self.t.uncond_coef, self.t.gan_loss)


def shifted_pairs_discriminator_loss(D: StageDiscriminator, real: Tensor, fake: Tensor, condition: Tensor) -> Losses:
    """StackGAN v1's and AttnGAN's D passes (PT ``miscc/utils.py`` ``compute_discriminator_loss``, AttnGAN
    ``discriminator_loss``): one encoder pass over the real and one over the (detached) fake images; the real
    code also makes the wrong pairs, ``code[:-1]`` with ``condition[1:]`` (the dataset's wrong images are
    unused); the v1 weights."""
    real_code, fake_code = D.encode(real), D.encode(fake.detach())
    cond = condition.detach()
    real_c = D.cond_head(real_code, cond)
    wrong_c = D.cond_head(real_code[:-1], cond[1:])
    fake_c = D.cond_head(fake_code, cond)
    return stackgan1_discriminator_loss(real_c, wrong_c, fake_c, D.uncond_head(real_code), D.uncond_head(fake_code))


def stackgan1_generator_loss(D: StageDiscriminator, fake: Tensor, condition: Tensor) -> Losses:
    """StackGAN v1's ``compute_generator_loss``: BCE(D_cond(fake, mu.detach()), 1) [+ BCE(D_uncond(fake), 1)]
    (a sum). Unlike StackGAN++ the condition is detached: the CA net learns only through the image and KL."""
    code = D.encode(fake)
    uncond = D.uncond_head(code)
    logits = (D.cond_head(code, condition.detach()), uncond if uncond is not None else code.new_zeros(code.shape[0]))
    return generator_adversarial_loss(logits, 1.0 if uncond is not None else 0.0)


class StackGAN1Objective(StackGAN2Objective):
    """StackGAN v1 (PT ``miscc/utils.py`` ``compute_discriminator_loss`` / ``compute_generator_loss``)."""

    def discriminator_loss(self, D: StageDiscriminator, D_forward: nn.Module, real: Tensor, wrong: Tensor | None,
                           fake: Tensor, condition: Tensor) -> Losses:
        return shifted_pairs_discriminator_loss(D, real, fake, condition)

    def generator_loss(self, D: StageDiscriminator, D_forward: nn.Module, fake: Tensor, mu: Tensor,
                       embedding: Tensor) -> Losses:
        return stackgan1_generator_loss(D, fake, mu)


class AttnGANObjective(StackGAN1Objective):
    """AttnGAN: v1 Stage II's D passes and weights (official ``discriminator_loss``), every D conditioned
    on the sentence embedding, in the D step and in the G step (official ``generator_loss``)."""

    def condition(self, mu: Tensor, embedding: Tensor) -> Tensor:
        return embedding

    def generator_loss(self, D: StageDiscriminator, D_forward: nn.Module, fake: Tensor, mu: Tensor,
                       embedding: Tensor) -> Losses:
        return generator_adversarial_loss(D_forward(fake, embedding), self.t.uncond_coef, self.t.gan_loss)


OBJECTIVES: dict[str, type[StackGAN2Objective]] = {
    "stackgan2": StackGAN2Objective,
    "stackgan1": StackGAN1Objective,
    "attngan": AttnGANObjective,
}


# -------------------------------------------------------------------------------------- terms
class Term:
    """A lever of the training step. ``coef`` weights ``generator_loss`` in G's total; a term may also
    add a loss to every discriminator (``discriminator_loss``, with parameters of its own that D's optimiser
    trains with D: ``discriminator_parameters``), run its own update after them (``discriminator_update``),
    and own trained modules and optimisers (checkpointed under their names). What it needs from the step:
    ``extra_rows`` more generator rows per batch, the captions' DAMSM features (``needs_captions``), the
    DAMSM image encoder (``needs_image_encoder``, then ``field`` names its config field in the error)."""

    coef: float = 0.0
    field: str = ""
    needs_captions = False
    needs_image_encoder = False

    def extra_rows(self, batch: int) -> int:
        """Rows the generator draws beyond the batch for this term (``Step.twins``)."""
        return 0

    def generator_loss(self, step: Step) -> Losses | None:
        """The unweighted G loss and its stats (``stats.jsonl`` names), or None for a D-only term."""
        return None

    def discriminator_loss(self, D: StageDiscriminator, D_forward: nn.Module, real: Tensor,
                           condition: Tensor) -> Losses | None:
        """A loss added to D's (weighted), and its stats (logged as ``D{i}/NAME``), or None."""
        return None

    def discriminator_parameters(self, D: StageDiscriminator) -> list[nn.Parameter]:
        """The term's parameters that ``discriminator_loss`` trains: D's optimiser steps them with D's."""
        return []

    def discriminator_update(self, step: Step, update: Update) -> dict[str, Tensor]:
        return {}

    def attach(self, damsm: FrozenDAMSM) -> None:
        """The DAMSM encoders are attached (``Trainer.attach_text_encoder``, before a checkpoint is loaded)."""

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}


class KL(Term):
    """KL(N(mu, sigma) || N(0, I)) of the conditioning augmentation, a mean (official ``KL_loss``, coef 2)."""

    def __init__(self, t: TrainConfig) -> None:
        self.coef = t.kl_coef

    def generator_loss(self, step: Step) -> Losses:
        with step.autocast():
            kl = kl_loss(step.mu.float(), step.logvar.float())
        return kl, {"KL": kl.detach()}


class ColourConsistency(Term):
    """Paper eq. 5 between consecutive branches (``train.color_coef``; official birds 0, logged as 0 then)."""

    def __init__(self, t: TrainConfig) -> None:
        self.coef = t.color_coef

    def generator_loss(self, step: Step) -> Losses:
        with step.autocast():
            color = (color_consistency_loss([f.float() for f in step.fakes]) if self.coef > 0
                     else step.mu.new_zeros((), dtype=torch.float32))
        return color, {"color": color.detach()}


class ModeSeeking(Term):
    """MSGAN (Mao et al., CVPR 2019), as its StackGAN++ trainer computes it: half a batch of twins (the
    first captions with new noise) drawn in the same G pass; on the last branch,
    1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5)."""

    def __init__(self, t: TrainConfig) -> None:
        self.coef = t.ms_coef

    def extra_rows(self, batch: int) -> int:
        return batch // 2

    def generator_loss(self, step: Step) -> Losses:
        pairs, batch = step.twins[-1].shape[0], step.fakes[-1].shape[0]
        spread = ((step.twins[-1] - step.fakes[-1][:pairs]).abs().mean().float()
                  / (step.z[batch:] - step.z[:pairs]).abs().mean())
        seeking = 1.0 / (spread + 1e-5)
        return seeking, {"mode_seeking": seeking.detach()}


class MatchingAwareGradientPenalty(Term):
    """DF-GAN's MA-GP on every discriminator (``train.ma_gp_coef``, ``ma_gp_power``), in its own real pass
    (levers.md section 4: through the stacked batch it doubles D's cost)."""

    def __init__(self, t: TrainConfig) -> None:
        self.gp_coef, self.power = t.ma_gp_coef, t.ma_gp_power

    def discriminator_loss(self, D: StageDiscriminator, D_forward: nn.Module, real: Tensor,
                           condition: Tensor) -> Losses:
        images = real.detach().requires_grad_(True)
        code = condition.detach().requires_grad_(True)
        gp = matching_aware_gradient_penalty(D_forward(images, code)[0], images, code, self.gp_coef, self.power)
        return gp, {"ma_gp": gp.detach()}


class DiscriminatorReconstruction(Term):
    """FastGAN's self-supervised discriminator (Liu et al. ICLR 2021, "Towards Faster and Stabilized GAN Training
    for High-fidelity Few-shot Image Synthesis"; odegeasslbc/FastGAN-pytorch): on real images only, small decoders
    (``FeatureDecoders``) rebuild the image from D's 8x8 features and a quadrant of it from its 16x16 features,
    so that D's features must keep the images' shapes rather than only what tells real from fake. Added to
    every D's loss with weight ``train.d_recon_coef``, logged unweighted as ``D{i}/recon``.

    FastGAN's ``train.py`` ``train_d`` adds ``percept(rec_all, F.interpolate(data, rec_all.shape[2])).sum()``
    and the same for ``rec_part`` (and ``rec_small``, from the second, 128 px input path its D has and ours
    has not), ``percept`` being LPIPS on pretrained VGG features; here it is the mean L1 distance to the
    averaged-down image (no pretrained VGG weights are available here, and L1 needs none), summed over the
    decoders. As FastGAN's decoders are part of ``netD`` and stepped by ``optimizerD``, each D's decoders are
    trained by that D's optimiser (``discriminator_parameters``); they are this term's module, checkpointed
    under ``R.``, so a D without the lever keeps its keys. The pass over the real images is its own (as
    MA-GP's): batch norm normalises it with the real batch's statistics, as the family's real pass does."""

    def __init__(self, cfg: ExperimentConfig, discriminators: nn.ModuleList, device: torch.device) -> None:
        self.recon_coef = cfg.train.d_recon_coef
        # FastGAN's first decoder width, 128, is twice its ndf (64)
        self.decoders = nn.ModuleDict({str(D.resolution): FeatureDecoders(D, 2 * cfg.model.ndf) for D in discriminators})
        init_weights(self.decoders, "normal")  # FastGAN weights_init: conv N(0, 0.02), BN weight N(1, 0.02)
        self.decoders.to(device)

    def discriminator_loss(self, D: StageDiscriminator, D_forward: nn.Module, real: Tensor,
                           condition: Tensor) -> Losses:
        decoders = self.decoders[str(D.resolution)]
        pairs = decoders(D.features(real, decoders.whole_size), real)
        recon = torch.stack([F.l1_loss(rec.float(), target.float()) for rec, target in pairs]).sum()
        return self.recon_coef * recon, {"recon": recon.detach()}

    def discriminator_parameters(self, D: StageDiscriminator) -> list[nn.Parameter]:
        return list(self.decoders[str(D.resolution)].parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {"R": self.decoders}


class DAMSM(Term):
    """AttnGAN's DAMSM word and sentence matching term (``train.damsm_coef``; official LAMBDA 5 birds, 50
    COCO), scored by the frozen pretrained encoders in float32 on the last branch (official) or the mean
    over every branch (``train.damsm_branches = "all"``)."""

    field, needs_captions, needs_image_encoder = "train.damsm_coef", True, True

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.coef, self.every_branch = cfg.train.damsm_coef, cfg.train.damsm_branches == "all"
        self.gammas = (cfg.text.gamma1, cfg.text.gamma2, cfg.text.gamma3)

    def scored(self, images: list[Tensor]) -> list[Tensor]:
        """The branches the loss scores: the last (official) or every one."""
        return images if self.every_branch else images[-1:]

    def encode(self, step: Step, images: Tensor) -> tuple[Tensor, Tensor]:
        """Region and global features of ``images`` by the encoder that scores G: the frozen pretrained one."""
        return step.damsm.images(images)

    def generator_loss(self, step: Step) -> Losses:
        text = step.text
        results = []
        for images in self.scored(step.fakes):
            regions, image_global = self.encode(step, images.float())
            results.append(damsm_loss(regions, image_global, text.words, text.sentence, text.lengths,
                                      text.class_ids, self.gammas))
        loss, terms = mean_over_branches(results)
        return loss, {f"DAMSM/{k}": v for k, v in terms.items()}


def mean_over_branches(results: list[Losses]) -> Losses:
    """One branch's loss and terms as they are; several branches' means."""
    if len(results) == 1:
        return results[0]
    terms = {k: torch.stack([r[1][k] for r in results]).mean() for k in results[0][1]}
    return torch.stack([r[0] for r in results]).mean(), terms


class TrainedImageEncoder(nn.Module):
    """The trainable copy of the DAMSM image encoder (``train.damsm_fake_negatives``), empty until the text
    encoder is attached (``attach``). It always stays in eval mode: batch norm keeps the pretraining's running
    statistics, so G is scored as the frozen encoder would score it and a batch of reals and fakes is normalised
    image by image, as two passes would be. ``requires_grad_`` switches only what it trains, so that a frozen
    ImageNet backbone (AttnGAN's Inception-v3, of which DAMSM trains only the two projections) stays frozen
    when the trainer unfreezes the terms' modules after G's step."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder: ImageEncoder | None = None
        self.trained: list[nn.Parameter] = []

    def attach(self, encoder: ImageEncoder) -> None:
        self.encoder = copy.deepcopy(encoder).eval()
        frozen = ({id(p) for net in (self.encoder.region_net, self.encoder.global_net) for p in net.parameters()}
                  if self.encoder.frozen_backbone else set())
        self.trained = [p for p in self.encoder.parameters() if id(p) not in frozen]
        self.requires_grad_(True)

    def train(self, mode: bool = True) -> TrainedImageEncoder:
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> TrainedImageEncoder:
        for p in self.trained:
            p.requires_grad_(requires_grad)
        return self


class TrainedDAMSM(DAMSM):
    """The DAMSM term scored by a DAMSM image encoder that keeps learning (``train.damsm_fake_negatives``).

    With the frozen pretrained encoder, G learns to satisfy it with features a real bird does not have
    (docs/quality.md, "Three probes": the encoder reads 24-40 points more wing colour into generated images
    than an independent classifier does). Here G's DAMSM loss (AttnGAN, Xu et al. CVPR 2018, ``miscc/losses.py``;
    the same ``damsm_loss``) is computed with a trainable copy of the image encoder (module ``A``) that starts
    from the pretrained weights; the frozen original stays what the feature D and evaluation read, and the text
    encoder stays frozen. After the stage discriminators, the copy takes one step of its own Adam optimiser
    (``opt_A``) on the DAMSM loss of the real images with their captions, in which the batch's detached fakes
    are extra negatives (``damsm_loss(..., negatives=)``): in the word and in the sentence loss, each caption
    must pick its real image among the real *and* the fake images, the fake drawn for that very caption
    included, so that a feature G puts into a fake only to please the encoder stops pleasing it. The branches
    are those G's loss scores (the last, or every one with ``train.damsm_branches = "all"``: their mean).

    Training the image-text matching encoder inside the GAN's discriminator step, contrastively and with the
    generator's images in play, follows XMC-GAN (Zhang, Koh, Baldridge, Lee, Yang, "Cross-Modal Contrastive
    Learning for Text-to-Image Generation", CVPR 2021), whose discriminator doubles as the encoder of its
    contrastive image-text and real-fake losses; putting the fakes into the caption -> image softmax of
    AttnGAN's DAMSM loss is this project's composition of the two.

    Learning rate: ``train.lr_d`` with the GAN's betas, not DAMSM pretraining's 2e-3 (``text.lr``, AttnGAN's
    ``ENCODER_LR``): the copy is fine-tuned from a converged encoder the way a discriminator is trained, one
    step per iteration against the current fakes, and the rate pretraining uses from scratch would wash out
    the pretrained image-text alignment G is scored by (``train.damsm_copy_lr`` sets another rate for the copy;
    the lr schedule, ``learning_rate``, follows it). Logged as ``A/word``, ``A/sentence`` and ``A/total``."""

    def __init__(self, cfg: ExperimentConfig, optimizer_options: dict, scaler: torch.amp.GradScaler) -> None:
        super().__init__(cfg)
        self.t, self.optimizer_options, self.scaler = cfg.train, optimizer_options, scaler
        self.copy = TrainedImageEncoder()
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, damsm: FrozenDAMSM) -> None:
        self.copy.attach(damsm.encoder.image_encoder)
        self.optimizer = torch.optim.Adam(self.copy.trained, lr=self.t.damsm_copy_lr or self.t.lr_d,
                                          betas=(self.t.beta1, self.t.beta2),
                                          **self.optimizer_options)

    def encode(self, step: Step, images: Tensor) -> tuple[Tensor, Tensor]:
        return step.damsm.images(images, self.copy.encoder)

    def discriminator_update(self, step: Step, update: Update) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        text, results = step.text, []
        for real, fake in zip(self.scored(step.real), self.scored(step.fakes), strict=True):
            batch = real.shape[0]  # one pass over both: in eval mode batch norm treats every image alone
            regions, image_global = self.encode(step, torch.cat([real, fake.detach()]).float())
            results.append(damsm_loss(regions[:batch], image_global[:batch], text.words, text.sentence, text.lengths,
                                      text.class_ids, self.gammas, negatives=(regions[batch:], image_global[batch:])))
        loss, terms = mean_over_branches(results)
        update(loss, self.optimizer, self.scaler, self.copy.trained, "DAMSM image encoder", terms)
        return {**{f"A/{k}": v for k, v in terms.items()}, "A/total": loss.detach()}

    def modules(self) -> dict[str, nn.Module]:
        return {"A": self.copy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_A": self.optimizer} if self.optimizer is not None else {}


class FeatureD(Term):
    """A discriminator head on the frozen DAMSM image encoder's region features (``FeatureCritic``,
    ``train.feature_d_coef``): updated after the stage discriminators on the last branch's real, wrong and
    fake images with the caption's sentence embedding, at D's rate; its adversarial loss joins G's."""

    field, needs_captions, needs_image_encoder = "train.feature_d_coef", True, True

    def __init__(self, cfg: ExperimentConfig, device: torch.device, optimizer_options: dict,
                 scaler: torch.amp.GradScaler) -> None:
        t = cfg.train
        self.t, self.coef, self.scaler = t, t.feature_d_coef, scaler
        self.critic = FeatureCritic(cfg.text.dim, cfg.text.dim).to(device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2),
                                          **optimizer_options)

    def discriminator_update(self, step: Step, update: Update) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # the encoder is frozen: only the head learns
            regions = [step.damsm.images(images.float())[0]
                       for images in (step.real[-1], step.wrong[-1], step.fakes[-1].detach())]
        with step.autocast():
            loss, terms = discriminator_loss(*(self.critic(r, step.text.sentence) for r in regions),
                                             self.t.uncond_coef, self.t.gan_loss)
        update(loss, self.optimizer, self.scaler, list(self.critic.parameters()), "feature D", terms)
        return {**{f"F/{k}": v for k, v in terms.items()}, "F/total": loss.detach()}

    def generator_loss(self, step: Step) -> Losses:
        with step.autocast():
            regions = step.damsm.images(step.fakes[-1].float())[0]
            loss, _ = generator_adversarial_loss(self.critic(regions, step.text.sentence), self.t.uncond_coef,
                                                 self.t.gan_loss)
        return loss, {"G/feature_d": loss.detach()}

    def modules(self) -> dict[str, nn.Module]:
        return {"F": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_F": self.optimizer}


class WordDiscriminator(Term):
    """ControlGAN's word-level discriminator (Li, Qi, Lukasiewicz, Torr, "Controllable Text-to-Image Generation",
    NeurIPS 2019; ``train.d_word_coef``): it judges each word of a caption against the image regions the word
    attends to, so that G learns which part of the image a word such as "wing" or "red" is about, feedback that
    the sentence-level conditional logit gives only weakly.

    The score of an (image, caption) pair is the word-region relevance R of ControlGAN's ``word_level_correlation``
    (mrlibw/ControlGAN ``code/miscc/losses.py``; ``matched_word_region_scores``) on the frozen DAMSM image
    encoder's region features (as there: ``image_encoder(real_imgs)``), through a trained ``WordCritic``
    (projection of the regions, then ``scale * R + bias`` as the logit; ControlGAN's sigmoid(R) at
    initialisation), with AttnGAN's gamma1 / gamma2 (``text.gamma1``, ``text.gamma2``).

    - D (its own optimiser, Adam at D's rate, after the stage Ds, as the feature D): the labels of ControlGAN's
      ``discriminator_loss``: real image with its caption 1, real image with a mismatched caption 0, the two BCE
      terms averaged (``(matched + mismatched) / 2``). The official code scores no fake image here, and neither
      does this term. Its mismatched captions are a random training caption per item (``datasets.py``
      ``wrong_caps``); here they are the batch's captions shifted by one, image i with caption i + 1 (the wrong
      pairs of ``shifted_pairs_discriminator_loss``): one encoder pass over the real images serves both terms,
      and it works for every family (v1 and AttnGAN steps have no wrong images).
    - G (this weight): the generated image of the last branch with its own caption scored as matching, BCE(., 1).
      The released code adds no such term and its correlation carries no gradient at all (it is rebuilt with
      ``torch.tensor(similar_list, requires_grad=False)``), so there the word-level D trains nothing; the paper
      describes it as feedback to the generator, which is what this term makes of it.

    ControlGAN scores every stage's real images; here the last branch's (as the feature D and the DAMSM loss),
    in float32. Logged: ``Wd/real``, ``Wd/wrong``, ``Wd/total`` and ``G/word_d`` (unweighted).
    """

    field, needs_captions, needs_image_encoder = "train.d_word_coef", True, True

    def __init__(self, cfg: ExperimentConfig, device: torch.device, optimizer_options: dict,
                 scaler: torch.amp.GradScaler) -> None:
        t = cfg.train
        self.coef, self.scaler, self.gammas = t.d_word_coef, scaler, (cfg.text.gamma1, cfg.text.gamma2)
        self.critic = WordCritic(cfg.text.dim, cfg.text.dim).to(device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2),
                                          **optimizer_options)

    def logits(self, regions: Tensor, text: CaptionFeatures) -> Tensor:
        """Match logits (B,) of images (their DAMSM region features) with the captions ``text``, row by row."""
        relevance = matched_word_region_scores(self.critic(regions.float()), text.words, text.lengths, *self.gammas)
        return self.critic.logits(relevance)

    def discriminator_update(self, step: Step, update: Update) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # the encoder is frozen: only the head learns
            regions = step.damsm.images(step.real[-1].float())[0]
        real = bce(self.logits(regions, step.text), 1.0)
        wrong = bce(self.logits(regions[:-1], step.text.select(slice(1, None))), 0.0)
        loss = (real + wrong) / 2
        terms = {"real": real.detach(), "wrong": wrong.detach()}
        update(loss, self.optimizer, self.scaler, list(self.critic.parameters()), "word D", terms)
        return {**{f"Wd/{k}": v for k, v in terms.items()}, "Wd/total": loss.detach()}

    def generator_loss(self, step: Step) -> Losses:
        regions = step.damsm.images(step.fakes[-1].float())[0]
        loss = bce(self.logits(regions, step.text), 1.0)
        return loss, {"G/word_d": loss.detach()}

    def modules(self) -> dict[str, nn.Module]:
        return {"W": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_W": self.optimizer}


def build_terms(cfg: ExperimentConfig, device: torch.device, optimizer_options: dict,
                scaler: torch.amp.GradScaler, discriminators: nn.ModuleList) -> list[Term]:
    """The active terms, in the order G's loss sums them (KL and colour always: they are always logged)."""
    t = cfg.train
    terms: list[Term] = [KL(t), ColourConsistency(t)]
    if t.ms_coef > 0:
        terms.append(ModeSeeking(t))
    if t.feature_d_coef > 0:
        terms.append(FeatureD(cfg, device, optimizer_options, scaler))
    if t.d_word_coef > 0:
        terms.append(WordDiscriminator(cfg, device, optimizer_options, scaler))
    if t.damsm_coef > 0:
        terms.append(TrainedDAMSM(cfg, optimizer_options, scaler) if t.damsm_fake_negatives else DAMSM(cfg))
    if t.ma_gp_coef > 0:
        terms.append(MatchingAwareGradientPenalty(t))
    if t.d_recon_coef > 0:
        terms.append(DiscriminatorReconstruction(cfg, discriminators, device))
    return terms
