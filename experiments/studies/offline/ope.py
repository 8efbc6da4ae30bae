"""Off-policy estimators of a target policy's value from logged slates, as pure functions on arrays.

The value they estimate is the expected reward per logged step, sum over the K slots, if the
target had chosen in the logged states: V(pi) = E_x[sum_k E[r_k | x, pi_k(x)]], x drawn as the
logging policy met them (so it is a one-step value: what the target would change about later
states is not in it). With one slot (K = 1, every preset) they are the textbook estimators.

Shapes: S logged steps, K slots, C candidates.
  slot_reward [S, K]   the logged reward of each slot (the watch time of the clicked slot, else 0)
  slate [S, K]         the logged candidate index of each slot
  logging [S, K, C]    mu_k(c | x): the logging policy's probability of candidate c at slot k
  target [S, K, C]     pi_k(c | x): the target's (one-hot for a deterministic policy: `one_hot`)
  q_hat [S, K, C]      a reward model's prediction of slot k's reward with candidate c there

Each estimator's assumption:
  IPS (position-wise, "independent IPS" for slates): weights w_sk = pi_k(a_sk | x) / mu_k(a_sk | x);
    unbiased when the logging policy has support wherever the target puts mass (mu_k(c) > 0 where
    pi_k(c) > 0; `check_support`) and, for K > 1, when a slot's reward depends only on the item in
    that slot (independence: no competition between the slate's items, which a choice model with
    one click per slate violates, so it is biased for K > 1). With K = 1 that assumption is empty.
  SNIPS: IPS divided by the mean weight, per slot; biased (O(1/S)), lower variance, and it needs
    at least one logged step where the target agrees with the log.
  DM: the reward model's prediction under the target's choices; unbiased only if the model is right
    (here a ridge regression on features of the observation and the candidate, position-blind).
  DR: DM plus the importance-weighted residuals of the logged slots; unbiased if either the
    weights (support, and independence for K > 1) or the model are right.
  Slate IPS (`slate_ips`): weights on the whole slate, unbiased without the independence assumption
    but needs the logged slate itself to have target mass, which a deterministic target meets with
    probability about (1 - epsilon) + epsilon (C - K)! / C! per step at best.
A target without support is an `UnsupportedTarget` error (IPS, SNIPS, DR), never a number.
"""

from __future__ import annotations

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr")


class UnsupportedTarget(ValueError):
    """The logs cannot estimate this target: it puts mass where the logging policy never acts, or
    never agrees with a logged action."""


def one_hot(slates: np.ndarray, n_candidates: int) -> np.ndarray:
    """[S, K, C] the distribution of a deterministic policy serving `slates` [S, K] (candidate indices)."""
    slates = np.asarray(slates, dtype=np.int64)
    if slates.ndim == 1:
        slates = slates[:, None]
    out = np.zeros((*slates.shape, n_candidates))
    np.put_along_axis(out, slates[..., None], 1.0, axis=2)
    return out


def check_support(target: np.ndarray, logging: np.ndarray) -> None:
    """Raise UnsupportedTarget when pi_k(c | x) > 0 where mu_k(c | x) = 0 (or mu is unknown: NaN)."""
    target, logging = np.asarray(target), np.asarray(logging)
    if target.shape != logging.shape:
        raise ValueError(f"target {target.shape} and logging {logging.shape} distributions differ in shape")
    if np.isnan(logging).any():
        raise UnsupportedTarget("the logs hold no logging propensities (the logging policy did not report them)")
    uncovered = ((target > 0) & (logging <= 0)).any(axis=(1, 2))
    if uncovered.any():
        raise UnsupportedTarget(
            f"zero support: at {int(uncovered.sum())} of {len(uncovered)} logged steps "
            f"({uncovered.mean():.1%}) the target serves a candidate the logging policy never serves there"
        )


