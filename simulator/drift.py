"""The contract every drift family follows: shared switches, and hooks the world calls in one order.

A drift family is one module holding

- a frozen parameter dataclass deriving from `DriftParams` (`enabled`, `magnitude`, and `scale`,
  the strength its formulas use: `magnitude` when enabled, else 0), validated on construction;
- `FAMILY = DriftFamily(name, params, ...hooks)`, registered once in `simulator.families.FAMILIES`,
  whose `name` is also the family's config section (`make_scenario(..., {name: {...}})`), its
  preset and its name in the stress tool: one spelling everywhere.

`World` calls the hooks of every registered family, in the order of `FAMILIES`:

  within a step:   before_choice(world, ctx)   changes scheduled for this step (shocks)
                   -- the users choose and respond --
                   after_response(world, ctx)  what consumption, neighbours and time do to tastes
  between visits:  between_visits(world, idx, days, noise)   what the days between two sessions do
                   (lifetime worlds only: idx [M] the users starting a new session, days [M] the gap)

A hook mutates `world.state` in place (arrays with a leading user axis, never a loop over users)
and may be None. Families that change nothing in the state (seasons: a function of the date) have
no hooks. Adding a mechanism: its module with the params and the FAMILY record, one entry in
`FAMILIES`, its field in `WorldConfig`, and a preset in `envs.config.PRESETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from simulator.params import check_bool, check_range

if TYPE_CHECKING:
    from simulator.world import World


@dataclass(frozen=True)
class DriftParams:
    """The switches every drift family shares. `FAMILY_NAME` names the config section in errors."""

    FAMILY_NAME: ClassVar[str] = "drift"
    enabled: bool = False
    magnitude: float = 1.0

    def __post_init__(self) -> None:
        check_bool(self.FAMILY_NAME, "enabled", self.enabled)
        check_range(self.FAMILY_NAME, "magnitude", self.magnitude, 0.0, 100.0)

    @property
    def scale(self) -> float:
        """The strength the family's formulas use: `magnitude` when enabled, else 0."""
        return self.magnitude if self.enabled else 0.0


@dataclass
class StepContext:
    """What one step did, for the `after_response` hooks. Arrays lead with the user axis N.

    consumed [N, T]: topic mixture of the item watched (zero rows without a click); completion [N]
    fraction watched (0 without a click); clicked [N]; walk_noise [N, T] uniforms in [0, 1) for
    the random walk (None when no family needs them); clock_before, clock_after [N]: the users'
    clock (days) before and after the step in lifetime worlds, None in session worlds.
    """

    consumed: np.ndarray
    completion: np.ndarray
    clicked: np.ndarray
    walk_noise: np.ndarray | None = None
    clock_before: np.ndarray | None = None
    clock_after: np.ndarray | None = None


@dataclass
class GapContext:
    """The days between two visits of the users at `idx` [M], for the `between_visits` hooks.

    day_before [M] the end of the last session, day_after [M] the start of the next (days);
    walk_noise [M, T] standard-uniform draws for the random walk over the gap (None when unused).
    """

    idx: np.ndarray
    day_before: np.ndarray
    day_after: np.ndarray
    walk_noise: np.ndarray | None = None

    @property
    def days(self) -> np.ndarray:
        return self.day_after - self.day_before


Hook = Callable[["World", Any], None]


@dataclass(frozen=True)
class DriftFamily:
    """One registered drift family: its name (config section, preset, stress family), its params
    dataclass, and its hooks (see the module docstring; None where it has nothing to do)."""

    name: str
    params: type[DriftParams]
    before_choice: Hook | None = None
    after_response: Hook | None = None
    between_visits: Hook | None = None
    needs_walk_noise: Callable[[Any], bool] = lambda params: False

    def config(self, world_config: Any) -> DriftParams:
        """This family's params in a WorldConfig."""
        return getattr(world_config, self.name)


def geometric_share(rate_per_unit: float | np.ndarray, units: np.ndarray) -> np.ndarray:
    """[M] share of the remaining distance covered in `units` [M] time units by a process that
    covers `rate_per_unit` of it per unit: 1 - (1 - rate)^units (the integral of a per-step pull)."""
    return (1.0 - np.power(1.0 - np.asarray(rate_per_unit, dtype=np.float64), units)).astype(np.float32)
