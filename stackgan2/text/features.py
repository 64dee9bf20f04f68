"""Frozen DAMSM encoders used *inside* GAN training and generation (AttnGAN ``trainer.py``).

AttnGAN runs its pretrained text encoder (eval mode, detached) on every batch to get the word
features its attention stages read, and its pretrained image encoder (eval mode, frozen) on the
generated 256 px image for the DAMSM generator loss. ``FrozenDAMSM`` wraps a ``PromptEncoder`` for
exactly that: ``captions`` gives ``CaptionFeatures`` (no gradient), ``images`` gives region and
global features with the gradient flowing back into the images (never into the encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stackgan2.errors import UsageError
from stackgan2.text.encoders import ImageEncoder
from stackgan2.text.prompt import PromptEncoder, pad_batch


@dataclass(frozen=True)
class CaptionFeatures:
    """DAMSM features of a batch of captions."""

    words: Tensor       # (B, D, T) word features; zeros at padded positions
    sentence: Tensor    # (B, D) sentence embeddings
    lengths: Tensor     # (B,) number of tokens (unknown words included)
    mask: Tensor        # (B, T) True where a word gets no attention: padding or an unknown word
    class_ids: Tensor   # (B,) for masking same-class negatives in the DAMSM loss

    def __len__(self) -> int:
        return self.sentence.shape[0]

    def select(self, rows: Tensor | slice) -> CaptionFeatures:
        """The features of some of the captions (e.g. one shard or a repeated batch)."""
        return CaptionFeatures(self.words[rows], self.sentence[rows], self.lengths[rows], self.mask[rows],
                               self.class_ids[rows])


class FrozenDAMSM:
    """A pretrained ``PromptEncoder`` in eval mode with every parameter frozen."""

    def __init__(self, encoder: PromptEncoder, device: torch.device | str) -> None:
        self.encoder = encoder.to(device)
        self.device = torch.device(device)
        self.max_words = encoder.config.max_words
        self.image_size = encoder.config.image_size
        for module in (encoder.text_encoder, encoder.image_encoder):
            if module is not None:
                module.eval().requires_grad_(False)

    @property
    def has_image_encoder(self) -> bool:
        return self.encoder.image_encoder is not None

    @torch.no_grad()
    def ids(self, ids: Tensor, lengths: Tensor, class_ids: Tensor) -> CaptionFeatures:
        """Features of padded id batches (``pad_batch`` layout)."""
        words, sentence = self.encoder.text_encoder(ids, lengths)
        mask = self.encoder.vocab.attention_mask(ids)
        return CaptionFeatures(words.float(), sentence.float(), lengths, mask, class_ids)

    def captions(self, captions: Sequence[str], class_ids: Tensor) -> CaptionFeatures:
        """Features of dataset captions (longer ones keep their first ``text.max_words`` words)."""
        vocab = self.encoder.vocab
        ids, lengths = pad_batch([vocab.encode(c, self.max_words).ids for c in captions], self.device, vocab)
        return self.ids(ids, lengths, class_ids.to(self.device))

    def images(self, images: Tensor, image_encoder: ImageEncoder | None = None) -> tuple[Tensor, Tensor]:
        """Region (B, D, h, w) and global (B, D) features of images in [-1, 1].

        The small CNN encoder was pretrained on ``text.image_size`` images, so larger ones are
        resized to it first (antialiased, as the dataset resizes); the Inception backbone resizes to
        299 px itself, as AttnGAN's ``CNN_ENCODER`` does. ``image_encoder``: another encoder of the same
        kind to read the images with, the same way (the trained copy of ``train.damsm_fake_negatives``).
        """
        image_encoder = image_encoder if image_encoder is not None else self.encoder.image_encoder
        if image_encoder is None:
            raise UsageError("the DAMSM loss needs the text encoder's image encoder; this text encoder has none "
                             "(pretrain one with `stackgan2 pretrain-text`)")
        if image_encoder.backbone == "cnn" and images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > self.image_size)
        return image_encoder(images)
