"""Does the generator draw the prompted colours, or only make the DAMSM encoder read them?

    python benchmarks/damsm_gap.py --model runs/quality/ship64 --text-encoder runs/te-damsm
    python benchmarks/damsm_gap.py --model assets/toy-birds --text-encoder runs/te-damsm --real

A generator trained against a frozen DAMSM image encoder (``--damsm-coef``) can satisfy it with
pixel patterns that encoder reads and a bird-watcher would not. This script measures that gap on
toy-birds. For ``--num-prompts`` prompts "a {body} bird with {wing} wings" (colours drawn with
``--seed``), one image per prompt from every branch of the model is judged twice:

- by the shipped toy-birds classifier (the judge of ``stackgan2 eval --metrics attributes``, never
  used in training): does it read the prompted body / wing colour?
- by the DAMSM encoders of ``--text-encoder``: among the ten captions that differ from the prompt
  only in the body colour (or only in the wing colour), is the prompt's own caption the closest to
  the image's global feature (cosine)?

``--real`` runs the same two judges on real toy-birds test images (the default data's test split,
centre crops) with their true colours: the ceiling of both. A large DAMSM-minus-classifier gap on generated images, with none on real ones,
means the DAMSM loss is being met by features of the encoder rather than by drawn colours. Prints
one JSON line per model (and one for ``--real``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stackgan2.data import toybirds
from stackgan2.metrics.classifier import load_classifier
from stackgan2.pipeline import Text2ImagePipeline, shipped_classifier_dir
from stackgan2.text.features import FrozenDAMSM
from stackgan2.text.prompt import PromptEncoder

COLORS = list(toybirds.COLORS)


def _to_tensor(images: list) -> torch.Tensor:
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


@torch.no_grad()
def judge(images: torch.Tensor, pairs: list[tuple[int, int]], classifier, damsm: FrozenDAMSM) -> dict[str, float]:
    """Body / wing accuracy of the classifier and of DAMSM caption ranking on ``images`` in [-1, 1]."""
    body = np.array([b for b, _ in pairs])
    wing = np.array([w for _, w in pairs])
    predicted = classifier(images)
    _, image_global = damsm.images(images)
    image_global = F.normalize(image_global.float(), dim=1)
    # Ten captions per image and target: the prompt with its body (or wing) colour replaced by each colour.
    hits = {"body": 0, "wing": 0}
    for target in hits:
        captions = [f"a {c} bird with {COLORS[w]} wings" if target == "body" else f"a {COLORS[b]} bird with {c} wings"
                    for b, w in pairs for c in COLORS]
        sentence = damsm.captions(captions, torch.zeros(len(captions), dtype=torch.long)).sentence
        scores = torch.einsum("ncd,nd->nc", F.normalize(sentence.float(), dim=1).view(len(pairs), len(COLORS), -1),
                              image_global)
        truth = body if target == "body" else wing
        hits[target] = float((scores.argmax(1).numpy() == truth).mean())
    return {
        "classifier_body": float((predicted["body_color"].argmax(1).numpy() == body).mean()),
        "classifier_wing": float((predicted["wing_color"].argmax(1).numpy() == wing).mean()),
        "damsm_body": hits["body"],
        "damsm_wing": hits["wing"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", default=[], help="run dir, checkpoint or pipeline dir "
                        "(repeatable)")
    parser.add_argument("--text-encoder", type=Path, required=True, help="a `stackgan2 pretrain-text` output (with "
                        "its DAMSM image encoder): the DAMSM judge")
    parser.add_argument("--classifier", type=Path, default=None, help="default: the shipped toy-birds classifier")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="also judge real toy-birds test images")
    args = parser.parse_args(argv)
    if not args.model and not args.real:
        parser.error("give --model and/or --real")
    classifier_dir = args.classifier or shipped_classifier_dir()
    if classifier_dir is None:
        parser.error("no shipped classifier: pass --classifier")
    classifier, _ = load_classifier(classifier_dir)
    classifier.eval()
    damsm = FrozenDAMSM(PromptEncoder.load(args.text_encoder), "cpu")
    size = damsm.image_size
    rng = np.random.default_rng(args.seed)
    pairs = [(int(rng.integers(len(COLORS))), int(rng.integers(len(COLORS)))) for _ in range(args.num_prompts)]
    prompts = [f"a {COLORS[b]} bird with {COLORS[w]} wings" for b, w in pairs]
    for model in args.model:
        output = Text2ImagePipeline.from_pretrained(model, device="cpu")(prompts, seed=args.seed)
        for branch, images in enumerate(output.branches):
            scores = judge(_to_tensor(images), pairs, classifier, damsm)
            print(json.dumps({"model": str(model), "branch": f"{output.resolutions[branch]}px", "prompts": len(pairs),
                              **scores}), flush=True)
    if args.real:
        from stackgan2.config import DataConfig
        from stackgan2.data import build_dataset

        test = build_dataset(DataConfig(), "test", [size], augment=False)  # the images `stackgan2 eval` compares with
        count = min(args.num_prompts, len(test))
        truth = [(int(test.attributes["body_color"][i]), int(test.attributes["wing_color"][i])) for i in range(count)]
        images = np.stack([test.real_image(i, size) for i in range(count)])
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        print(json.dumps({"model": "real toy-birds test images", "branch": f"{size}px", "prompts": count,
                          **judge(tensor, truth, classifier, damsm)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