def importance_weights(target: np.ndarray, logging: np.ndarray, slate: np.ndarray) -> np.ndarray:
    """[S, K] w_sk = pi_k(a_sk | x_s) / mu_k(a_sk | x_s), after `check_support`."""
    check_support(target, logging)
    slate = np.asarray(slate, dtype=np.int64)[..., None]
    pi = np.take_along_axis(np.asarray(target), slate, axis=2)[..., 0]
    mu = np.take_along_axis(np.asarray(logging), slate, axis=2)[..., 0]
    return pi / mu


def ips(slot_reward: np.ndarray, weights: np.ndarray) -> float:
    """Position-wise IPS: mean over steps of sum_k w_sk r_sk (the textbook IPS when K = 1)."""
    return float((np.asarray(weights) * np.asarray(slot_reward)).sum(axis=1).mean())


def snips(slot_reward: np.ndarray, weights: np.ndarray) -> float:
    """Self-normalised IPS: sum_k (sum_s w_sk r_sk / sum_s w_sk)."""
    w = np.asarray(weights)
    total = w.sum(axis=0)  # [K]
    if (total <= 0).any():
        raise UnsupportedTarget("SNIPS: the target agrees with no logged action at some slot (all weights 0)")
    return float(((w * np.asarray(slot_reward)).sum(axis=0) / total).sum())


def direct_method(target: np.ndarray, q_hat: np.ndarray) -> float:
    """DM: mean over steps of sum_k sum_c pi_k(c | x) q_hat(x, k, c)."""
    return float((np.asarray(target) * np.asarray(q_hat)).sum(axis=(1, 2)).mean())


def doubly_robust(
    slot_reward: np.ndarray, weights: np.ndarray, target: np.ndarray, q_hat: np.ndarray, slate: np.ndarray
) -> float:
    """DR: DM + mean over steps of sum_k w_sk (r_sk - q_hat(x, k, a_sk))."""
    logged_q = np.take_along_axis(np.asarray(q_hat), np.asarray(slate, dtype=np.int64)[..., None], axis=2)[..., 0]
    residual = (np.asarray(weights) * (np.asarray(slot_reward) - logged_q)).sum(axis=1).mean()
    return direct_method(target, q_hat) + float(residual)


def slate_ips(reward: np.ndarray, target_slate_probability: np.ndarray, slate_propensity: np.ndarray) -> float:
    """Whole-slate IPS: mean over steps of pi(a_s | x) / mu(a_s | x) * r_s, with r_s [S] the step's
    reward and both probabilities [S] of the logged slate."""
    pi, mu = np.asarray(target_slate_probability, np.float64), np.asarray(slate_propensity, np.float64)
    if np.isnan(mu).any():
        raise UnsupportedTarget("the logs hold no slate propensities (the logging policy did not report them)")
    if (mu <= 0).any():
        raise ValueError("a logged slate has propensity 0: the logs contradict their logging policy")
    if not (pi > 0).any():
        raise UnsupportedTarget("slate IPS: the target serves none of the logged slates")
    return float((pi / mu * np.asarray(reward, np.float64)).mean())


def estimate_all(
    slot_reward: np.ndarray, slate: np.ndarray, logging: np.ndarray, target: np.ndarray, q_hat: np.ndarray
) -> dict[str, tuple[float, str]]:
    """{estimator: (value, reason)} for ESTIMATORS: value NaN with the reason where the estimator
    is undefined for this target (no support), reason "" otherwise."""
    out: dict[str, tuple[float, str]] = {"dm": (direct_method(target, q_hat), "")}
    try:
        w = importance_weights(target, logging, slate)
    except UnsupportedTarget as err:
        for name in ("ips", "snips", "dr"):
            out[name] = (float("nan"), str(err))
        return {name: out[name] for name in ESTIMATORS}
    out["ips"] = (ips(slot_reward, w), "")
    out["dr"] = (doubly_robust(slot_reward, w, target, q_hat, slate), "")
    try:
        out["snips"] = (snips(slot_reward, w), "")
    except UnsupportedTarget as err:
        out["snips"] = (float("nan"), str(err))
    return {name: out[name] for name in ESTIMATORS}
