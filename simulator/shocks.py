"""Scheduled shocks: sudden or gradual interest shifts and catalog injections at known steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.params import check_bool, check_int, check_range

SHOCK_KINDS = ("sudden", "gradual", "injection")


@dataclass(frozen=True)
class ShockEvent:
    """One change point at episode step `step`.

    sudden: interests of a `fraction` of users jump `strength` of the way to a target
    drawn like a new user of another taste community (see users.sample_users).
    gradual: the same move, spread over `duration` steps.
    injection: `n_items` new items centred on `topic` (-1: random) arrive in the catalog.
    """

    kind: str
    step: int
    fraction: float = 1.0
    strength: float = 0.8
    duration: int = 20
    n_items: int = 50
    topic: int = -1

    def __post_init__(self) -> None:
        if self.kind not in SHOCK_KINDS:
            raise ValueError(f"shocks.events.kind must be one of {', '.join(SHOCK_KINDS)}, got {self.kind!r}")
        o = f"shocks.events[{self.kind}]"
        check_int(o, "step", self.step, 1)
        check_range(o, "fraction", self.fraction, 0.0, 1.0)
        check_range(o, "strength", self.strength, 0.0, 1.0)
        check_int(o, "duration", self.duration, 1)
        check_int(o, "n_items", self.n_items, 0)
        check_int(o, "topic", self.topic, -1)


@dataclass(frozen=True)
class ShockParams:
    enabled: bool = False
    magnitude: float = 1.0
    events: tuple[ShockEvent, ...] = (ShockEvent("sudden", step=10),)

    def __post_init__(self) -> None:
        check_bool("shocks", "enabled", self.enabled)
        check_range("shocks", "magnitude", self.magnitude, 0.0)
        if not all(isinstance(e, ShockEvent) for e in self.events):
            raise ValueError("shocks.events must be ShockEvent entries (or mappings in overrides)")

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

    @property
    def scale(self) -> float:
        return self.magnitude if self.enabled else 0.0

    def active_events(self) -> tuple[ShockEvent, ...]:
        return self.events if self.scale > 0 else ()

    def injections(self, n_topics: int) -> tuple[tuple[int, int, int], ...]:
        """(step, n_items, topic) batches the catalog must hold; the magnitude scales their size."""
        out = []
        for e in self.active_events():
            if e.kind == "injection":
                if e.topic >= n_topics:
                    raise ValueError(f"shocks.events[injection].topic must be < n_topics={n_topics}, got {e.topic}")
                out.append((e.step, int(round(e.n_items * self.scale)), e.topic))
        return tuple(out)


def blend(event: ShockEvent, params: ShockParams) -> float:
    """Fraction of the way to the target that an interest shift covers, in [0, 1]."""
    return min(1.0, event.strength * params.scale)


def apply_shocks(
    interest: np.ndarray, target: np.ndarray, shock_draw: np.ndarray, user_step: np.ndarray, params: ShockParams
) -> None:
    """In place: move interests [N, T] toward `target` [N, T] for users hit at their current step [N]."""
    for event in params.active_events():  # a handful of events, each vectorised over users
        if event.kind == "injection":
            continue
        b = blend(event, params)
        if event.kind == "sudden":
            hit = (user_step == event.step) & (shock_draw < event.fraction)
            rate = b
        else:  # gradual: equal geometric steps that add up to `b` over the window
            hit = (user_step >= event.step) & (user_step < event.step + event.duration) & (shock_draw < event.fraction)
            rate = 1.0 - (1.0 - b) ** (1.0 / event.duration)
        if rate and hit.any():
            interest[hit] += np.float32(rate) * (target[hit] - interest[hit])


def change_points(params: ShockParams) -> list[dict[str, Any]]:
    """The ground-truth log of change points: kind, first and last affected episode step, fraction."""
    out = []
    for e in params.active_events():
        end = e.step + e.duration - 1 if e.kind == "gradual" else e.step
        out.append(dict(kind=e.kind, step=e.step, end_step=end, fraction=e.fraction, blend=blend(e, params)))
    return out
