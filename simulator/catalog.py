"""Item catalog: topic mixtures, quality, attractiveness (clickbait), length, popularity.

Items 0..n_items-1 exist from the start; items appended after them arrive later (regular
arrivals and shock injections), at a time on the world's clock: an episode step in session
worlds, a date (days) in lifetime worlds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.params import check_int, check_memory, check_range


@dataclass(frozen=True)
class CatalogParams:
    seed: int = 0  # the catalog (and taste communities) depend on this seed only
    n_items: int = 1000
    n_topics: int = 10
    topic_concentration: float = 0.15  # Dirichlet alpha of an item's topic mixture; small = one dominant topic
    topic_weights: tuple[float, ...] = ()  # each topic's mean share of an item's mixture (empty: all equal)
    quality_alpha: float = 2.0  # quality ~ Beta(alpha, beta)
    quality_beta: float = 2.0
    clickbait_fraction: float = 0.25  # items whose attractiveness ignores (low) quality
    attractiveness_noise: float = 0.15  # spread of attractiveness around quality for honest items
    quality_signal_noise: float = 0.1  # noise of the observed rating (the population's mean value of an item)
    attractiveness_signal_noise: float = 0.15  # noise of the observed attractiveness (think: thumbnail CTR)
    length_mean: float = 4.0  # minutes, log-normal
    length_sigma: float = 0.5
    length_max: float = 15.0
    popularity_exponent: float = 1.1  # Zipf exponent of the long-tailed popularity prior
    popularity_memory: float = 0.0  # per population step, EMA weight of what is watched in the popularity (0: static)
    n_arrivals: int = 0  # items that arrive after the start
    arrival_window: float = 30  # arrivals are spread over steps [1, window] (days (0, window] in lifetime worlds)

    @staticmethod
    def _coerce_topic_weights(value: Any, where: str) -> tuple[float, ...]:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of numbers, got {type(value).__name__}")
        return tuple(value)

    def topic_alpha(self) -> np.ndarray:
        """[T] the Dirichlet parameters of an item's topic mixture: `topic_concentration` for every
        topic, or, with `topic_weights`, T x concentration spread in proportion to the weights (the
        same total: the mean mixture is the normalised weights, its spread as without weights)."""
        t = self.n_topics
        if not self.topic_weights:
            return np.full(t, self.topic_concentration)
        w = np.asarray(self.topic_weights, np.float64)
        return t * self.topic_concentration * w / w.sum()

    def __post_init__(self) -> None:
        o = "catalog"
        check_int(o, "seed", self.seed, 0)
        check_int(o, "n_items", self.n_items, 2, 10_000_000)
        check_int(o, "n_topics", self.n_topics, 1, 1024)
        # Below 0.01 the Dirichlet/Beta draws degenerate (one-topic items, quality all 0 or 1).
        check_range(o, "topic_concentration", self.topic_concentration, 0.01, 100.0)
        if self.topic_weights:
            if len(self.topic_weights) != self.n_topics:
                raise ValueError(
                    f"{o}.topic_weights must hold n_topics = {self.n_topics} weights (or none), "
                    f"got {len(self.topic_weights)}"
                )
            for i, w in enumerate(self.topic_weights):
                check_range(o, f"topic_weights[{i}]", w, 0.0, 1e6, lo_open=True)
        check_range(o, "quality_alpha", self.quality_alpha, 0.01, 100.0)
        check_range(o, "quality_beta", self.quality_beta, 0.01, 100.0)
        check_range(o, "clickbait_fraction", self.clickbait_fraction, 0.0, 1.0)
        check_range(o, "attractiveness_noise", self.attractiveness_noise, 0.0, 1.0)
        check_range(o, "quality_signal_noise", self.quality_signal_noise, 0.0, 1.0)
        check_range(o, "attractiveness_signal_noise", self.attractiveness_signal_noise, 0.0, 1.0)
        check_range(o, "length_mean", self.length_mean, 0.01, 1440.0)
        check_range(o, "length_sigma", self.length_sigma, 0.0, 3.0)
        check_range(o, "length_max", self.length_max, 0.01, 1440.0)
        check_range(o, "popularity_exponent", self.popularity_exponent, 0.0, 5.0)
        check_range(o, "popularity_memory", self.popularity_memory, 0.0, 1.0)
        check_int(o, "n_arrivals", self.n_arrivals, 0, 10_000_000)
        check_range(o, "arrival_window", self.arrival_window, 0.0, 36_500.0, lo_open=True)
        items = self.n_items + self.n_arrivals
        check_memory(
            f"catalog.n_items + n_arrivals = {items:,} items x catalog.n_topics = {self.n_topics}",
            4.0 * items * (2 * self.n_topics + 12),
        )


@dataclass(frozen=True)
class Catalog:
    """Item arrays, all of leading length I (items, arrivals included).

    topics [I, T] rows on the simplex; quality, attractiveness [I] in [0, 1];
    quality_signal [I] the noisy mean rating a recommender can observe (features hold it and a noisy
    attractiveness); length [I] minutes; popularity [I] the prior, sums to 1; arrival [I] float64
    when the item arrives on the world's clock (0 = there from the start).
    """

    topics: np.ndarray
    quality: np.ndarray
    attractiveness: np.ndarray
    quality_signal: np.ndarray
    length: np.ndarray
    popularity: np.ndarray
    arrival: np.ndarray
    features: np.ndarray  # [I, T + 4] what an agent may observe of an item

    @functools.cached_property
    def log_length(self) -> np.ndarray:
        """[I] log minutes (users.length_fit reads it at every step)."""
        return np.log(self.length).astype(np.float32)

    @property
    def n_items(self) -> int:
        return int(self.topics.shape[0])

    @property
    def n_topics(self) -> int:
        return int(self.topics.shape[1])

    @property
    def n_initial(self) -> int:
        return int(np.count_nonzero(self.arrival == 0))

    @property
    def dominant_topic(self) -> np.ndarray:
        return self.topics.argmax(axis=1)


def _sample_items(
    params: CatalogParams, n: int, rng: np.random.Generator, topic: int | None = None, quality_boost: float = 0.0
) -> dict[str, np.ndarray]:
    t = params.n_topics
    alpha = params.topic_alpha()
    if topic is not None:
        alpha[topic] += 5.0  # injected items centre on one topic
    topics = rng.dirichlet(alpha, size=n) if t > 1 else np.ones((n, 1))
    quality = np.clip(rng.beta(params.quality_alpha, params.quality_beta, size=n) + quality_boost, 0, 1)
    honest = np.clip(quality + rng.normal(0.0, params.attractiveness_noise, size=n), 0, 1)
    bait = rng.uniform(0.7, 1.0, size=n)  # clickbait looks great whatever it holds
    is_bait = rng.random(n) < params.clickbait_fraction
    quality = np.where(is_bait, quality * 0.5, quality)
    attractiveness = np.where(is_bait, bait, honest)
    length = np.minimum(rng.lognormal(np.log(params.length_mean), params.length_sigma, size=n), params.length_max)
    return dict(topics=topics, quality=quality, attractiveness=attractiveness, length=length)


def make_catalog(
    params: CatalogParams,
    rng: np.random.Generator,
    injections: tuple[tuple[float, int, int], ...] = (),
    rating: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    in_days: bool = False,
) -> Catalog:
    """Sample a catalog. `injections` holds (time, n_items, topic) batches (topic -1: random).
    Regular arrivals come at whole steps [1, window], or with `in_days` at any time of (0, window] days.

    What a platform observes of an item is not its true quality and attractiveness but noisy
    aggregates: the mean rating its audience would give, `rating(topics [I, T], quality [I],
    length [I]) -> [I]` in [0, 1] (the world passes the mean personal value over its taste communities;
    None: the quality itself), plus noise; and the attractiveness plus noise (a measured CTR).
    """
    parts = [_sample_items(params, params.n_items, rng)]
    arrival = [np.zeros(params.n_items)]
    if params.n_arrivals:
        parts.append(_sample_items(params, params.n_arrivals, rng))
        if in_days:
            times = params.arrival_window * (1.0 - rng.random(params.n_arrivals))  # (0, window]
        else:
            times = rng.integers(1, int(params.arrival_window) + 1, size=params.n_arrivals)
        arrival.append(np.sort(times).astype(np.float64))
    for at, count, topic in injections:
        if count <= 0:
            continue
        topic = int(rng.integers(params.n_topics)) if topic < 0 else topic
        parts.append(_sample_items(params, count, rng, topic=topic, quality_boost=0.15))
        arrival.append(np.full(count, at, dtype=np.float64))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = cols["quality"].shape[0]
    # Popularity: Zipf over a ranking that favours attractive items (clickbait spreads).
    rank_key = cols["attractiveness"] + rng.normal(0.0, 0.3, size=n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-rank_key)] = np.arange(n)
    popularity = (rank + 1.0) ** -params.popularity_exponent
    popularity /= popularity.sum()
    arrival_times = np.concatenate(arrival)
    mean_rating = cols["quality"] if rating is None else rating(cols["topics"], cols["quality"], cols["length"])
    quality_signal = np.clip(mean_rating + rng.normal(0.0, params.quality_signal_noise, size=n), 0, 1)
    attractiveness_signal = np.clip(
        cols["attractiveness"] + rng.normal(0.0, params.attractiveness_signal_noise, size=n), 0, 1
    )
    features = np.concatenate(
        [
            cols["topics"],
            quality_signal[:, None],
            attractiveness_signal[:, None],
            (cols["length"] / params.length_max)[:, None],
            (1.0 - np.log1p(rank) / np.log(n))[:, None],  # popularity rank score in (0, 1], as popularity_score
        ],
        axis=1,
    )
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return Catalog(
        topics=f32(cols["topics"]),
        quality=f32(cols["quality"]),
        attractiveness=f32(cols["attractiveness"]),
        quality_signal=f32(quality_signal),
        length=f32(cols["length"]),
        popularity=popularity.astype(np.float64),
        arrival=arrival_times,
        features=f32(features),
    )


def popularity_score(popularity: np.ndarray) -> np.ndarray:
    """[I] what a platform shows of an item's popularity [I]: its rank score, 1 - log(1 + rank) / log(I),
    in (0, 1] (1 = the most popular). Ties keep the item order."""
    n = popularity.shape[0]
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-popularity, kind="stable")] = np.arange(n)
    return 1.0 - np.log1p(rank) / np.log(n)


def update_popularity(popularity: np.ndarray, clicked_items: np.ndarray, params: CatalogParams) -> np.ndarray:
    """[I] popularity after one population step: an EMA (weight `popularity_memory`) toward the
    shares of `clicked_items` [M] (this step's clicks); unchanged without clicks or memory."""
    if not params.popularity_memory or clicked_items.size == 0:
        return popularity
    shares = np.bincount(clicked_items, minlength=popularity.shape[0]).astype(np.float64) / clicked_items.size
    m = params.popularity_memory
    return (1.0 - m) * popularity + m * shares
