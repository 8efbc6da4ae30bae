"""The mutable state of N users, as arrays with a leading user axis."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from simulator.drift import FamilyState


@dataclass
class UserState:
    """Everything that changes while users are simulated. Shapes: N users, T topics, R recent items.

    interest [N, T] long-term interests in [-1, 1]; initial_interest [N, T] at episode start;
    satisfaction [N] in [0, 1]; budget [N] minutes left (this session);
    step [N] step of the session; episode_step [N] step of the episode (the same in session worlds);
    calendar_offset [N] calendar time at clock 0 (calendar = offset + step, or + day in lifetime worlds);
    lifetime worlds: day [N] the clock (days since the simulation started), first_day [N] of the first
    visit, last_visit [N] end of the previous session (first_day before one), session [N] sessions before
    the current one, activity [N] the return-rate trait, session_watch / session_letdown [N] and
    session_clicks [N] so far this session (the return model reads them);
    preferred_length [N] log minutes (users.length_fit); community [N];
    recent_items [N, R] last consumed items (-1 = none), recent_ptr [N] ring position;
    drift: each drift family's own state by family name (`simulator.drift.FamilyState`).
    """

    interest: np.ndarray
    initial_interest: np.ndarray
    satisfaction: np.ndarray
    budget: np.ndarray
    step: np.ndarray
    episode_step: np.ndarray
    calendar_offset: np.ndarray
    day: np.ndarray
    first_day: np.ndarray
    last_visit: np.ndarray
    session: np.ndarray
    activity: np.ndarray
    session_watch: np.ndarray
    session_letdown: np.ndarray
    session_clicks: np.ndarray
    preferred_length: np.ndarray
    community: np.ndarray
    recent_items: np.ndarray
    recent_ptr: np.ndarray
    drift: dict[str, FamilyState] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.interest.shape[0])

    def _core(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "drift"}

    def copy(self) -> UserState:
        """Deep copy: the copy and the original step independently."""
        drift = {name: s.copy() for name, s in self.drift.items()}
        return UserState(**{k: v.copy() for k, v in self._core().items()}, drift=drift)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by name; a family's as FAMILY.FIELD (what `World.save` writes)."""
        out = self._core()
        for name, s in self.drift.items():
            out.update({f"{name}.{k}": v for k, v in s.arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], like: UserState) -> UserState:
        """The state `arrays` holds (as `arrays()` names them), with the families' state classes of `like`."""
        drift = {}
        for name, s in like.drift.items():
            own = {f.name: arrays[f"{name}.{f.name}"] for f in dataclasses.fields(s)}
            drift[name] = type(s)(**own)
        return cls(**{k: arrays[k] for k in like._core()}, drift=drift)

    def take(self, index: np.ndarray) -> UserState:
        """State of the users at `index` (a family's population-wide arrays are copied whole)."""
        drift = {name: s.take(index) for name, s in self.drift.items()}
        return UserState(**{k: v[index] for k, v in self._core().items()}, drift=drift)

    def tile(self, index: np.ndarray, m: int) -> UserState:
        """State of a world of N*m users, `index` [N*m] = repeat(arange(N), m) (see `World.tile`)."""
        drift = {name: s.tile(index, m) for name, s in self.drift.items()}
        return UserState(**{k: v[index] for k, v in self._core().items()}, drift=drift)
