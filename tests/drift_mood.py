"""A drift family from outside the package, as a researcher writes one in their own folder: a mood
that swings with the time of day. The tests name it `drift_mood:Mood` (this folder on the path).

Each user's mood follows the calendar with their own phase; in a good mood the mood's topic suits
them better, in a bad one worse: the fit of an item gains amplitude x magnitude x sin(2 pi calendar
/ period + phase) x its share of the topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from simulator import DriftFamily, DriftParams, FamilyState
from simulator.params import check_int, check_range


@dataclass(frozen=True)
class MoodParams(DriftParams):
    FAMILY_NAME: ClassVar[str] = "mood"
    amplitude: float = 0.5  # fit gained on the mood's topic at the top of a swing (lost at the bottom)
    period: float = 24.0  # calendar units per swing: steps (session worlds); 1.0 is a day in lifetime worlds
    topic: int = 0  # the topic a good mood favours

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("mood", "amplitude", self.amplitude, 0.0, 10.0)
        check_range("mood", "period", self.period, 0.0, 1e6, lo_open=True)
        check_int("mood", "topic", self.topic, 0)


@dataclass
class MoodState(FamilyState):
    phase: np.ndarray  # [N] where in the day each user's mood peaks, in [0, 2 pi)


class Mood(DriftFamily):
    name = "mood"
    params = MoodParams

    def check(self, params: MoodParams, config) -> None:
        if params.topic >= config.catalog.n_topics:
            raise ValueError(f"mood.topic must be < catalog.n_topics={config.catalog.n_topics}, got {params.topic}")

    def new_state(self, world, n_users: int, rng: np.random.Generator) -> MoodState:
        return MoodState(phase=np.zeros(n_users, np.float32))

    def new_users(self, world, idx: np.ndarray, rng: np.random.Generator, stage: str) -> None:
        if stage == "arrival":  # from the family's own stream: on and off meet the same users
            self.state_of(world.state).phase[idx] = rng.uniform(0.0, 2.0 * np.pi, idx.size)

    def swing(self, world, state) -> np.ndarray:
        """[N] the users' mood now, in [-1, 1]."""
        p = self.config(world.config)
        return np.sin(2.0 * np.pi * world.calendar_of(state) / p.period + self.state_of(state).phase)

    def fit_term(self, world, slates: np.ndarray, state) -> np.ndarray | None:
        p = self.config(world.config)
        if not p.scale:
            return None
        share = world.catalog.topics[slates][..., p.topic]  # [N, K]
        return (p.amplitude * p.scale * self.swing(world, state))[:, None] * share


MOOD = Mood()
