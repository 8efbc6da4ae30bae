"""Social drift: interests pulled toward graph neighbours' interests and trending topics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.params import check_bool, check_int, check_range


@dataclass(frozen=True)
class SocialParams:
    enabled: bool = False
    magnitude: float = 1.0
    degree: int = 8  # neighbours per user (a constant-degree sparse graph)
    homophily: float = 0.8  # probability a neighbour comes from the user's own community
    neighbour_rate: float = 0.03  # per-step pull toward the neighbours' mean interest
    trend_rate: float = 0.01  # per-step pull toward trending topics
    trend_memory: float = 0.05  # EMA rate of the population's consumption shares

    def __post_init__(self) -> None:
        o = "social"
        check_bool(o, "enabled", self.enabled)
        check_range(o, "magnitude", self.magnitude, 0.0)
        check_int(o, "degree", self.degree, 1, 256)
        check_range(o, "homophily", self.homophily, 0.0, 1.0)
        check_range(o, "neighbour_rate", self.neighbour_rate, 0.0, 1.0)
        check_range(o, "trend_rate", self.trend_rate, 0.0, 1.0)
        check_range(o, "trend_memory", self.trend_memory, 0.0, 1.0)

    @property
    def scale(self) -> float:
        return self.magnitude if self.enabled else 0.0


def make_graph(community: np.ndarray, params: SocialParams, rng: np.random.Generator) -> np.ndarray:
    """[N, D] neighbour indices: a homophilous random graph (same-community edges with prob `homophily`)."""
    n, d = community.shape[0], params.degree
    order = np.argsort(community, kind="stable")
    counts = np.bincount(community)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    own_count = counts[community][:, None]
    same = order[starts[community][:, None] + (rng.random((n, d)) * own_count).astype(np.int64)]
    anyone = rng.integers(0, n, size=(n, d))
    neighbours = np.where(rng.random((n, d)) < params.homophily, same, anyone)
    if n > 1:  # no self-loops: a self-edge would add nothing but dilute the pull
        self_edge = neighbours == np.arange(n)[:, None]
        neighbours = np.where(self_edge, (neighbours + 1) % n, neighbours)
    return neighbours.astype(np.int32)


def neighbour_pull(
    interest: np.ndarray, neighbours: np.ndarray, susceptibility: np.ndarray, params: SocialParams
) -> np.ndarray:
    """[N, T] change of interests toward the neighbours' mean interest."""
    rate = params.neighbour_rate * params.scale
    # Sum over the D neighbour columns: D row-gathers of [N, T], no [N, D, T] temporary.
    total = np.take(interest, neighbours[:, 0], axis=0)
    for d in range(1, neighbours.shape[1]):
        total += np.take(interest, neighbours[:, d], axis=0)
    mean = total * np.float32(1.0 / neighbours.shape[1])
    return (np.float32(rate) * susceptibility)[:, None] * (mean - interest)


def trend_direction(trend: np.ndarray) -> np.ndarray:
    """[T] in [-1, 1]: +1 for topics consumed far above their fair share, -1 for unconsumed ones."""
    return np.clip(trend.shape[0] * trend - 1.0, -1.0, 1.0).astype(np.float32)


def trend_pull(interest: np.ndarray, trend: np.ndarray, susceptibility: np.ndarray, params: SocialParams) -> np.ndarray:
    """[N, T] change of interests toward the trending topics."""
    rate = params.trend_rate * params.scale
    return (rate * susceptibility)[:, None] * (trend_direction(trend) - interest)


def update_trend(
    trend: np.ndarray, consumed_topics: np.ndarray, clicked: np.ndarray, params: SocialParams
) -> np.ndarray:
    """[T] EMA of the topic shares consumed this step by the whole population."""
    n_clicks = np.count_nonzero(clicked)
    if n_clicks == 0:
        return trend
    shares = consumed_topics.sum(axis=0) / n_clicks
    return ((1.0 - params.trend_memory) * trend + params.trend_memory * shares).astype(np.float32)
