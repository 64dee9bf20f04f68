"""The pure metric functions against hand-computed values: Frechet distance, Inception Score, R-precision."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from stackgan2.errors import DataError
from stackgan2.metrics.diversity import diversity_scores, mean_pairwise_distance, real_groups
from stackgan2.metrics.frechet import feature_statistics, fid_from_features, frechet_distance
from stackgan2.metrics.inception_score import inception_score
from stackgan2.metrics.r_precision import (
    fold_statistics,
    mismatched_candidates,
    r_precision,
    r_precision_hits,
)

# ----------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    # |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 for diagonal covariances a, b.
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 9.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_with_a_non_diagonal_covariance():
    # S1 = I, S2 = [[2, 1], [1, 2]] (eigenvalues 3 and 1): Tr(S1 + S2 - 2 S2^1/2) = (1 - sqrt 3)^2.
    sigma2 = np.array([[2.0, 1.0], [1.0, 2.0]])
    expected = 25.0 + (1 - math.sqrt(3)) ** 2
    assert frechet_distance(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), sigma2) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_is_symmetric_and_zero_for_identical_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    s1, s2 = np.cov(x, rowvar=False), np.cov(x[:, ::-1] * 2, rowvar=False)
    mu1, mu2 = np.ones(4), np.arange(4.0)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_a_feature_set_against_itself_is_zero():
    features = np.random.default_rng(1).normal(size=(400, 16))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-7)


def test_fid_of_samples_approaches_the_closed_form():
    # N(0, I) vs N(1, 4 I) in 4-d: |mu|^2 = 4, trace term 4 * (1 + 4 - 2 * 2) = 4, so FID = 8.
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40000, 4))
    b = 1.0 + 2.0 * rng.normal(size=(40000, 4))
    assert fid_from_features(a, b) == pytest.approx(8.0, abs=0.15)


def test_rank_deficient_features_warn_with_the_rank(caplog):
    features = np.random.default_rng(3).normal(size=(5, 8))
    with caplog.at_level(logging.WARNING, logger="stackgan2.metrics"):
        mu, sigma = feature_statistics(features, "generated")
    assert mu.shape == (8,) and sigma.shape == (8, 8)
    assert "rank 4 < 8" in caplog.text and "generated" in caplog.text


def test_singular_covariance_product_gets_a_diagonal_offset(caplog):
    # [[0, 1], [0, 0]] has no square root: sqrtm returns non-finite values, so eps * I is added.
    nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger="stackgan2.metrics"):
        value = frechet_distance(np.zeros(2), nilpotent, np.zeros(2), np.eye(2))
    assert "adding" in caplog.text
    assert math.isfinite(value)


def test_a_large_imaginary_component_is_an_error():
    # A "covariance" with a negative eigenvalue gives S1 S2 a negative eigenvalue: sqrt is imaginary.
    with pytest.raises(DataError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))


@pytest.mark.parametrize(
    ("features", "match"),
    [(np.zeros((1, 3)), "at least 2"), (np.zeros(4), "2-d"), (np.array([[0.0, np.nan], [1.0, 1.0]]), "NaN")],
)
def test_bad_feature_sets_are_errors(features, match):
    with pytest.raises(DataError, match=match):
        feature_statistics(features)


def test_statistics_of_different_dimensions_are_an_error():
    with pytest.raises(DataError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ----------------------------------------------------------------------------- Inception Score


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    probs = np.eye(10)[np.arange(100) % 10]  # every split of 10 holds each class once
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_identical_predictions_is_one():
    probs = np.tile([0.2, 0.3, 0.5], (20, 1))
    assert inception_score(probs, splits=10) == pytest.approx((1.0, 0.0))


def test_inception_score_hand_computed():
    # p1 = (0.9, 0.1), p2 = (0.1, 0.9), p(y) = (0.5, 0.5):
    # KL = 0.9 ln 1.8 + 0.1 ln 0.2 = 0.368064 for both, IS = exp(0.368064) = 1.444935.
    mean, std = inception_score(np.array([[0.9, 0.1], [0.1, 0.9]]), splits=1)
    assert mean == pytest.approx(1.444935, abs=1e-6) and std == 0.0


def test_inception_score_std_is_over_splits():
    # First split: two confident classes (IS 2); second: identical predictions (IS 1).
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    mean, std = inception_score(probs, splits=2)
    assert mean == pytest.approx(1.5) and std == pytest.approx(0.5)


def test_inception_score_rejects_bad_input():
    with pytest.raises(DataError, match="at least 10 samples"):
        inception_score(np.full((5, 2), 0.5))
    with pytest.raises(DataError, match="sum to 1"):
        inception_score(np.full((20, 2), 2.0))


# ----------------------------------------------------------------------------- R-precision


def test_r_precision_hand_computed():
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    captions = np.array([[2.0, 0.2], [0.1, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    # image 0: own caption 0 (cos 0.995) beats 1 and 2; image 1: own caption 1 beats 0 and 2.
    assert r_precision(images, captions, np.array([[0, 1, 2], [1, 0, 2]])) == 1.0
    # image 0 against caption 3 (cos 1.0) loses; image 1 still wins.
    assert r_precision(images, captions, np.array([[0, 3, 2], [1, 0, 2]])) == 0.5


def test_r_precision_counts_ties_as_misses_and_works_in_chunks():
    images = np.array([[1.0, 0.0]] * 3)
    captions = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])  # captions 0 and 1 point the same way
    candidates = np.array([[0, 1], [0, 2], [0, 2]])
    assert r_precision(images, captions, candidates, chunk=2) == pytest.approx(2 / 3)


def test_mismatched_candidates_come_from_other_classes():
    class_ids = np.repeat(np.arange(5), 30)  # 150 samples, 120 of other classes each
    table = mismatched_candidates(class_ids, candidates=100, seed=0)
    assert table.shape == (150, 100)
    assert (table[:, 0] == np.arange(150)).all()
    assert (class_ids[table[:, 1:]] != class_ids[:, None]).all()
    assert all(len(set(row)) == 100 for row in table.tolist())
    assert (mismatched_candidates(class_ids, 100, seed=0) == table).all()


def test_mismatched_candidates_with_one_class_exclude_only_the_sample_itself():
    table = mismatched_candidates(np.zeros(100, dtype=np.int64), candidates=100)
    assert all(sorted(row) == list(range(100)) for row in table.tolist())


def test_mismatched_candidates_need_enough_samples():
    with pytest.raises(DataError, match="needs 99 mismatched captions"):
        mismatched_candidates(np.repeat(np.arange(2), 60), candidates=100)


def test_r_precision_folds_are_mean_and_std_of_shuffled_equal_folds():
    hits = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1])  # 11 images: 2 folds of 5 drop one image, as DM-GAN does
    mean, std, folds = fold_statistics(hits, folds=2, seed=0)
    order = np.random.default_rng(0).permutation(11)[:10].reshape(2, 5)
    rates = hits[order].mean(axis=1)
    assert (mean, std, folds) == (pytest.approx(rates.mean()), pytest.approx(rates.std()), 2)
    assert fold_statistics(np.ones(3, dtype=bool), folds=10) == (1.0, 0.0, 3)  # fewer images than folds
    images, captions = np.eye(2), np.eye(2)
    assert r_precision_hits(images, captions, np.array([[0, 1], [0, 1]])).tolist() == [True, False]


def test_mean_pairwise_distance_hand_computed():
    features = np.array([[0, 0], [3, 4], [0, 0], [1, 1], [1, 1], [1, 1]], dtype=float)
    # Group 1: distances 5, 0, 5 (mean 10/3); group 2: all 0.
    assert mean_pairwise_distance(features, 3) == pytest.approx(5 / 3)


def test_real_groups_share_the_prompts_class_and_are_deterministic():
    real_classes = np.array([0, 1, 0, 2, 0, 1, 0, 1])  # class 0: 4 images, class 1: 3, class 2: 1
    groups, reference = real_groups(np.array([0, 1, 2, 0]), real_classes, 3, seed=5)
    assert reference == "same class" and groups.shape == (3, 3)  # class 2 has too few images: no group
    assert [set(real_classes[g]) for g in groups] == [{0}, {1}, {0}]
    assert all(len(set(g)) == 3 for g in groups)
    assert np.array_equal(groups, real_groups(np.array([0, 1, 2, 0]), real_classes, 3, seed=5)[0])


def test_real_groups_fall_back_to_random_images_when_no_class_is_large_enough():
    groups, reference = real_groups(np.array([0, 1]), np.arange(6), 4, seed=0)
    assert reference == "random" and groups.shape == (2, 4) and all(len(set(g)) == 4 for g in groups)
    with pytest.raises(DataError, match="needs at least 4 real test images, the test split has 3"):
        real_groups(np.array([0]), np.arange(3), 4, seed=0)


def test_diversity_scores_of_identical_samples_are_zero():
    rng = np.random.default_rng(0)
    generated = np.repeat(rng.normal(size=(2, 5)), 4, axis=0)  # 2 prompts, 4 identical samples each
    scores = diversity_scores(generated, rng.normal(size=(8, 5)), np.array([0, 0]), np.zeros(8, int), 4, seed=0)
    assert scores["diversity"] == 0 and scores["diversity_real"] > 0 and scores["diversity_ratio"] == 0
    assert scores["diversity_groups"] == {"prompts": 2, "seeds_per_prompt": 4, "real_groups": 2,
                                          "real_reference": "same class"}
