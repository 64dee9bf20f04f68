"""R-precision of generated images (AttnGAN, Xu et al., CVPR 2018, section 5).

Each generated image ranks the caption it was generated from against 99 mismatched captions by the
cosine similarity of DAMSM features (global image feature vs sentence feature); with R = 1 the score
is the fraction of images whose own caption ranks first. As in ``stackgan2.text.evaluate_r_precision``
(the same measure on real images), mismatched captions come from images of other classes, since
another caption of the same class may well describe the image. AttnGAN's code has no R-precision;
DM-GAN's ``trainer.py: sampling`` (the protocol its authors call AttnGAN's) reports the mean and
standard deviation over folds of the shuffled images (10 folds of 3,000 images): ``fold_statistics``.
"""

from __future__ import annotations

import numpy as np

from stackgan2.errors import DataError

R_PRECISION_CANDIDATES = 100  # AttnGAN: 1 matching caption among 100


def mismatched_candidates(
    class_ids: np.ndarray, candidates: int = R_PRECISION_CANDIDATES, seed: int = 0
) -> np.ndarray:
    """(N, candidates) indices into the N captions: column 0 is the own caption, the rest mismatched ones.

    Mismatched captions belong to samples of another class (another sample when all share one class).
    """
    class_ids = np.asarray(class_ids)
    n = len(class_ids)
    rng = np.random.default_rng(seed)
    single_class = len(np.unique(class_ids)) < 2
    other_classes = {} if single_class else {c: np.flatnonzero(class_ids != c) for c in np.unique(class_ids)}
    table = np.empty((n, candidates), dtype=np.int64)
    for i in range(n):
        available = n - 1 if single_class else len(other_classes[class_ids[i]])
        if available < candidates - 1:
            raise DataError(
                f"R-precision with {candidates} candidates needs {candidates - 1} mismatched captions per sample; "
                f"sample {i} has only {available} (evaluate more samples)"
            )
        if single_class:
            picks = rng.choice(n - 1, size=candidates - 1, replace=False)
            picks += picks >= i  # skip the sample itself
        else:
            picks = rng.choice(other_classes[class_ids[i]], size=candidates - 1, replace=False)
        table[i, 0] = i
        table[i, 1:] = picks
    return table


R_PRECISION_FOLDS = 10  # DM-GAN: 30,000 images in 10 folds of 3,000


def r_precision(
    image_features: np.ndarray, caption_features: np.ndarray, candidates: np.ndarray, chunk: int = 1024
) -> float:
    """Fraction of images i whose caption ``candidates[i, 0]`` is strictly the most similar of ``candidates[i]``.

    ``image_features`` (N, D) and ``caption_features`` (M, D) are compared by cosine similarity;
    ``candidates`` (N, K) indexes the captions.
    """
    return float(r_precision_hits(image_features, caption_features, candidates, chunk).mean())


def fold_statistics(hits: np.ndarray, folds: int = R_PRECISION_FOLDS, seed: int = 0) -> tuple[float, float, int]:
    """Mean and (population) standard deviation of the hit rate over ``folds`` equal folds of the shuffled
    images (DM-GAN: ``np.random.shuffle`` then 10 folds); fewer folds when there are fewer images.
    Images beyond folds * (N // folds) are left out, as in DM-GAN. Returns (mean, std, folds used)."""
    hits = np.asarray(hits, dtype=np.float64)
    folds = max(1, min(folds, len(hits)))
    order = np.random.default_rng(seed).permutation(len(hits))
    size = len(hits) // folds
    rates = hits[order[: folds * size]].reshape(folds, size).mean(axis=1)
    return float(rates.mean()), float(rates.std()), folds


def r_precision_hits(
    image_features: np.ndarray, caption_features: np.ndarray, candidates: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """(N,) bool: whether image i's caption ``candidates[i, 0]`` is strictly the most similar (see ``r_precision``)."""
    images = np.asarray(image_features, dtype=np.float64)
    captions = np.asarray(caption_features, dtype=np.float64)
    candidates = np.asarray(candidates)
    if images.ndim != 2 or captions.ndim != 2 or images.shape[1] != captions.shape[1]:
        raise DataError(f"feature shapes do not match: images {images.shape}, captions {captions.shape}")
    if candidates.ndim != 2 or candidates.shape[0] != images.shape[0] or candidates.shape[1] < 2:
        raise DataError(f"candidates must be (N={images.shape[0]}, K >= 2) caption indices, got {candidates.shape}")
    images = images / np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-8)
    captions = captions / np.maximum(np.linalg.norm(captions, axis=1, keepdims=True), 1e-8)
    hits = []
    for start in range(0, len(images), chunk):
        block = candidates[start : start + chunk]
        scores = np.einsum("nd,nkd->nk", images[start : start + chunk], captions[block])
        hits.append(scores[:, 0] > scores[:, 1:].max(axis=1))
    return np.concatenate(hits)
