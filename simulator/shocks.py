"""Scheduled shocks: sudden or gradual interest shifts, population-wide trends and catalog
injections at known times, logged as change points.

In session worlds an event happens at an episode step (`step`); in lifetime worlds on a calendar
date (`day`, days since the simulation started), whether the user is in a session or away then:
a life event for a share of the users, a trend that sweeps the population, items released.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from simulator.drift import DriftFamily, DriftParams, FamilyState, GapContext, StepContext
from simulator.params import check_int, check_range

if TYPE_CHECKING:
    from simulator.world import World, WorldConfig

SHOCK_KINDS = ("sudden", "gradual", "trend", "injection")


@dataclass(frozen=True)
class ShockEvent:
    """One change point, at episode step `step` (session worlds) or on day `day` (lifetime worlds).

    sudden: interests of a `fraction` of users jump `strength` of the way to a target drawn like
    a new user of another taste community (see users.sample_users): a life event.
    gradual: the same move, spread over `duration` steps (or days).
    trend: a `fraction` of users warm to `topic` (-1: one chosen with the catalog), moving their
    interest in it `strength` of the way to 1 over `duration` steps (or days): a trend that
    sweeps the population.
    injection: `n_items` new items centred on `topic` (-1: random) arrive in the catalog.
    """

    kind: str
    step: int = 1
    day: float | None = None
    fraction: float = 1.0
    strength: float = 0.8
    duration: float = 20
    n_items: int = 50
    topic: int = -1

    def __post_init__(self) -> None:
        if self.kind not in SHOCK_KINDS:
            raise ValueError(f"shock.events.kind must be one of {', '.join(SHOCK_KINDS)}, got {self.kind!r}")
        o = f"shock.events[{self.kind}]"
        check_int(o, "step", self.step, 1, 1_000_000)
        if self.day is not None:
            check_range(o, "day", self.day, 0.0, 36_500.0, lo_open=True)
        check_range(o, "fraction", self.fraction, 0.0, 1.0)
        check_range(o, "strength", self.strength, 0.0, 1.0)
        check_range(o, "duration", self.duration, 0.0, 36_500.0, lo_open=True)
        check_int(o, "n_items", self.n_items, 0, 1_000_000)
        check_int(o, "topic", self.topic, -1)

    @property
    def at(self) -> float:
        """When it happens on the world's clock: the day when given, else the step."""
        return float(self.step) if self.day is None else float(self.day)


@dataclass(frozen=True)
class ShockParams(DriftParams):
    FAMILY_NAME: ClassVar[str] = "shock"
    events: tuple[ShockEvent, ...] = (ShockEvent("sudden", step=10),)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(isinstance(e, ShockEvent) for e in self.events):
            raise ValueError("shock.events must be ShockEvent entries (or mappings in overrides)")

    @staticmethod
    def _coerce_events(value: Any, where: str) -> tuple[ShockEvent, ...]:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of events, got {type(value).__name__}")
        events = []
        for i, e in enumerate(value):
            if isinstance(e, ShockEvent):
                events.append(e)
            elif isinstance(e, Mapping):
                allowed = set(ShockEvent.__dataclass_fields__)
                unknown = set(e) - allowed
                if unknown:
                    raise ValueError(
                        f"unknown config key '{where}[{i}].{sorted(unknown)[0]}'; allowed: {', '.join(sorted(allowed))}"
                    )
                events.append(ShockEvent(**e))
            else:
                raise ValueError(f"{where}[{i}] must be a mapping, got {type(e).__name__}")
        return tuple(events)

    def active_events(self) -> tuple[ShockEvent, ...]:
        return self.events if self.scale > 0 else ()

    def injections(self, n_topics: int) -> tuple[tuple[float, int, int], ...]:
        """(time on the world's clock, n_items, topic) batches the catalog must hold; the magnitude
        scales their size."""
        out = []
        for e in self.active_events():
            if e.kind == "injection":
                if e.topic >= n_topics:
                    raise ValueError(f"shock.events[injection].topic must be < n_topics={n_topics}, got {e.topic}")
                out.append((e.at, int(round(e.n_items * self.scale)), e.topic))
        return tuple(out)


def blend(event: ShockEvent, params: ShockParams) -> float:
    """Fraction of the way to the target that an interest shift covers, in [0, 1]."""
    return min(1.0, event.strength * params.scale)


