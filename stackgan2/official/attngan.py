"""The official AttnGAN files (taoxugit/AttnGAN) as name tables, and its ``captions.pickle`` vocabulary.

``G_NET`` (``code/model.py``; the released ``bird_AttnGAN2.pth`` / ``coco_AttnGAN2.pth``) holds::

    ca_net.fc                          CA_NET: Linear(EMBEDDING_DIM, 4 * CONDITION_DIM) (then GLU)
    h_net1.fc.{0,1}                    INIT_STAGE_G over [c ; z]: Linear (no bias), BatchNorm1d (then GLU)
    h_net1.upsample{1..4}.{1,2}        upBlock: Upsample, conv3x3, BatchNorm2d, GLU
    h_net{2,3}.att.conv_context        GlobalAttentionGeneral: conv1x1 (no bias) words -> image features
    h_net{2,3}.residual.{r}.block.{0,1,3,4}   ResBlock on [h ; word context]
    h_net{2,3}.upsample.{1,2}          upBlock
    img_net{1,2,3}.img.0               GET_IMAGE_G: conv3x3 (then Tanh)

``RNN_ENCODER`` (the DAMSM text encoder ``text_encoder200.pth``): ``encoder.weight`` (the word
embeddings, one row per word of ``captions.pickle``) and ``rnn.{weight,bias}_{ih,hh}_l0[_reverse]``
(one bidirectional LSTM layer); this project's ``TextEncoder`` computes the same words and sentence
features (pack by length, outputs transposed, the two final hidden states concatenated).

``CNN_ENCODER`` (the DAMSM image encoder ``image_encoder200.pth``): torchvision's Inception-v3
modules ``Conv2d_1a_3x3`` .. ``Mixed_7c`` under their own names, ``emb_features`` (conv1x1 768 -> 256,
no bias: the region features) and ``emb_cnn_code`` (Linear 2048 -> 256: the global feature).

``captions.pickle`` is ``[train_captions, test_captions, ixtoword, wordtoix]`` (``datasets.py:
load_text_data``, ``pickle.dump(..., protocol=2)``), ``ixtoword`` a dict ``{0: '<end>', 1: word, ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackgan2.config import ModelConfig
from stackgan2.data.safe_pickle import load_pickle
from stackgan2.errors import CheckpointError
from stackgan2.official.family import OfficialFamily
from stackgan2.official.stackgan_v2 import tree_prefixes
from stackgan2.text.encoders import INCEPTION_GLOBAL_LAYERS, INCEPTION_REGION_LAYERS
from stackgan2.text.vocab import ATTNGAN_END, Vocabulary

TEXT_ENCODER_PREFIXES = {"encoder.": "embedding.", "rnn.": "lstm."}
IMAGE_ENCODER_PREFIXES = {
    **{f"{name}.": f"region_net.{i}." for i, name in enumerate(INCEPTION_REGION_LAYERS)},
    **{f"{name}.": f"global_net.{i}." for i, name in enumerate(INCEPTION_GLOBAL_LAYERS)},
    "emb_features.": "region_proj.",
    "emb_cnn_code.": "global_proj.",
}
# The official emb_features conv has no bias; ours has one, imported as zeros (the same function).
IMAGE_ENCODER_ZERO_FILLED = ("region_proj.bias",)


def generator_prefixes(model: ModelConfig) -> dict[str, str]:
    """Official module prefix -> this project's ``AttnGANGenerator`` prefix, for ``model``'s branches."""
    return tree_prefixes(model, {"att.conv_context.": "attention.project.", "residual.": "residual.",
                                 "upsample.": "upsample."})


def _released_config(official_names: set[str]) -> dict[str, Any]:
    # The released models were trained with GlobalAttentionGeneral's misaligned mask (mask.repeat(queryL, 1)).
    return {"model.attention_official_mask": True}


# What a file of the AttnGAN family (or a neighbour) is, judged by its names, and what to do with it.
_ADVICE = {
    "stackgan-v2": "it is a StackGAN++ generator (--from stackgan-v2)",
    "stackgan-v1": "it is a StackGAN v1 generator (--from stackgan-v1)",
    "text_encoder": "it is the DAMSM text encoder (text_encoder*.pth): pass it as --text-encoder",
    "image_encoder": "it is the DAMSM image encoder (image_encoder*.pth): pass it as --image-encoder",
    "discriminator": "it is an AttnGAN discriminator (netD*.pth); import the generator (bird_AttnGAN2.pth)",
    "generator": "it is an AttnGAN generator (bird_AttnGAN2.pth): pass it as the WEIGHTS argument",
}


def _kind(names: set[str]) -> str | None:
    def has(*prefixes: str) -> bool:
        return any(name.startswith(prefixes) for name in names)

    if any(".jointConv." in name for name in names):
        return "stackgan-v2"
    if has("STAGE1_G.", "upsample1.", "hr_joint."):
        return "stackgan-v1"
    if has("encoder.", "rnn."):
        return "text_encoder"
    if has("Conv2d_1a_3x3.", "emb_cnn_code.", "emb_features."):
        return "image_encoder"
    if has("img_code_s16.", "UNCOND_DNET.", "COND_DNET."):
        return "discriminator"
    if has("h_net1.", "ca_net."):
        return "generator"
    return None


def diagnose_encoder(official_names: set[str], slot: str) -> str | None:
    """What a file given for ``slot`` (generator, text_encoder, image_encoder) seems to be instead, if anything."""
    kind = _kind(official_names)
    return None if kind is None or kind == slot else _ADVICE[kind]


def _diagnose(official_names: set[str]) -> str | None:
    return diagnose_encoder(official_names, "generator")


def read_vocabulary(path: Path) -> Vocabulary:
    """The vocabulary of an official ``captions.pickle``, its indices kept (``'<end>'`` = 0 = padding).

    Read with the restricted unpickler (containers and strings only; nothing in the file runs).
    """
    data = load_pickle(path)
    if not isinstance(data, list | tuple) or len(data) != 4 or not all(isinstance(x, dict) for x in data[2:]):
        raise CheckpointError(
            f"{path} is not an AttnGAN captions.pickle: expected [train_captions, test_captions, ixtoword, wordtoix]"
        )
    ixtoword, wordtoix = data[2], data[3]
    if sorted(ixtoword) != list(range(len(ixtoword))) or not all(isinstance(w, str) for w in ixtoword.values()):
        raise CheckpointError(f"{path}: ixtoword does not map the indices 0..{len(ixtoword) - 1} to words")
    words = [ixtoword[i] for i in range(len(ixtoword))]
    if not words or words[0] != ATTNGAN_END:
        raise CheckpointError(f"{path}: ixtoword[0] is {words[0] if words else None!r}, the official vocabulary has "
                              f"{ATTNGAN_END!r} (the padding) there")
    if len(set(words)) != len(words):
        raise CheckpointError(f"{path}: ixtoword holds a word twice")
    wrong = next((w for i, w in enumerate(words) if wordtoix.get(w) != i), None)
    if wrong is not None or len(wordtoix) != len(words):
        raise CheckpointError(f"{path}: wordtoix and ixtoword disagree (e.g. about {wrong!r})")
    return Vocabulary(words, convention="attngan")


ATTNGAN = OfficialFamily(
    name="attngan",
    title="AttnGAN (taoxugit/AttnGAN)",
    arch="attngan",
    default_preset="attngan-birds",
    generator_prefixes=generator_prefixes,
    diagnose=_diagnose,
    documentation="https://github.com/taoxugit/AttnGAN (README, 'Pretrained Model')",
    detect=_released_config,
    text_side=True,
)
