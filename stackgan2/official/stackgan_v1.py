"""The official StackGAN v1 generators (hanzhanggit/StackGAN-Pytorch ``code/model.py``) as name tables.

``STAGE2_G`` (the released COCO model ``netG_epoch_90.pth``) holds the frozen Stage-I generator
under ``STAGE1_G.`` and its own modules::

    STAGE1_G.ca_net.fc                 CA_NET: Linear(TEXT.DIMENSION, 2 * CONDITION_DIM) (then ReLU)
    STAGE1_G.fc.{0,1}                  Linear (no bias), BatchNorm1d (then ReLU): 4x4 x 8*GF_DIM
    STAGE1_G.upsample{1..4}.{1,2}      upBlock: Upsample, conv3x3, BatchNorm2d, ReLU
    STAGE1_G.img.0                     conv3x3 (then Tanh): the 64 px image
    ca_net.fc                          Stage II's own CA_NET
    encoder.{0,2,3,5,6}                conv3x3, ReLU, 2 x (conv4x4 stride 2, BN, ReLU)
    hr_joint.{0,1}                     conv3x3 over [image code ; c], BN (then ReLU)
    residual.{r}.block.{0,1,3,4}       ResBlock conv, BN, ReLU, conv, BN (ReLU after the add)
    upsample{1..4}.{1,2}               upBlock
    img.0                              conv3x3 (then Tanh): the 256 px image

``STAGE1_G`` alone (a Stage-I file, e.g. ``netG_epoch_120.pth``) has the names without ``STAGE1_G.``.
This project's ``StageOneGenerator`` / ``StageTwoGenerator`` keep the same Sequential indices, so the
mapping renames module prefixes; which stage a file holds is read from its names.
"""

from __future__ import annotations

import math
from typing import Any

from stackgan2.config import ModelConfig
from stackgan2.official.family import OfficialFamily

STAGE1 = "STAGE1_G."


def _stage_one(model: ModelConfig, official: str, ours: str) -> dict[str, str]:
    table = {f"{official}ca_net.fc.": f"{ours}ca.fc.", f"{official}fc.": f"{ours}init_stage.fc."}
    table |= {f"{official}upsample{k + 1}.": f"{ours}init_stage.upsample.{k}."
              for k in range(int(math.log2(model.base_size // 4)))}
    return table | {f"{official}img.0.": f"{ours}to_image.conv."}


def generator_prefixes(model: ModelConfig) -> dict[str, str]:
    """Official module prefix -> this project's prefix, for Stage I or Stage II (``model.v1_stage``)."""
    if model.v1_stage == 1:
        return _stage_one(model, "", "")
    table = _stage_one(model, STAGE1, "stage1.")
    table |= {"ca_net.fc.": "ca.fc.", "encoder.": "image_encoder.", "hr_joint.": "refine.joint.",
              "residual.": "refine.residual.", "img.0.": "to_image.conv."}
    return table | {f"upsample{k + 1}.": f"refine.upsample.{k}." for k in range(4)}


def _stage(official_names: set[str]) -> dict[str, Any]:
    return {"model.v1_stage": 2 if any(name.startswith(STAGE1) for name in official_names) else 1}


def _diagnose(official_names: set[str]) -> str | None:
    if any(name.startswith(("encode_img.", "get_cond_logits.")) for name in official_names):
        return "it is a StackGAN v1 discriminator (netD*.pth); import the generator netG_epoch_*.pth"
    if any(name.startswith(("h_net1.", "img_net1.")) for name in official_names):
        return "it is a StackGAN++ or AttnGAN generator (--from stackgan-v2 / attngan)"
    return None


STACKGAN_V1 = OfficialFamily(
    name="stackgan-v1",
    title="StackGAN v1 (hanzhanggit/StackGAN-Pytorch)",
    arch="stackgan1",
    default_preset="v1-coco",
    generator_prefixes=generator_prefixes,
    diagnose=_diagnose,
    documentation="https://github.com/hanzhanggit/StackGAN-Pytorch (README, 'Pretrained Model')",
    detect=_stage,
)
