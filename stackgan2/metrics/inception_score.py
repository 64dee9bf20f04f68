"""Inception Score (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016).

IS = exp(E_x KL(p(y|x) || p(y))), computed on ``splits`` equal parts of the samples and reported as
the mean and (population) standard deviation over the parts. Ten splits is the protocol of the
reference code (openai/improved-gan ``inception_score.py``) and of the StackGAN/StackGAN++ evaluation
(hanzhanggit/StackGAN-inception-model, 30,000 samples in 10 splits).
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from stackgan2.errors import DataError

IS_SPLITS = 10


def inception_score(probabilities: np.ndarray, splits: int = IS_SPLITS) -> tuple[float, float]:
    """Mean and std of the Inception Score of class probabilities (N, C) over ``splits`` parts.

    Part k holds samples ``k*N//splits`` to ``(k+1)*N//splits``, as in the reference code.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise DataError(f"class probabilities must be a 2-d array (samples, classes), got shape {probs.shape}")
    n = probs.shape[0]
    if splits < 1 or n < splits:
        raise DataError(f"the Inception Score with {splits} splits needs at least {splits} samples, got {n}")
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise DataError("class probabilities must be non-negative and sum to 1 per sample (apply softmax first)")
    scores = []
    for k in range(splits):
        part = probs[k * n // splits : (k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        # xlogy(0, .) = 0: a class a sample gives no probability adds nothing to its KL term.
        kl = xlogy(part, part) - xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
