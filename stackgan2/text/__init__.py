"""stackgan2's own text encoder: tokenizer, vocabulary, DAMSM encoders and their pretraining.

See ``vocab`` (tokenizer and vocabulary), ``encoders`` (``TextEncoder``, ``ImageEncoder``), ``damsm``
(the AttnGAN matching losses), ``prompt`` (``PromptEncoder`` and its directory format) and
``pretrain`` (``pretrain_text_encoder``, R-precision, caption embedding for GAN training).
"""

from __future__ import annotations

from stackgan2.text.encoders import BACKBONES, ImageEncoder, RegressionHead, TextEncoder
from stackgan2.text.pretrain import (
    char_cnn_rnn_cosine,
    encode_dataset_captions,
    evaluate_r_precision,
    fit_prompt_encoder,
    pretrain_text_encoder,
)
from stackgan2.text.prompt import EncodedPrompts, PromptEncoder
from stackgan2.text.vocab import EncodedText, Vocabulary, tokenize

__all__ = [
    "BACKBONES",
    "EncodedPrompts",
    "EncodedText",
    "ImageEncoder",
    "PromptEncoder",
    "RegressionHead",
    "TextEncoder",
    "Vocabulary",
    "char_cnn_rnn_cosine",
    "encode_dataset_captions",
    "evaluate_r_precision",
    "fit_prompt_encoder",
    "pretrain_text_encoder",
    "tokenize",
]
