"""How much of the prompted colours reaches the generator through conditioning augmentation?

    python benchmarks/condition_probe.py --model runs/quality/ship64 [--model ...]

StackGAN++ never shows the generator the sentence embedding itself: it sees c = mu + sigma * eps,
the conditioning-augmentation (CA) sample, with a KL term (``train.kl_coef``) pulling mu towards 0
and sigma towards 1. Whatever colour the noise drowns in c, the generator cannot draw. For toy-birds
captions that name a body and a wing colour (two templates, colours drawn with ``--seed``), this
script fits a linear probe (least squares onto one-hot colours, with a bias; ``--train`` captions)
and reports its accuracy on ``--test`` other captions, for three inputs of the model's G_ema:

- ``sentence``: the text encoder's sentence embedding (what the CA network reads);
- ``mu``: the CA mean;
- ``c``: the CA sample as training draws it (one eps per caption, scaled by ``model.ca_noise``).

Chance is 10 %. A colour that ``mu`` carries and ``c`` does not is lost to the CA noise. Prints one
JSON line per model, with the mean sigma and mean |mu| of the test captions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from stackgan2.data import toybirds
from stackgan2.pipeline import Text2ImagePipeline

COLORS = list(toybirds.COLORS)
TEMPLATES = ("a {body} bird with {wing} wings", "this bird has a {body} belly and {wing} wing feathers")


def captions(count: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``count`` captions naming a body and a wing colour, and their (count, 2) colour codes."""
    codes = rng.integers(len(COLORS), size=(count, 2))
    texts = [TEMPLATES[i % len(TEMPLATES)].format(body=COLORS[b], wing=COLORS[w]) for i, (b, w) in enumerate(codes)]
    return texts, codes


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of a least-squares linear classifier (one-hot targets, bias column)."""
    design = np.c_[x_train, np.ones(len(x_train))]
    weights = np.linalg.lstsq(design, np.eye(len(COLORS))[y_train], rcond=None)[0]
    return float(((np.c_[x_test, np.ones(len(x_test))] @ weights).argmax(1) == y_test).mean())


@torch.no_grad()
def codes_of(pipe: Text2ImagePipeline, texts: list[str], generator: torch.Generator) -> dict[str, np.ndarray]:
    sentence = pipe.encode(texts).embeddings
    ca = pipe.generator.ca
    _, mu, logvar = ca(sentence)
    std = torch.exp(0.5 * logvar)
    c = mu + ca.noise * std * torch.randn(std.shape, generator=generator)  # model.ca_noise
    return {"sentence": sentence.numpy(), "mu": mu.numpy(), "c": c.numpy(), "std": std.numpy()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="run dir, checkpoint or "
                        "pipeline dir of a StackGAN++ model with our own text encoder (repeatable)")
    parser.add_argument("--train", type=int, default=3000, help="captions to fit the probe on")
    parser.add_argument("--test", type=int, default=1000, help="captions to measure it on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train < 2 * len(COLORS) or args.test < 1:
        parser.error(f"--train must be at least {2 * len(COLORS)} and --test at least 1")
    rng = np.random.default_rng(args.seed)
    train_texts, train_y = captions(args.train, rng)
    test_texts, test_y = captions(args.test, rng)
    for model in args.model:
        pipe = Text2ImagePipeline.from_pretrained(model, device="cpu")
        if not hasattr(pipe.generator, "ca"):
            parser.error(f"{model}: not a model with conditioning augmentation")
        noise = torch.Generator().manual_seed(args.seed)
        train, test = codes_of(pipe, train_texts, noise), codes_of(pipe, test_texts, noise)
        row: dict[str, object] = {"model": str(model)}
        for name in ("sentence", "mu", "c"):
            for part, column in (("body", 0), ("wing", 1)):
                row[f"{name}_{part}"] = probe_accuracy(train[name], train_y[:, column], test[name], test_y[:, column])
        row["mean_sigma"] = float(test["std"].mean())
        row["mean_abs_mu"] = float(np.abs(test["mu"]).mean())
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
