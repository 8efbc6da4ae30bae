"""Cognitive drift: satiation (boredom) with recovery, reinforcement, novelty seeking, random walk.

Within a session these act per step. Between two visits of a lifetime world, time acts: satiation
fades with the days away (`satiation_recovery_per_day`: bored tonight, fresh next week), the
random walk accumulates over the gap (`random_walk_std_per_day`, growing with the square root of
the days), and what reinforcement did to interests stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from simulator.drift import DriftFamily, DriftParams, FamilyState, GapContext, StepContext
from simulator.params import check_range

if TYPE_CHECKING:
    from simulator.state import UserState
    from simulator.world import World


@dataclass(frozen=True)
class CognitiveParams(DriftParams):
    FAMILY_NAME: ClassVar[str] = "cognitive"
    satiation_rate: float = 0.1  # satiation gained per fully watched item of a topic
    satiation_recovery: float = 0.05  # fraction of satiation lost per step (recovery with time)
    satiation_weight: float = 1.0  # fit lost on a fully satiated topic
    reinforcement_rate: float = 0.02  # interest gain toward consumed topics, per watched item
    novelty_weight: float = 1.0  # utility bonus of fresh items / penalty of repeats, x novelty_seeking
    rewatch: float = 1.0  # share of its usual watch time an item gets again while among the user's recent items
    freshness_steps: float = 20.0  # an arrived item stays fresh for about this many steps
    random_walk_std: float = 0.01  # exogenous per-step interest noise
    satiation_recovery_per_day: float = 0.5  # lifetime worlds: fraction of satiation lost per day away
    random_walk_std_per_day: float = 0.03  # lifetime worlds: interest noise per sqrt(day) between visits
    freshness_days: float = 7.0  # lifetime worlds: an arrived item stays fresh for about this many days

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self.FAMILY_NAME
        check_range(o, "satiation_rate", self.satiation_rate, 0.0, 1.0)
        check_range(o, "satiation_recovery", self.satiation_recovery, 0.0, 1.0)
        check_range(o, "satiation_weight", self.satiation_weight, 0.0, 100.0)
        check_range(o, "reinforcement_rate", self.reinforcement_rate, 0.0, 1.0)
        check_range(o, "novelty_weight", self.novelty_weight, 0.0, 100.0)
        check_range(o, "rewatch", self.rewatch, 0.0, 1.0)
        check_range(o, "freshness_steps", self.freshness_steps, 0.0, 1e6, lo_open=True)
        check_range(o, "random_walk_std", self.random_walk_std, 0.0, 1.0)
        check_range(o, "satiation_recovery_per_day", self.satiation_recovery_per_day, 0.0, 1.0)
        check_range(o, "random_walk_std_per_day", self.random_walk_std_per_day, 0.0, 1.0)
        check_range(o, "freshness_days", self.freshness_days, 0.0, 3650.0, lo_open=True)


def satiation_term(satiation: np.ndarray, params: CognitiveParams) -> np.ndarray:
    """[N, T] what boredom adds to the interests a user feels: - weight * magnitude * satiation [N, T].

    An item's fit gains term . topics, so a satiated topic makes its items less appealing. (A
    negative coefficient times satiation is bit for bit the negated penalty: rounding is symmetric.)
    """
    return np.float32(-(params.satiation_weight * params.scale)) * satiation


def update_satiation(
    satiation: np.ndarray, consumed_topics: np.ndarray, completion: np.ndarray, params: CognitiveParams
) -> None:
    """In place: satiation [N, T] decays by `recovery`, then grows with what was watched.

    consumed_topics [N, T] (zero rows for no click); completion [N] fraction watched.
    The state evolves whatever the magnitude; the magnitude scales its effect on choices.
    """
    satiation *= np.float32(1.0 - params.satiation_recovery)
    gain = np.float32(params.satiation_rate) * completion[:, None] * consumed_topics
    satiation += gain * (1.0 - satiation)


def reinforce(
    interest: np.ndarray, consumed_topics: np.ndarray, completion: np.ndarray, params: CognitiveParams
) -> None:
    """In place: interests [N, T] grow toward +1 on the topics just watched ("more of what I watch")."""
    rate = np.float32(params.reinforcement_rate * params.scale)
    if rate:
        interest += rate * completion[:, None] * consumed_topics * (1.0 - interest)


def is_repeat(slates: np.ndarray, recent_items: np.ndarray) -> np.ndarray:
    """[N, K] bool: the item of `slates` [N, K] is among the user's recent items [N, R] (-1 = none)."""
    return (slates[:, :, None] == recent_items[:, None, :]).any(-1)


