"""First-stage retrieval: C candidates per user per step, a seeded mix of popular,
topic-near and random items, as a two-stage recommender would hand its ranker."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from simulator.catalog import Catalog


@dataclass(frozen=True)
class CandidateIndex:
    """Lookup tables built once per catalog.

    alias_prob, alias_item [I]: Walker alias table of the popularity prior (O(1) draws);
    by_topic [I] item ids sorted by dominant topic, topic_start / topic_count [T]
    slices of `by_topic` per topic.
    """

    alias_prob: np.ndarray
    alias_item: np.ndarray
    by_topic: np.ndarray
    topic_start: np.ndarray
    topic_count: np.ndarray
    n_initial: int

    @classmethod
    def build(cls, catalog: Catalog) -> CandidateIndex:
        initial = catalog.arrival == 0
        if not initial.all() and not initial[: catalog.n_initial].all():
            raise ValueError("catalog items that exist from the start must come first")
        dominant = catalog.dominant_topic
        order = np.argsort(dominant, kind="stable")
        count = np.bincount(dominant, minlength=catalog.n_topics)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        prob, alias = alias_table(catalog.popularity)
        return cls(
            alias_prob=prob.astype(np.float32),
            alias_item=alias.astype(np.int32),
            by_topic=order.astype(np.int32),
            topic_start=start.astype(np.int32),
            topic_count=count.astype(np.int32),
            n_initial=catalog.n_initial,
        )


def with_popularity(index: CandidateIndex, popularity: np.ndarray) -> CandidateIndex:
    """The index with its popular source drawn from `popularity` [I] (what the population watches now)."""
    prob, alias = alias_table(popularity)
    return dataclasses.replace(index, alias_prob=prob.astype(np.float32), alias_item=alias.astype(np.int32))


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table for the distribution `p` [I]: bin i keeps i with prob[i], else alias[i]."""
    n = p.shape[0]
    scaled = p / p.sum() * n
    prob = np.ones(n)
    alias = np.arange(n)
    small = list(np.flatnonzero(scaled < 1.0))
    large = list(np.flatnonzero(scaled >= 1.0))
    while small and large:  # O(I) once per catalog, not per step
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob.astype(np.float64), alias.astype(np.int64)


def source_sizes(n_candidates: int, popular_fraction: float, topic_fraction: float) -> tuple[int, int, int]:
    """(popular, topic-near, random) column counts that add up to n_candidates."""
    n_pop = int(round(n_candidates * popular_fraction))
    n_topic = min(int(round(n_candidates * topic_fraction)), n_candidates - n_pop)
    return n_pop, n_topic, n_candidates - n_pop - n_topic


def sample_candidates(
    index: CandidateIndex,
    arrival: np.ndarray,
    anchor_topic: np.ndarray,
    now: np.ndarray,
    sizes: tuple[int, int, int],
    uniform: np.ndarray,
) -> np.ndarray:
    """[N, C] int32 candidate item ids.

    Columns come in source order: popular (by the popularity prior), topic-near
    (items whose dominant topic is the user's `anchor_topic` [N]), then uniform.
    An item that has not arrived yet at the user's time `now` [N] (the world's clock, as
    `arrival` [I]) is replaced by an initial item picked with the same uniform. Items may
    repeat (sources overlap).
    uniform [N, C] float32 in [0, 1) drives every pick, so the draw is fixed-shape.
    """
    n_pop, n_topic, _ = sizes
    n_items = arrival.shape[0]
    last = np.int32(n_items - 1)

    def pick(u: np.ndarray, n) -> np.ndarray:  # floor(u * n), clamped: float32 rounding can reach n
        return np.minimum((u * np.float32(n)).astype(np.int32), np.asarray(n, np.int32) - 1)

    items = np.empty(uniform.shape, dtype=np.int32)
    u_pop, u_topic, u_rand = uniform[:, :n_pop], uniform[:, n_pop : n_pop + n_topic], uniform[:, n_pop + n_topic :]
    # One uniform per alias draw: its integer part picks the bin, its fraction the coin.
    scaled = u_pop * np.float32(n_items)
    bins = np.minimum(scaled.astype(np.int32), last)
    items[:, :n_pop] = np.where(scaled - bins < index.alias_prob[bins], bins, index.alias_item[bins])
    count = index.topic_count[anchor_topic][:, None]
    offset = index.topic_start[anchor_topic][:, None] + pick(u_topic, np.maximum(count, 1))
    near = index.by_topic[offset]
    if not count.all():  # a topic with no items falls back to a uniform pick
        near = np.where(count > 0, near, pick(u_topic, n_items))
    items[:, n_pop : n_pop + n_topic] = near
    items[:, n_pop + n_topic :] = pick(u_rand, n_items)
    if index.n_initial < n_items:
        late = np.flatnonzero(arrival[items] > now[:, None])  # few: replaced in place
        items.reshape(-1)[late] = pick(uniform.reshape(-1)[late], index.n_initial)
    return items
