"""Real histories as cold-start material: users who arrive with their first real ml-100k interactions.

With `users.real_history` on (a catalog shaped like ml-100k's: 1,682 items, 18 topics, as the
`movielens` preset's), every new user is a real ml-100k user drawn at random: their history holds
their first `users.past_interactions` (at most 20, ml-100k's minimum per user) real ratings, each
real movie standing for its simulated counterpart (`item_map`), and their simulated tastes come from
their real genre profile (`taste_vectors`) in place of a taste community's centre. Users with an
empty history (`users.past_interactions: 0`) are the cold start; comparing a policy on both is
comparing cold and warm users on real sequences.

The counterpart of a real movie: the simulated item of the same dominant topic (genre) at the same
popularity quantile within it (real: ratings count; simulated: the popularity prior), so popular
dramas map to popular drama-like items; topics no simulated item is dominated by fall back to the
global popularity quantile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.realdata import load_movielens, sequences

MAX_REAL_HISTORY = 20  # ml-100k keeps users with at least 20 ratings


def _quantile_match(source: np.ndarray, target_order: np.ndarray) -> np.ndarray:
    """[len(source)] target ids for the sources in rank order: rank r of n takes target_order[r * m // n]."""
    n, m = source.size, target_order.size
    return target_order[(np.arange(n) * m) // max(n, 1)]


def item_map(
    real_topics: np.ndarray, real_counts: np.ndarray, sim_topics: np.ndarray, sim_popularity: np.ndarray
) -> np.ndarray:
    """[I_real] the simulated counterpart of each real item: same dominant topic, same popularity
    quantile within it. real_topics [I_real, T], real_counts [I_real], sim_topics [I_sim, T],
    sim_popularity [I_sim]."""
    by_count = lambda ids: ids[np.argsort(-real_counts[ids], kind="stable")]  # noqa: E731
    by_prior = lambda ids: ids[np.argsort(-sim_popularity[ids], kind="stable")]  # noqa: E731
    out = np.empty(real_counts.shape[0], np.int64)
    every = np.arange(real_counts.shape[0])
    out[by_count(every)] = _quantile_match(every, by_prior(np.arange(sim_popularity.shape[0])))  # the fallback
    real_dom, sim_dom = real_topics.argmax(axis=1), sim_topics.argmax(axis=1)
    for t in range(real_topics.shape[1]):  # T topics (few), each vectorised
        src, dst = np.flatnonzero(real_dom == t), np.flatnonzero(sim_dom == t)
        if src.size and dst.size:
            out[by_count(src)] = _quantile_match(src, by_prior(dst))
    return out.astype(np.int64)


def taste_vectors(profiles: np.ndarray) -> np.ndarray:
    """[U, T] tastes in [-1, 1] from genre profiles [U, T] (each user's share of consumption per
    topic): +1 on the user's favourite topic, -1 on topics they never chose, linear in between."""
    top = np.maximum(profiles.max(axis=1, keepdims=True), 1e-12)
    return (2.0 * profiles / top - 1.0).astype(np.float32)


@dataclass(frozen=True)
class RealHistories:
    """The real users' first P interactions as simulated items, and their tastes.

    items [U, P] simulated item ids (oldest first); completion [U, P] in (0, 1] (rating / 5);
    taste [U, T] from each user's whole real genre profile."""

    items: np.ndarray
    completion: np.ndarray
    taste: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.items.shape[0])


def load_real_histories(n_past: int, sim_topics: np.ndarray, sim_popularity: np.ndarray) -> RealHistories:
    """Build RealHistories for a catalog shaped like ml-100k's (needs the recbole data package)."""
    if not 1 <= n_past <= MAX_REAL_HISTORY:
        raise ValueError(
            f"users.past_interactions must be in [1, {MAX_REAL_HISTORY}] with users.real_history "
            f"(ml-100k users have at least {MAX_REAL_HISTORY} ratings), got {n_past}"
        )
    ml = load_movielens()
    if sim_topics.shape[0] < ml.n_items or sim_topics.shape[1] != len(ml.genre_names):
        raise ValueError(
            f"users.real_history needs a catalog shaped like ml-100k's ({ml.n_items} items, {len(ml.genre_names)} "
            f"topics: the movielens preset), got {sim_topics.shape[0]} items and {sim_topics.shape[1]} topics"
        )
    g = ml.genres.astype(np.float64)
    real_topics = g / np.maximum(g.sum(axis=1, keepdims=True), 1.0)
    counts = np.bincount(ml.interactions["item"].to_numpy(), minlength=ml.n_items)
    mapping = item_map(real_topics, counts, sim_topics[: ml.n_items], sim_popularity[: ml.n_items])
    seqs = sequences(ml.interactions)
    frame = ml.interactions.reset_index(drop=True)
    order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy()))
    rating = frame["rating"].to_numpy()[order]
    starts = np.r_[0, np.cumsum([len(s) for s in seqs])[:-1]]
    first = starts[:, None] + np.arange(n_past)[None, :]  # [U, P] rows of each user's first ratings
    items = np.concatenate(seqs)[first]
    profiles = np.zeros((len(seqs), real_topics.shape[1]))
    np.add.at(profiles, frame["user"].to_numpy(), real_topics[frame["item"].to_numpy()])
    profiles /= np.maximum(profiles.sum(axis=1, keepdims=True), 1e-12)
    return RealHistories(
        items=mapping[items],
        completion=(rating[first] / 5.0).astype(np.float32),
        taste=taste_vectors(profiles),
    )