def novelty_bonus(
    slates: np.ndarray,
    recent_items: np.ndarray,
    freshness: np.ndarray,
    novelty_seeking: np.ndarray,
    params: CognitiveParams,
) -> np.ndarray:
    """[N, K] utility of novelty: + freshness of newly arrived items, - 1 for a repeat of a recent item.

    slates [N, K]; recent_items [N, R]; freshness [N, K] in [0, 1]; novelty_seeking [N].
    """
    weight = params.novelty_weight * params.scale
    if not weight:
        return np.zeros(slates.shape, dtype=np.float32)
    if not (recent_items >= 0).any():  # users who remember nothing (new ones): no repeats, no [N, K, R] test
        return np.float32(weight) * novelty_seeking[:, None] * freshness
    return np.float32(weight) * novelty_seeking[:, None] * (freshness - is_repeat(slates, recent_items))


def rewatch_factor(slates: np.ndarray, recent_items: np.ndarray, params: CognitiveParams) -> np.ndarray | None:
    """[N, K] share of its usual watch time each item of `slates` [N, K] would get: for a repeat of
    one of the user's recent items [N, R], 1 - scale x (1 - rewatch) (at least 0), else 1. None when
    a repeat watches like a first view (rewatch 1, or the family off), so callers skip the work.

    Seen minutes ago, a video is mostly skipped through the second time: platforms filter what a
    user has just watched because rewatch rates are low. Only the history says what was watched
    before the last item, so a policy that reads one interaction serves more repeats.
    """
    loss = params.scale * (1.0 - params.rewatch)
    if not loss:
        return None
    return np.where(is_repeat(slates, recent_items), np.float32(max(0.0, 1.0 - loss)), np.float32(1.0))


def freshness(arrival: np.ndarray, now: np.ndarray, lasting: float) -> np.ndarray:
    """[N, K] exp(-age / lasting) for items that arrived after the start, else 0.

    arrival [N, K] of the slate's items and now [N] on the world's clock (episode steps, or days
    in lifetime worlds); lasting: `freshness_steps` or `freshness_days`.
    """
    age = now[:, None] - arrival
    fresh = np.exp(-np.maximum(age, 0) / np.float32(lasting)).astype(np.float32)
    return np.where(arrival > 0, fresh, np.float32(0.0))


def random_walk(interest: np.ndarray, uniform: np.ndarray, params: CognitiveParams) -> None:
    """In place: interests [N, T] += increments of mean 0 and std `random_walk_std`.

    Increments are uniform on [-sqrt(3), sqrt(3)] * std (unit variance before scaling): a
    random walk all the same, at a fraction of the cost of normal draws. uniform [N, T] in [0, 1).
    """
    std = np.float32(params.random_walk_std * params.scale)
    if std:
        interest += (std * np.float32(2.0 * np.sqrt(3.0))) * (uniform - np.float32(0.5))


def uses_walk_noise(params: CognitiveParams) -> bool:
    return bool(params.scale and params.random_walk_std)


def uses_gap_noise(params: CognitiveParams) -> bool:
    return bool(params.scale and params.random_walk_std_per_day)


@dataclass
class CognitiveState(FamilyState):
    """satiation [N, T] in [0, 1] per topic; novelty_seeking [N] the trait, ~ U(0, users.novelty_seeking_max)."""

    satiation: np.ndarray
    novelty_seeking: np.ndarray


