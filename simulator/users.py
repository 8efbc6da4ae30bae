"""User population: sampling of new users' latent traits and starting state.

Besides their tastes in topics (a community's centre plus their own), users may differ in how
long they like their items (`length_taste` > 0): some watch short clips, others long films, and
an item far from a user's preferred length suits them less however good its topics are (its fit
falls with `length_taste` x the squared log-ratio of the two lengths: `length_fit`). On video
platforms duration is one of the strongest biases of watch time and users differ in it; here it
is a trait that survives a shift of topical tastes (a shock moves interests, not viewing habits)
and that only many interactions reveal, since one watch mixes it with topic fit and quality.

Users may also belong to two taste communities (`second_community` > 0): a share ~ U(0, max) of a
user's community pull goes to the centre of one other community. Real users hold several interests
at once (the premise of multi-interest recommenders such as MIND and ComiRec); one click then names
at most one of them, and only a history shows the other. Off in every preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.catalog import CatalogParams
from simulator.params import check_bool, check_int, check_range


@dataclass(frozen=True)
class UserParams:
    budget_mean: float = 60.0  # minutes a user is willing to spend in a session
    budget_std: float = 10.0
    satisfaction_init: float = 0.7  # starting trust in the recommender, in [0, 1]
    n_communities: int = 4  # taste communities (homophily of the social graph)
    community_strength: float = 0.6  # how much a user's interests follow the community's
    novelty_seeking_max: float = 1.0  # per-user trait ~ U(0, max), drawn by the cognitive drift family
    recent_items: int = 16  # items a user remembers having consumed (repeat aversion)
    past_interactions: int = 32  # interactions a user arrives with, from visits before the episode
    past_pool: int = 10  # items on offer at each of those past visits (the user picked one or none)
    real_history: bool = False  # users are real ml-100k users, arriving with their first real ratings (realhistory.py)
    length_taste: float = 0.0  # fit lost per squared log-ratio of item length to the user's preferred length (0: off)
    second_community: float = 0.0  # a share ~ U(0, this) of a user's community pull goes to a second community (0: off)

    def __post_init__(self) -> None:
        o = "users"
        check_range(o, "budget_mean", self.budget_mean, 0.0, 1e6, lo_open=True)
        check_range(o, "budget_std", self.budget_std, 0.0, 1e6)
        check_range(o, "satisfaction_init", self.satisfaction_init, 0.0, 1.0)
        check_int(o, "n_communities", self.n_communities, 1, 10_000)
        check_range(o, "community_strength", self.community_strength, 0.0, 1.0)
        check_range(o, "novelty_seeking_max", self.novelty_seeking_max, 0.0, 100.0)
        check_int(o, "recent_items", self.recent_items, 1, 1024)
        check_int(o, "past_interactions", self.past_interactions, 0, 4096)
        check_int(o, "past_pool", self.past_pool, 1, 1024)
        check_bool(o, "real_history", self.real_history)
        check_range(o, "length_taste", self.length_taste, 0.0, 100.0)
        check_range(o, "second_community", self.second_community, 0.0, 0.5)
        if self.second_community and self.n_communities < 2:
            raise ValueError(f"users.second_community needs n_communities >= 2, got {self.n_communities}")
        if self.second_community and self.real_history:
            raise ValueError("users.second_community is for simulated users: real_history users have real profiles")


def community_centres(params: UserParams, n_topics: int, rng: np.random.Generator) -> np.ndarray:
    """[n_communities, T] interest centres in [-1, 1]: each community loves a few topics."""
    centres = rng.uniform(-1.0, 0.0, size=(params.n_communities, n_topics))
    n_loved = max(1, n_topics // 4)
    for c in range(params.n_communities):  # loop over communities (few), not users
        centres[c, rng.choice(n_topics, size=n_loved, replace=False)] = rng.uniform(0.5, 1.0, size=n_loved)
    return centres.astype(np.float32)


def sample_users(
    params: UserParams,
    community: np.ndarray,
    centres: np.ndarray,
    rng: np.random.Generator,
    log_length: tuple[float, float],
    families_draw: Callable[[str], None] = lambda stage: None,
) -> dict[str, np.ndarray]:
    """Draw fresh users for the slots with the given `community` [M].

    Returns arrays with leading axis M: interest [M, T], budget [M], preferred_length [M] (log
    minutes ~ Normal(`log_length` = (mean, std)), see `length_prior`; 0 and not drawn when
    `length_taste` is 0, so other worlds' streams are unchanged). `families_draw(stage)` lets the
    drift families draw theirs from `rng` at the stages of `simulator.drift.NEW_USER_STAGES` that
    come during this sampling: after the user's own tastes, after the budget, after the traits.
    """
    m, t = community.shape[0], centres.shape[1]
    own = rng.uniform(-1.0, 1.0, size=(m, t))
    w = params.community_strength
    pull = centres[community]
    families_draw("tastes")
    budget = np.maximum(rng.normal(params.budget_mean, params.budget_std, size=m), 1.0)
    families_draw("traits")
    families_draw("events")
    preferred_length = rng.normal(log_length[0], log_length[1], size=m) if params.length_taste else np.zeros(m)
    if params.second_community:  # drawn last and only when on: other worlds' streams are unchanged
        n_comm = centres.shape[0]
        second = (community + rng.integers(1, n_comm, size=m)) % n_comm
        share = rng.uniform(0.0, params.second_community, size=(m, 1))
        pull = (1.0 - share) * pull + share * centres[second]
    interest = (1.0 - w) * own + w * pull
    return dict(
        interest=interest.astype(np.float32),
        budget=budget.astype(np.float32),
        preferred_length=preferred_length.astype(np.float32),
    )


def length_prior(catalog: CatalogParams) -> tuple[float, float]:
    """(mean, std) of the catalog's log item lengths in minutes: users' preferred lengths are drawn
    around it, and its mean is the typical user's (the rating and the user-blind feature model)."""
    return float(np.log(catalog.length_mean)), catalog.length_sigma


def length_fit(log_length: np.ndarray, preferred_length: np.ndarray | float, taste: float, spread: float) -> np.ndarray:
    """[N, K] fit added to an item's topic fit for its length: taste x (2 spread^2 - (log length - preferred)^2).

    log_length [N, K] log minutes of the items; preferred_length [N] log minutes (or a scalar);
    spread: the std of log lengths (items' and preferred alike), so the term averages 0 over users
    and items: it moves fit toward the lengths a user likes without making items suit less overall.
    """
    gap = log_length - np.asarray(preferred_length, dtype=np.float32)[..., None]
    return (np.float32(taste) * (np.float32(2.0 * spread * spread) - gap * gap)).astype(np.float32)
