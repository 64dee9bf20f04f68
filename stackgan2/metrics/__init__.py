"""Evaluation: the metric functions, the networks that judge images, and ``stackgan2 eval``.

Pure metric functions of arrays (numpy/scipy only): ``frechet`` (FID), ``inception_score`` and
``r_precision``. The judging networks: ``classifier`` (the dataset classifier of
``stackgan2 train-classifier``) and ``inception`` (torchvision Inception-v3 from a local weights
file). ``evaluate`` generates images for the test captions and computes everything.
"""

from __future__ import annotations

from stackgan2.metrics.frechet import feature_statistics, fid_from_features, frechet_distance
from stackgan2.metrics.inception_score import inception_score
from stackgan2.metrics.r_precision import mismatched_candidates, r_precision

__all__ = [
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "mismatched_candidates",
    "r_precision",
]
