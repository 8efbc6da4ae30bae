"""Offline ranking metrics over logged steps, as pure functions on arrays.

Each logged step offers C candidates; a policy that scores candidates ranks them (scores [S, C],
best first, ties to the lower candidate index: the order `slate_from_scores` serves). Relevance
[S, C] bool marks the step's relevant candidates: in the study, the logged candidate the user
clicked and watched (`relevance_from_logs`); candidates the logging policy did not show count as
not relevant, as in any evaluation on logged clicks. Per-step metrics are [S] arrays; steps
without a relevant candidate are NaN (an average then skips them, `nanmean`).

Beyond accuracy, over the top-k lists [S, k] of item ids: catalog coverage, intra-list diversity
(mean pairwise topic distance, the harness's slate diversity) and novelty (mean self-information
-log2 p(i) of the listed items, p the items' share of logged clicks, add-one smoothed).
"""

from __future__ import annotations

import numpy as np

ACCURACY = ("precision", "recall", "ndcg", "hit_rate")  # at each cutoff k; mrr over the whole ranking
DEFAULT_CUTOFFS = (5, 10)


def check_cutoff(k: int, n_candidates: int | None = None) -> int:
    """k as an int >= 1 (a ValueError otherwise); capped at n_candidates when given."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"ranking cutoff K must be an integer >= 1, got {k!r}")
    return int(k) if n_candidates is None else min(int(k), n_candidates)


def ranks(scores: np.ndarray) -> np.ndarray:
    """[S, C] 0-based rank of each candidate when served by `scores` [S, C] (best first, ties to the
    lower index)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be [S, C] with S >= 1 steps, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN: a ranking needs comparable scores")
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(scores.shape[1])[None, :], axis=1)
    return out


def _hits(rank: np.ndarray, relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(relevant candidates in the top k [S], relevant candidates [S] as float)."""
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape != rank.shape:
        raise ValueError(f"relevance {relevant.shape} and ranks {rank.shape} differ in shape")
    return (relevant & (rank < k)).sum(axis=1).astype(np.float64), relevant.sum(axis=1).astype(np.float64)


def _where_relevant(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return np.where(n_relevant > 0, values, np.nan)


def precision_at_k(rank: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """[S] relevant candidates in the top k / k."""
    k = check_cutoff(k)
    hit, n = _hits(rank, relevant, k)
    return _where_relevant(hit / k, n)


def recall_at_k(rank: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """[S] relevant candidates in the top k / relevant candidates."""
    hit, n = _hits(rank, relevant, check_cutoff(k))
    return _where_relevant(hit / np.maximum(n, 1), n)


def hit_rate_at_k(rank: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """[S] 1 if any relevant candidate is in the top k, else 0."""
    hit, n = _hits(rank, relevant, check_cutoff(k))
    return _where_relevant((hit > 0).astype(np.float64), n)


def ndcg_at_k(rank: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """[S] binary-relevance NDCG: sum over relevant candidates in the top k of 1 / log2(rank + 2),
    over the same sum for the ideal ranking (the min(#relevant, k) first places)."""
    k = check_cutoff(k)
    hit, n = _hits(rank, relevant, k)
    gain = np.where(np.asarray(relevant, bool) & (rank < k), 1.0 / np.log2(rank + 2.0), 0.0).sum(axis=1)
    discounts = np.cumsum(1.0 / np.log2(np.arange(rank.shape[1]) + 2.0))  # ideal DCG with i + 1 relevant
    ideal = discounts[np.clip(np.minimum(n, k).astype(np.int64) - 1, 0, None)]
    return _where_relevant(gain / ideal, n)


def reciprocal_rank(rank: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """[S] 1 / (1 + the best rank of a relevant candidate); its mean is the MRR."""
    _, n = _hits(rank, relevant, 1)
    best = np.where(np.asarray(relevant, bool), rank, rank.shape[1]).min(axis=1)
    return _where_relevant(1.0 / (best + 1.0), n)


def accuracy_metrics(scores: np.ndarray, relevant: np.ndarray, cutoffs=DEFAULT_CUTOFFS) -> dict[str, np.ndarray]:
    """{"precision@k", "recall@k", "ndcg@k", "hit_rate@k" for each k, "mrr"}: [S] arrays (NaN at
    steps without a relevant candidate). A cutoff above C is capped at C."""
    rank = ranks(scores)
    ks = [check_cutoff(k, rank.shape[1]) for k in cutoffs]
    out: dict[str, np.ndarray] = {}
    for k, name in zip(ks, cutoffs):
        for metric, f in zip(ACCURACY, (precision_at_k, recall_at_k, ndcg_at_k, hit_rate_at_k)):
            out[f"{metric}@{name}"] = f(rank, relevant, k)
    out["mrr"] = reciprocal_rank(rank, relevant)
    return out


def top_items(scores: np.ndarray, candidate_items: np.ndarray, k: int) -> np.ndarray:
    """[S, min(k, C)] the item ids a policy would list first, from scores and candidate ids [S, C]."""
    k = check_cutoff(k, np.asarray(scores).shape[1])
    order = np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(np.asarray(candidate_items), order, axis=1)


def coverage(lists: np.ndarray, n_items: int) -> float:
    """Share of the catalog's `n_items` items that appear in at least one list [S, k]."""
    return float(np.unique(np.asarray(lists)).size / n_items)


def intra_list_diversity(lists: np.ndarray, item_topics: np.ndarray) -> float:
    """Mean over lists [S, k] of the mean pairwise topic distance (half the L1 distance of the topic
    mixtures item_topics [I, T], in [0, 1]) between distinct positions; 0 for k = 1."""
    lists = np.asarray(lists)
    k = lists.shape[1]
    if k < 2:
        return 0.0
    t = np.asarray(item_topics)[lists]  # [S, k, T]
    dist = 0.5 * np.abs(t[:, :, None, :] - t[:, None, :, :]).sum(-1)  # [S, k, k], 0 on the diagonal
    return float((dist.sum(axis=(1, 2)) / (k * (k - 1))).mean())


def self_information(click_counts: np.ndarray) -> np.ndarray:
    """[I] -log2 p(i), p(i) = (clicks of i + 1) / (all clicks + I): add-one smoothing, so an item
    never clicked in the logs is the most novel, not infinitely so."""
    counts = np.asarray(click_counts, dtype=np.float64)
    return -np.log2((counts + 1.0) / (counts.sum() + counts.size))


def novelty(lists: np.ndarray, information: np.ndarray) -> float:
    """Mean self-information (bits, `self_information`) of the items in the lists [S, k]."""
    return float(np.asarray(information)[np.asarray(lists)].mean())


def cold_start(
    history_features: np.ndarray,
    history_mask: np.ndarray,
    session: np.ndarray,
    new_user: np.ndarray,
    min_interactions: int = 5,
) -> np.ndarray:
    """[S] bool: a cold-start step, one of a user in their first session ever (`new_user` [S], arrived
    without past visits, and `session` [S] 0) or with fewer than `min_interactions` interactions
    (clicked entries of the history the observation shows: history_features [S, H, F] column 0
    times history_mask [S, H])."""
    interactions = (np.asarray(history_features)[..., 0] * np.asarray(history_mask)).sum(axis=1)
    first_session = np.asarray(new_user, bool) & (np.asarray(session) == 0)
    return first_session | (interactions < min_interactions)
