"""Per-module parameter counts and output shapes (what ``stackgan2 info`` prints)."""

from __future__ import annotations

import torch

from stackgan2.config import ModelConfig
from stackgan2.networks import build_discriminators, build_generator, count_parameters


def _shape(t: torch.Tensor) -> str:
    return "B x " + " x ".join(str(d) for d in t.shape[1:])


@torch.no_grad()
def model_summary(cfg: ModelConfig) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
    """Rows (module, parameters, output shape) for a batch of 2 on the meta device, and totals.

    AttnGAN models list each refine stage's word attention (its output: one map per word, T words)."""
    attngan = cfg.arch == "attngan"
    with torch.device("meta"):
        G = build_generator(cfg).eval()
        discriminators = build_discriminators(cfg).eval()
        z, text = torch.zeros(2, cfg.z_dim), torch.zeros(2, cfg.text_dim)
        c_code, mu, _ = G.ca(text)
        rows = [("G.ca (ConditioningAugmentation)", count_parameters(G.ca), _shape(c_code))]
        hidden = G.init_stage(torch.cat([c_code, z], dim=1))
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
                hidden = refine(hidden, c_code)
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
