"""Offline ranking metrics (experiments.core.ranking) against hand-computed examples, and the off-policy
estimators (experiments.studies.offline.ope) against closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from experiments.core import ranking as rk
from experiments.studies.offline import ope

# ------------------------------------------------------------------ ranking metrics
# Step 0: scores rank c0 > c2 > c3 > c1; relevant c1 (rank 3) and c2 (rank 1). Step 1: nothing relevant.
SCORES = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.4, 0.6, 0.8]])
RELEVANT = np.array([[False, True, True, False], [False, False, False, False]])


def test_ranks_follow_the_served_order_with_ties_to_the_lower_index():
    np.testing.assert_array_equal(rk.ranks(SCORES)[0], [0, 3, 1, 2])
    np.testing.assert_array_equal(rk.ranks(np.array([[1.0, 1.0, 0.0]])), [[0, 1, 2]])


def test_accuracy_metrics_by_hand():
    m = rk.accuracy_metrics(SCORES, RELEVANT, cutoffs=(2, 4))
    log2 = math.log2
    expected = {
        "precision@2": 1 / 2,  # c2 in the top 2
        "recall@2": 1 / 2,
        "hit_rate@2": 1.0,
        "ndcg@2": (1 / log2(3)) / (1 / log2(2) + 1 / log2(3)),
        "precision@4": 2 / 4,
        "recall@4": 1.0,
        "hit_rate@4": 1.0,
        "ndcg@4": (1 / log2(3) + 1 / log2(5)) / (1 / log2(2) + 1 / log2(3)),
        "mrr": 1 / 2,  # best relevant rank 1 (0-based)
    }
    for name, value in expected.items():
        assert m[name][0] == pytest.approx(value), name
        assert np.isnan(m[name][1]), f"{name}: a step without a relevant candidate is NaN, not 0"
    # A cutoff above C is capped at C.
    assert rk.accuracy_metrics(SCORES, RELEVANT, cutoffs=(10,))["recall@10"][0] == 1.0


def test_a_perfect_ranking_scores_one():
    relevant = np.array([[True, False, True, False]])
    m = rk.accuracy_metrics(np.array([[4.0, 1.0, 3.0, 2.0]]), relevant, cutoffs=(2,))
    assert all(m[name][0] == pytest.approx(1.0) for name in ("precision@2", "recall@2", "ndcg@2", "mrr"))


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_cutoffs_are_one_line_errors(k):
    with pytest.raises(ValueError, match="cutoff K must be an integer >= 1"):
        rk.accuracy_metrics(SCORES, RELEVANT, cutoffs=(k,))


def test_empty_or_nan_scores_are_errors():
    with pytest.raises(ValueError, match="S >= 1"):
        rk.ranks(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        rk.ranks(np.array([[np.nan, 1.0]]))


def test_beyond_accuracy_by_hand():
    topics = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert rk.intra_list_diversity(np.array([[0, 1, 2]]), topics) == pytest.approx(2 / 3)  # (1 + .5 + .5) / 3
    assert rk.intra_list_diversity(np.array([[0], [1]]), topics) == 0.0
    assert rk.coverage(np.array([[0, 1], [1, 2]]), n_items=10) == pytest.approx(0.3)
    info = rk.self_information(np.array([3, 1, 0]))  # p = 4/7, 2/7, 1/7
    np.testing.assert_allclose(info, -np.log2([4 / 7, 2 / 7, 1 / 7]))
    assert rk.novelty(np.array([[0, 2]]), info) == pytest.approx(-(math.log2(4 / 7) + math.log2(1 / 7)) / 2)
    np.testing.assert_array_equal(rk.top_items(SCORES, np.array([[10, 11, 12, 13]] * 2), 2), [[10, 12], [13, 12]])


def test_cold_start_rule():
    clicked = np.zeros((3, 8))
    clicked[1, :4] = 1  # 4 interactions: cold
    clicked[2, :5] = 1  # 5: warm
    features = clicked[..., None]
    mask = np.ones((3, 8))
    cold = rk.cold_start(features, mask, session=np.array([0, 0, 0]), new_user=np.array([False, False, False]))
    np.testing.assert_array_equal(cold, [True, True, False])
    # A new user's first session is cold whatever the history says; a later session is not.
    cold = rk.cold_start(features, mask, session=np.array([0, 0, 1]), new_user=np.array([True, True, True]))
    np.testing.assert_array_equal(cold, [True, True, False])


# ------------------------------------------------------------------ estimators
def test_balanced_bandit_closed_form():
    """C = 3 arms logged uniformly, each twice; rewards 1, 2, 4; the target always pulls arm 2."""
    slate = np.array([[0], [1], [2], [0], [1], [2]])
    reward = np.array([1.0, 2.0, 4.0])[slate]
    logging = np.full((6, 1, 3), 1 / 3)
    target = ope.one_hot(np.full(6, 2), 3)
    w = ope.importance_weights(target, logging, slate)
    np.testing.assert_allclose(w[:, 0], [0, 0, 3, 0, 0, 3])
    assert ope.ips(reward, w) == pytest.approx(4.0)
    assert ope.snips(reward, w) == pytest.approx(4.0)
    perfect = np.broadcast_to(np.array([1.0, 2.0, 4.0]), (6, 1, 3))
    assert ope.direct_method(target, perfect) == pytest.approx(4.0)
    wrong = np.ones((6, 1, 3))
    assert ope.direct_method(target, wrong) == pytest.approx(1.0)  # DM is as good as its model
    assert ope.doubly_robust(reward, w, target, wrong, slate) == pytest.approx(4.0)  # DR repairs it
    assert ope.doubly_robust(reward, w, target, perfect, slate) == pytest.approx(4.0)


def test_target_equal_to_logging_gives_the_on_policy_mean():
    rng = np.random.default_rng(0)
    logging = rng.dirichlet(np.ones(5), size=(200, 1))  # [S, 1, C]
    slate = np.array([[rng.choice(5, p=p[0])] for p in logging])
    reward = rng.random((200, 1))
    w = ope.importance_weights(logging, logging, slate)
    np.testing.assert_allclose(w, 1.0)
    assert ope.ips(reward, w) == pytest.approx(reward.mean())
    assert ope.snips(reward, w) == pytest.approx(reward.mean())


def test_ips_is_unbiased_on_a_stochastic_bandit():
    """Logging 0.6 / 0.3 / 0.1, Bernoulli rewards of means 0.2 / 0.5 / 0.9, target arm 2: E[IPS] = 0.9."""
    rng = np.random.default_rng(1)
    mu, means = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.9])
    n, reps = 2000, 200
    estimates = []
    for _ in range(reps):
        a = rng.choice(3, p=mu, size=n)
        r = (rng.random(n) < means[a]).astype(float)[:, None]
        w = ope.importance_weights(ope.one_hot(np.full(n, 2), 3), np.broadcast_to(mu, (n, 1, 3)), a[:, None])
        estimates.append(ope.ips(r, w))
    estimates = np.array(estimates)
    assert abs(estimates.mean() - 0.9) < 3 * estimates.std(ddof=1) / np.sqrt(reps)


def test_position_wise_ips_on_every_ordered_slate():
    """C = 3, K = 2, every ordered slate logged once (uniform): slot rewards depend on the slot's item
    only, so position-wise IPS and slate IPS both equal the target's value exactly."""
    slates = np.array(list(itertools.permutations(range(3), 2)))  # [6, 2]
    per_slot = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 0.0]])  # r_k(c)
    reward = per_slot[np.arange(2)[None, :], slates]
    logging = np.full((6, 2, 3), 1 / 3)
    target_slate = np.array([2, 0])
    target = ope.one_hot(np.tile(target_slate, (6, 1)), 3)
    w = ope.importance_weights(target, logging, slates)
    assert ope.ips(reward, w) == pytest.approx(3.0 + 0.5)
    match = (slates == target_slate).all(axis=1).astype(float)
    assert ope.slate_ips(reward.sum(axis=1), match, np.full(6, 1 / 6)) == pytest.approx(3.5)


def test_zero_support_is_an_error_or_a_labelled_nan():
    logging = ope.one_hot(np.zeros(4, int), 3)  # epsilon 0: always candidate 0
    target = ope.one_hot(np.ones(4, int), 3)
    slate, reward = np.zeros((4, 1), int), np.ones((4, 1))
    with pytest.raises(ope.UnsupportedTarget, match=r"zero support: at 4 of 4 logged steps \(100.0%\)"):
        ope.importance_weights(target, logging, slate)
    out = ope.estimate_all(reward, slate, logging, target, q_hat=np.zeros((4, 1, 3)))
    for name in ("ips", "snips", "dr"):
        assert math.isnan(out[name][0]) and "zero support" in out[name][1]
    assert out["dm"] == (0.0, "")
    with pytest.raises(ope.UnsupportedTarget, match="no logging propensities"):
        ope.check_support(target, np.full((4, 1, 3), np.nan))
    with pytest.raises(ope.UnsupportedTarget, match="agrees with no logged action"):
        ope.snips(reward, np.zeros((4, 1)))
    with pytest.raises(ope.UnsupportedTarget, match="none of the logged slates"):
        ope.slate_ips(np.ones(4), np.zeros(4), np.full(4, 0.5))