def _shift(
    interest: np.ndarray, hit: np.ndarray, share: Any, event: ShockEvent, target: np.ndarray, topic: int
) -> None:
    """In place: the users in `hit` [M] move `share` (a number, or [M]) of the way: toward their
    target [M, T], or, for a trend, toward liking `topic`."""
    share = np.float32(share) if np.ndim(share) == 0 else np.asarray(share, np.float32)[hit]
    if event.kind == "trend":
        interest[hit, topic] += share * (np.float32(1.0) - interest[hit, topic])
    else:
        interest[hit] += (share if np.ndim(share) == 0 else share[:, None]) * (target[hit] - interest[hit])


def apply_shocks(
    interest: np.ndarray,
    target: np.ndarray,
    shock_draw: np.ndarray,
    user_step: np.ndarray,
    params: ShockParams,
    trend_topics: tuple[int, ...] = (),
) -> None:
    """Session worlds, in place: move interests [N, T] toward `target` [N, T] (or toward liking a
    trend's topic, `trend_topics` holding one topic per non-injection event) for the users hit at
    their current step [N]."""
    shifts = [e for e in params.active_events() if e.kind != "injection"]
    for event, topic in zip(shifts, trend_topics or (-1,) * len(shifts)):  # a handful, vectorised over users
        b = blend(event, params)
        if event.kind == "sudden":
            hit = (user_step == event.step) & (shock_draw < event.fraction)
            rate = b
        else:  # gradual, trend: equal geometric steps that add up to `b` over the window
            hit = (user_step >= event.step) & (user_step < event.step + event.duration) & (shock_draw < event.fraction)
            rate = 1.0 - (1.0 - b) ** (1.0 / event.duration)
        if rate and hit.any():
            _shift(interest, hit, rate, event, target, topic)


def apply_dated_shocks(
    interest: np.ndarray,
    target: np.ndarray,
    shock_draw: np.ndarray,
    day_before: np.ndarray,
    day_after: np.ndarray,
    params: ShockParams,
    trend_topics: tuple[int, ...] = (),
) -> None:
    """Lifetime worlds, in place: the events dated inside (day_before, day_after] [M] of each user
    (a step, or the days between two visits). A sudden event applies once; a gradual one or a
    trend applies the part of its window the interval covers."""
    shifts = [e for e in params.active_events() if e.kind != "injection"]
    for event, topic in zip(shifts, trend_topics or (-1,) * len(shifts)):
        b = blend(event, params)
        member = shock_draw < event.fraction
        if event.kind == "sudden":
            hit = member & (day_before < event.day) & (event.day <= day_after)
            rate: Any = b
        else:
            start, end = event.day, event.day + event.duration
            covered = np.clip(np.minimum(day_after, end) - np.maximum(day_before, start), 0.0, None)
            hit = member & (covered > 0)
            rate = 1.0 - np.power(1.0 - b, covered / event.duration)
        if b and hit.any():
            _shift(interest, hit, rate, event, target, topic)


