"""Diversity per prompt: does the noise still change the image? A number for "z collapse".

A text-to-image generator that learns to ignore its noise z draws nearly the same image for every
seed of a prompt; FID and attribute accuracy barely notice. The measure:

- P prompts from the test captions (the first P samples of ``stackgan2 eval``'s sampling plan,
  P = min(num_samples // S, number of test captions)), S = ``DIVERSITY_SEEDS`` images each, with
  S different noise seeds (prompt p gets seeds ``seed + p * S + s``), quantised to uint8 like every
  evaluated image and embedded with the feature extractor FID uses (the dataset classifier's
  features, or Inception-v3 pool3 when its weights are given).
- ``diversity`` = the mean over prompts of the mean pairwise L2 distance between the S features of
  that prompt.
- ``diversity_real``: the same statistic over groups of S real test images of the prompt's class
  (toy-birds: the (body, wing) colour class, i.e. real birds of the prompted colours), one group per
  prompt whose class holds at least S test images, drawn with ``seed``; when no prompt's class
  does (one image per class, as COCO's caption layout), one group of S random test images per prompt.
- ``diversity_ratio`` = diversity / diversity_real: 1 = as varied as real images of the same class,
  near 0 = the generator ignores its noise.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from stackgan2.errors import DataError

DIVERSITY_SEEDS = 4  # images (noise seeds) per prompt


def mean_pairwise_distance(features: np.ndarray, group_size: int) -> float:
    """(G * S, D) features in consecutive groups of S -> the mean over groups of the mean pairwise L2
    distance within a group."""
    groups = np.asarray(features, dtype=np.float64).reshape(-1, group_size, features.shape[-1])
    pairs = list(combinations(range(group_size), 2))
    # Every group has the same pairs, so the mean of the per-group means is the mean over all pairs.
    return float(np.mean([np.linalg.norm(groups[:, a] - groups[:, b], axis=1).mean() for a, b in pairs]))


def real_groups(
    prompt_classes: np.ndarray, real_classes: np.ndarray, group_size: int, seed: int
) -> tuple[np.ndarray, str]:
    """(G, S) indices of real test images and how they were grouped (``"same class"`` or ``"random"``).

    One group of S distinct images of the prompt's class per prompt whose class has at least S test
    images; when none has, one group of S distinct random test images per prompt.
    """
    real_classes = np.asarray(real_classes)
    if len(real_classes) < group_size:
        raise DataError(f"the diversity reference needs at least {group_size} real test images, "
                        f"the test split has {len(real_classes)}")
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(real_classes == c) for c in np.unique(prompt_classes)}
    usable = [c for c in prompt_classes if len(members[c]) >= group_size]
    if usable:
        return np.stack([rng.choice(members[c], size=group_size, replace=False) for c in usable]), "same class"
    return np.stack([rng.choice(len(real_classes), size=group_size, replace=False) for _ in prompt_classes]), "random"


def diversity_scores(
    generated: np.ndarray, real: np.ndarray, prompt_classes: np.ndarray, real_classes: np.ndarray,
    seeds_per_prompt: int, seed: int,
) -> dict[str, Any]:
    """``diversity``, ``diversity_real``, ``diversity_ratio`` (None when the real images do not vary) and
    ``diversity_groups`` (how many of what) from (P * S, D) generated features, S per prompt in order,
    and (N, D) features of the real test images."""
    prompts = len(prompt_classes)
    assert generated.shape[0] == prompts * seeds_per_prompt, (generated.shape, prompts, seeds_per_prompt)
    groups, reference = real_groups(prompt_classes, real_classes, seeds_per_prompt, seed)
    value = mean_pairwise_distance(generated, seeds_per_prompt)
    value_real = mean_pairwise_distance(real[groups.reshape(-1)], seeds_per_prompt)
    return {
        "diversity": value,
        "diversity_real": value_real,
        "diversity_ratio": value / value_real if value_real > 0 else None,
        "diversity_groups": {"prompts": prompts, "seeds_per_prompt": seeds_per_prompt, "real_groups": len(groups),
                             "real_reference": reference},
    }
