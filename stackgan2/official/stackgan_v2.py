"""The official StackGAN++ generator (hanzhanggit/StackGAN-v2 ``code/model.py`` ``G_NET``) as a name table.

``G_NET`` with ``GAN.B_CONDITION: True`` (the released birds model ``netG_210000.pth``) holds::

    ca_net.fc                          CA_NET: Linear(TEXT.DIMENSION, 4 * EMBEDDING_DIM)
    h_net1.fc.{0,1}                    INIT_STAGE_G: Linear (no bias), BatchNorm1d (then GLU)
    h_net1.upsample{1..4}.{1,2}        upBlock: Upsample, conv3x3, BatchNorm2d, GLU
    h_net{2,3,4}.jointConv.{0,1}       NEXT_STAGE_G: Block3x3_relu over [c ; h]
    h_net{2,3,4}.residual.{r}.block.{0,1,3,4}   ResBlock conv, BN, GLU, conv, BN
    h_net{2,3,4}.upsample.{1,2}        upBlock
    img_net{1..4}.img.0                GET_IMAGE_G: conv3x3 (then Tanh)

This project's ``Generator`` has the same modules with the same Sequential indices, so the mapping
is a renaming of module prefixes. The unconditional released models (dog, cat, bedroom, church:
``B_CONDITION: False``) have no ``ca_net`` and feed z to every stage; stackgan2 generates from text
and cannot hold them.
"""

from __future__ import annotations

import math

from stackgan2.config import ModelConfig
from stackgan2.official.family import OfficialFamily


def tree_prefixes(model: ModelConfig, refine_parts: dict[str, str]) -> dict[str, str]:
    """The G_NET tree shared by StackGAN++ and AttnGAN: ``ca_net``, ``h_net1``, ``img_net*`` and, per
    refine stage ``h_net{2,3,4}``, its official sub-module prefixes ``refine_parts`` -> ours."""
    table = {"ca_net.fc.": "ca.fc.", "h_net1.fc.": "init_stage.fc."}
    table |= {f"h_net1.upsample{k + 1}.": f"init_stage.upsample.{k}." for k in range(int(math.log2(model.base_size // 4)))}
    for stage in range(1, model.stage_num):
        official = f"h_net{stage + 1}."
        ours = f"refine_stages.{stage - 1}."
        table |= {official + part: ours + mine for part, mine in refine_parts.items()}
    table |= {f"img_net{branch + 1}.img.0.": f"to_images.{branch}.conv." for branch in range(model.stage_num)}
    return table


def generator_prefixes(model: ModelConfig) -> dict[str, str]:
    """Official module prefix -> this project's ``Generator`` prefix, for ``model``'s branches."""
    return tree_prefixes(model, {"jointConv.": "joint.", "residual.": "residual.", "upsample.": "upsample."})


def _diagnose(official_names: set[str]) -> str | None:
    if "ca_net.fc.weight" not in official_names and "h_net1.fc.0.weight" in official_names:
        return ("it has no ca_net (conditioning augmentation): an unconditional StackGAN-v2 model (the released "
                "dog, cat, bedroom and church models); stackgan2 generates from text and cannot hold it")
    if any(name.startswith("img_code_s16.") for name in official_names):
        return "it is a StackGAN-v2 discriminator (netD*.pth); import the generator netG_*.pth"
    if any(".att." in name for name in official_names):
        return "it has attention layers: an AttnGAN generator (--from attngan)"
    return None


STACKGAN_V2 = OfficialFamily(
    name="stackgan-v2",
    title="StackGAN++ (hanzhanggit/StackGAN-v2)",
    arch="stackgan2",
    default_preset="birds",
    generator_prefixes=generator_prefixes,
    diagnose=_diagnose,
    documentation="https://github.com/hanzhanggit/StackGAN-v2 (README, 'Pretrained Model')",
)
