"""Per-module parameter counts and output shapes (what ``stackgan2 info`` prints)."""

from __future__ import annotations

import torch

from stackgan2.config import ModelConfig
from stackgan2.models import build_discriminators, build_generator, count_parameters

Rows = list[tuple[str, int, str]]


def _shape(t: torch.Tensor) -> str:
    return "B x " + " x ".join(str(d) for d in t.shape[1:])


@torch.no_grad()
def model_summary(cfg: ModelConfig) -> tuple[Rows, dict[str, int]]:
    """Rows (module, parameters, output shape) for a batch of 2 on the meta device, and totals.
    StackGAN v1: both stages, whichever ``v1_stage`` ``cfg`` trains. AttnGAN models list each refine
    stage's word attention (its output: one map per word, T words)."""
    if cfg.arch == "stackgan1":
        return _stackgan1_summary(cfg)
    attngan = cfg.arch == "attngan"
    with torch.device("meta"):
        G = build_generator(cfg).eval()
        discriminators = build_discriminators(cfg).eval()
        z, text = torch.zeros(2, cfg.z_dim), torch.zeros(2, cfg.text_dim)
        c_code, mu, _ = G.ca(text)
        rows = [("G.ca (ConditioningAugmentation)", count_parameters(G.ca), _shape(c_code))]
        # StackGAN++ levers: text fusion reads c, word attention a caption's words (one word here).
        words = torch.zeros(2, cfg.text_dim, 1) if cfg.g_word_attention else None
        hidden = G.init_stage(torch.cat([c_code, z], dim=1), c_code, words)
        rows.append(("G.init_stage (InitStage)", count_parameters(G.init_stage), _shape(hidden)))
        images = [G.to_images[0](hidden)]
        rows.append(("G.to_images.0 (ToImage)", count_parameters(G.to_images[0]), _shape(images[0])))
        for i, (refine, to_image) in enumerate(zip(G.refine_stages, G.to_images[1:], strict=True), start=1):
            if attngan:
                size = hidden.shape[-1]
                hidden, _ = refine(hidden, torch.zeros(2, cfg.text_dim, 1), None)
                rows.append((f"G.refine_stages.{i - 1}.attention (WordAttention)", count_parameters(refine.attention),
                             f"B x T x {size} x {size} maps + context B x {cfg.ngf} x {size} x {size}"))
            else:
                hidden = refine(hidden, c_code, words)
            name = type(refine).__name__
            rows.append((f"G.refine_stages.{i - 1} ({name})", count_parameters(refine), _shape(hidden)))
            images.append(to_image(hidden))
            rows.append((f"G.to_images.{i} (ToImage)", count_parameters(to_image), _shape(images[-1])))
        for i, (D, image) in enumerate(zip(discriminators, images, strict=True)):
            D(image, text if attngan else mu)  # AttnGAN conditions D on the sentence embedding
            rows.append((f"D.{i} (StageDiscriminator {D.resolution} px)", count_parameters(D), "B cond + B uncond logits"))
    totals = {"generator": count_parameters(G)}
    totals.update({f"discriminator {D.resolution} px": count_parameters(D) for D in discriminators})
    totals["discriminators"] = count_parameters(discriminators)
    return rows, totals


@torch.no_grad()
def _stackgan1_summary(cfg: ModelConfig) -> tuple[Rows, dict[str, int]]:
    from stackgan2.models.stackgan1 import StageTwoGenerator

    stage_1, stage_2 = cfg.model_copy(update={"v1_stage": 1}), cfg.model_copy(update={"v1_stage": 2})
    with torch.device("meta"):
        G = StageTwoGenerator(stage_2).eval()
        D1, D2 = build_discriminators(stage_1)[0].eval(), build_discriminators(stage_2)[0].eval()
        z, text = torch.zeros(2, cfg.z_dim), torch.zeros(2, cfg.text_dim)
        G1, rows = G.stage1, []

        def add(name: str, module: torch.nn.Module, out: torch.Tensor | str) -> None:
            rows.append((name, count_parameters(module), out if isinstance(out, str) else _shape(out)))

        c_code, mu, _ = G1.ca(text)
        add("Stage I   G.ca (ConditioningAugmentation, ReLU)", G1.ca, c_code)
        hidden = G1.init_stage(torch.cat([z, c_code], dim=1))
        add("Stage I   G.init_stage (InitStage, ReLU)", G1.init_stage, hidden)
        low = G1.to_image(hidden)
        add("Stage I   G.to_image (ToImage)", G1.to_image, low)
        D1(low, mu)
        add(f"Stage I   D (StageDiscriminator {D1.resolution} px)", D1, "B cond logits")
        c_code, mu, _ = G.ca(text)
        add("Stage II  G.ca (ConditioningAugmentation, ReLU)", G.ca, c_code)
        code = G.image_encoder(low)
        add("Stage II  G.image_encoder", G.image_encoder, code)
        hidden = G.refine(code, c_code)
        add(f"Stage II  G.refine (RefineStage, ReLU, {cfg.r_num} residual, 4 up-blocks)", G.refine, hidden)
        image = G.to_image(hidden)
        add("Stage II  G.to_image (ToImage)", G.to_image, image)
        D2(image, mu)
        add(f"Stage II  D (StageDiscriminator {D2.resolution} px)", D2, "B cond + B uncond logits")
    stage1_params = count_parameters(G1)
    totals = {
        "Stage-I generator": stage1_params,
        "Stage-I discriminator": count_parameters(D1),
        "Stage-II generator (trainable)": count_parameters(G) - stage1_params,
        "Stage-II generator (with the frozen Stage-I G)": count_parameters(G),
        "Stage-II discriminator": count_parameters(D2),
    }
    return rows, totals