def change_points(params: ShockParams, trend_topics: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """The ground-truth log of change points: kind, first and last affected step (session worlds)
    or day (lifetime worlds), fraction, blend (and topic for trends and injections)."""
    out = []
    shifts = iter(trend_topics)
    for e in params.active_events():
        extended = e.kind in ("gradual", "trend")
        point: dict[str, Any] = dict(kind=e.kind, fraction=e.fraction, blend=blend(e, params))
        if e.day is None:
            point.update(step=e.step, end_step=e.step + int(e.duration) - 1 if extended else e.step)
        else:
            point.update(day=e.day, end_day=e.day + e.duration if extended else e.day)
        if e.kind != "injection":
            topic = next(shifts)
            if e.kind == "trend":
                point["topic"] = topic
        else:
            point["topic"] = e.topic
        out.append(point)
    return out


@dataclass
class ShockState(FamilyState):
    """draw [N] uniform deciding which events a user is among (those of fraction > draw); target
    [N, T] where a sudden or gradual shift moves the user's interests: the tastes of a new user of
    another taste community."""

    draw: np.ndarray
    target: np.ndarray


class ShockFamily(DriftFamily):
    """Scheduled shocks (see the module docstring); its structure is the topic of each trend."""

    name = "shock"
    params = ShockParams

    def check(self, params: ShockParams, config: WorldConfig) -> None:
        t = config.catalog.n_topics
        for e in params.active_events():
            if e.kind in ("injection", "trend") and e.topic >= t:
                raise ValueError(f"shock.events[{e.kind}].topic must be < catalog.n_topics={t}, got {e.topic}")
        in_days = config.lifetime.enabled
        clock = "days (lifetime worlds)" if in_days else "episode steps (session worlds)"
        for e in params.events:
            if in_days and e.day is None:
                raise ValueError(f"shock.events[{e.kind}].day must be set: events happen on dates in {clock}")
            if not in_days and e.day is not None:
                raise ValueError(
                    f"shock.events[{e.kind}].day is for lifetime worlds: events happen at a step in {clock}"
                )

    def bytes_per_user(self, params: ShockParams, n_topics: int) -> int:
        return 4 * n_topics

    def catalog_injections(self, params: ShockParams, n_topics: int) -> tuple[tuple[float, int, int], ...]:
        return params.injections(n_topics)

    def build(self, world: World, rng: np.random.Generator) -> tuple[int, ...]:
        """The topic each interest-shifting event acts on (trends; -1 picks one with the catalog)."""
        p, t = self.config(world.config), world.config.catalog.n_topics
        return tuple(
            (int(rng.integers(t)) if e.topic < 0 else e.topic) if e.kind == "trend" else -1
            for e in p.active_events()
            if e.kind != "injection"
        )

    def new_state(self, world: World, n_users: int, rng: np.random.Generator) -> ShockState:
        t = world.config.catalog.n_topics
        return ShockState(draw=np.zeros(n_users, np.float32), target=np.zeros((n_users, t), np.float32))

    def new_users(self, world: World, idx: np.ndarray, rng: np.random.Generator, stage: str) -> None:
        """A target drawn with the user's tastes, like a new user of another taste community (a shift
        changes *what* a user likes, not how much there is to like: a uniform target would broaden
        tastes and make shocks raise engagement); after the traits, the user's draw."""
        s = self.state_of(world.state)
        if stage == "tastes":
            m, centres = idx.size, world.centres
            n_comm, t = centres.shape
            community = world.state.community[idx]
            w = world.config.users.community_strength
            other = (community + rng.integers(1, n_comm, size=m)) % n_comm if n_comm > 1 else community
            s.target[idx] = ((1.0 - w) * rng.uniform(-1.0, 1.0, size=(m, t)) + w * centres[other]).astype(np.float32)
        elif stage == "events":
            s.draw[idx] = rng.random(idx.size).astype(np.float32)

    def before_choice(self, world: World, ctx: StepContext) -> None:
        """Session worlds: the events of this episode step hit before the users choose."""
        if world.lifetime:
            return
        s, p = world.state, self.config(world.config)
        own = self.state_of(s)
        apply_shocks(s.interest, own.target, own.draw, s.step, p, world.structure[self.name])

    def after_response(self, world: World, ctx: StepContext) -> None:
        """Lifetime worlds: the events dated inside the minutes this step took."""
        if not world.lifetime or ctx.clock_before is None:
            return
        s, p = world.state, self.config(world.config)
        own = self.state_of(s)
        apply_dated_shocks(
            s.interest, own.target, own.draw, ctx.clock_before, ctx.clock_after, p, world.structure[self.name]
        )

    def between_visits(self, world: World, gap: GapContext) -> None:
        """Lifetime worlds: the events dated inside the days away."""
        s, p, idx = world.state, self.config(world.config), gap.idx
        own = self.state_of(s)
        interest = s.interest[idx]
        apply_dated_shocks(
            interest, own.target[idx], own.draw[idx], gap.day_before, gap.day_after, p, world.structure[self.name]
        )
        s.interest[idx] = interest

    def change_points(self, world: World) -> list[dict[str, Any]]:
        """Scheduled change points and, per event, which users they hit [N] (None for injections)."""
        draw = self.state_of(world.state).draw
        out = change_points(self.config(world.config), world.structure[self.name])
        for cp in out:
            cp["affected"] = draw < cp["fraction"] if cp["kind"] != "injection" else None
        return out


FAMILY = ShockFamily()
