"""Frechet distance between two Gaussians fitted to feature sets (the FID of Heusel et al., NeurIPS 2017).

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The matrix square root follows the reference
implementations (TTUR's ``fid.py``, mseitzer/pytorch-fid): ``scipy.linalg.sqrtm``; when the product
is singular (the result is not finite) a small offset ``eps * I`` is added to both covariances; a
numerically imaginary component is dropped, unless it is too large to be rounding error.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import linalg

from stackgan2.errors import DataError

logger = logging.getLogger("stackgan2.metrics")


def feature_statistics(features: np.ndarray, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of ``features`` (N, D), in float64.

    With N <= D the covariance is rank deficient (rank <= N - 1), which biases the distance; this is
    logged as a warning stating the rank, since small evaluation runs are still useful as smoke tests.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise DataError(f"{what} must be a 2-d array (samples, dimensions), got shape {features.shape}")
    n, d = features.shape
    if n < 2:
        raise DataError(f"{what}: the Frechet distance needs at least 2 samples, got {n}")
    if not np.isfinite(features).all():
        raise DataError(f"{what} contain NaN or infinite values")
    if n <= d:
        rank = np.linalg.matrix_rank(features - features.mean(axis=0))
        logger.warning(
            "%s: %d samples of %d-d features give a covariance of rank %d < %d; the Frechet distance is "
            "biased (use more than %d samples)", what, n, d, rank, d, d,
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise DataError(
            f"statistics do not match: means {mu1.shape} / {mu2.shape}, covariances {sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is detected and handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning("Frechet distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(covmean.imag))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DataError(f"Frechet distance: the covariance square root has an imaginary part of {largest:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(
    features1: np.ndarray, features2: np.ndarray, names: tuple[str, str] = ("first feature set", "second feature set")
) -> float:
    """Frechet distance between two feature sets (N1, D) and (N2, D); ``names`` label them in messages."""
    mu1, sigma1 = feature_statistics(features1, names[0])
    mu2, sigma2 = feature_statistics(features2, names[1])
    return frechet_distance(mu1, sigma1, mu2, sigma2)
