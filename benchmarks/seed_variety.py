"""Do the seeds of a prompt draw different birds, or one bird on other backgrounds?

    python benchmarks/seed_variety.py --model assets/toy-birds --model runs/other

The diversity ratio of ``stackgan2 eval`` compares the spread of four seeds' classifier features with that
of real birds of the prompt's colours: a new background, a colour drift or texture noise count as spread as
much as a new pose does. This script asks the shipped toy-birds classifier (the judge of ``stackgan2 eval``,
never used in training) about the attributes a prompt "a {body} bird with {wing} wings" leaves open: pose
(perched or flying), background, size and wing pattern. For ``--num-prompts`` prompts (colours drawn with
``--seed``) and ``--seeds`` noise seeds each, on one branch of each model (the final one by default):

- ``disagreement``: per attribute, the share of pairs of seeds of one prompt that the classifier reads as
  different (0: every seed draws the same pose);
- ``real``: the same share for two real toy-birds test images drawn at random (1 - sum of p^2 over the
  classifier's reading of the 2,933 test images; in toy-birds these attributes are drawn independently of
  the colours), so the attribute varies among real birds of the prompt's colours as much as this;
- ``ratio`` = disagreement / real: 1 = the seeds vary it as much as real birds do.

Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from stackgan2.data import toybirds
from stackgan2.metrics.classifier import load_classifier
from stackgan2.pipeline import Text2ImagePipeline, shipped_classifier_dir

COLORS = list(toybirds.COLORS)
OPEN = ("pose", "background", "size", "wing_pattern")  # what the prompts leave open and the classifier reads well


def _to_tensor(images: list) -> torch.Tensor:
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


@torch.no_grad()
def read(classifier, images: torch.Tensor, batch: int = 200) -> dict[str, np.ndarray]:
    """The classifier's reading of each open attribute, (N,) value indices."""
    heads = [classifier(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {name: torch.cat([h[name] for h in heads]).argmax(1).numpy() for name in OPEN}


def disagreement(labels: np.ndarray) -> float:
    """(P, S) readings -> the share of seed pairs within a prompt that differ."""
    pairs = list(combinations(range(labels.shape[1]), 2))
    return float(np.mean([(labels[:, a] != labels[:, b]).mean() for a, b in pairs]))


def chance_disagreement(labels: np.ndarray) -> float:
    """(N,) readings of independent images -> the probability that two of them differ."""
    p = np.bincount(labels) / len(labels)
    return float(1 - (p**2).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="run dir, checkpoint or pipeline "
                        "dir (repeatable)")
    parser.add_argument("--classifier", type=Path, default=None, help="default: the shipped toy-birds classifier")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=8, help="noise seeds per prompt")
    parser.add_argument("--branch", type=int, default=-1, help="generator branch (default: the final one)")
    parser.add_argument("--real-images", type=int, default=None, help="real test images for the reference "
                        "(default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.num_prompts < 1:
        parser.error("need --seeds >= 2 and --num-prompts >= 1")
    classifier_dir = args.classifier or shipped_classifier_dir()
    if classifier_dir is None:
        parser.error("no shipped classifier: pass --classifier")
    classifier, _ = load_classifier(classifier_dir)

    from stackgan2.config import DataConfig
    from stackgan2.data import build_dataset

    size = classifier.spec.image_size
    test = build_dataset(DataConfig(), "test", [size], augment=False)  # the images `stackgan2 eval` compares with
    count = min(args.real_images or len(test), len(test))
    real_images = torch.from_numpy(np.stack([test.real_image(i, size) for i in range(count)]))
    real = read(classifier, real_images.permute(0, 3, 1, 2).float() / 127.5 - 1)
    chance = {name: chance_disagreement(values) for name, values in real.items()}

    rng = np.random.default_rng(args.seed)
    prompts = [f"a {COLORS[rng.integers(len(COLORS))]} bird with {COLORS[rng.integers(len(COLORS))]} wings"
               for _ in range(args.num_prompts)]
    for model in args.model:
        output = Text2ImagePipeline.from_pretrained(model, device="cpu")(prompts, args.seeds, seed=args.seed)
        assert output.indices == list(range(args.seeds)) * len(prompts), "images are not prompt-major"
        readings = read(classifier, _to_tensor(output.branches[args.branch]))
        attributes = {}
        for name, values in readings.items():
            share = disagreement(values.reshape(len(prompts), args.seeds))
            attributes[name] = {"disagreement": round(share, 4), "real": round(chance[name], 4),
                                "ratio": round(share / chance[name], 3) if chance[name] else None}
        ratios = [a["ratio"] for a in attributes.values() if a["ratio"] is not None]
        print(json.dumps({"model": str(model), "branch": f"{output.resolutions[args.branch]}px", "prompts": len(prompts),
                          "seeds": args.seeds, "mean_ratio": round(float(np.mean(ratios)), 3), **attributes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