class CognitiveFamily(DriftFamily):
    """Satiation, reinforcement, novelty seeking and the random walk (see the module docstring)."""

    name = "cognitive"
    params = CognitiveParams

    def bytes_per_user(self, params: CognitiveParams, n_topics: int) -> int:
        return 4 * n_topics

    def new_state(self, world: World, n_users: int, rng: np.random.Generator) -> CognitiveState:
        t = world.config.catalog.n_topics
        return CognitiveState(
            satiation=np.zeros((n_users, t), np.float32), novelty_seeking=np.zeros(n_users, np.float32)
        )

    def new_users(self, world: World, idx: np.ndarray, rng: np.random.Generator, stage: str) -> None:
        """A new user's novelty seeking (a trait), and no satiation."""
        if stage != "traits":
            return
        s = self.state_of(world.state)
        s.novelty_seeking[idx] = rng.uniform(0.0, world.config.users.novelty_seeking_max, size=idx.size).astype(
            np.float32
        )
        s.satiation[idx] = 0.0

    def as_arrived(self, world: World, state: UserState) -> None:
        self.state_of(state).satiation[:] = 0.0

    def felt_term(self, world: World, state: UserState) -> np.ndarray | None:
        """Boredom (`satiation_term`)."""
        p = self.config(world.config)
        return satiation_term(self.state_of(state).satiation, p) if p.scale else None

    def utility_term(self, world: World, slates: np.ndarray, state: UserState) -> np.ndarray | None:
        """The novelty bonus of fresh arrivals, the penalty of repeats."""
        p, c = self.config(world.config), world.catalog
        if not (p.scale and p.novelty_weight):
            return None
        now, lasting = (state.day, p.freshness_days) if world.lifetime else (state.step, p.freshness_steps)
        fresh = freshness(c.arrival[slates], now, lasting)
        return novelty_bonus(slates, state.recent_items, fresh, self.state_of(state).novelty_seeking, p)

    def completion_factor(self, world: World, slates: np.ndarray, state: UserState) -> np.ndarray | None:
        """A repeat of a recent item is mostly skipped through."""
        return rewatch_factor(slates, state.recent_items, self.config(world.config))

    def step_draws(self, params: CognitiveParams, n_topics: int) -> tuple[int, ...] | None:
        return (n_topics,) if uses_walk_noise(params) else None

    def gap_draws(self, params: CognitiveParams, n_topics: int) -> tuple[int, ...] | None:
        return (n_topics,) if uses_gap_noise(params) else None

    def after_response(self, world: World, ctx: StepContext) -> None:
        """Per step: satiation decays and grows with what was watched; watching reinforces interests;
        the random walk moves them."""
        s, p = world.state, self.config(world.config)
        update_satiation(self.state_of(s).satiation, ctx.consumed, ctx.completion, p)
        reinforce(s.interest, ctx.consumed, ctx.completion, p)
        walk = ctx.noise.get(self.name)
        if walk is not None:
            random_walk(s.interest, walk, p)

    def between_visits(self, world: World, gap: GapContext) -> None:
        """Over the days away: satiation fades, the random walk accumulates (std ~ sqrt(days))."""
        s, p = world.state, self.config(world.config)
        satiation = self.state_of(s).satiation
        idx, days = gap.idx, gap.days
        satiation[idx] *= np.power(1.0 - p.satiation_recovery_per_day, days).astype(np.float32)[:, None]
        std = p.random_walk_std_per_day * p.scale
        walk = gap.noise.get(self.name)
        if std and walk is not None:
            step = (std * np.sqrt(days) * 2.0 * np.sqrt(3.0)).astype(np.float32)[:, None]
            s.interest[idx] += step * (walk - np.float32(0.5))

    def truth(self, world: World) -> dict[str, np.ndarray]:
        return dict(satiation=self.state_of(world.state).satiation.copy())


FAMILY = CognitiveFamily()
