"""The contract every drift family follows: a family owns its params, its per-user state, its
structure and its hooks, and the world sums what the families add without naming any.

A drift family is a subclass of `DriftFamily`, in any module (the package's four live in
`simulator/`, a researcher's in their own folder), with

- `name`: its config section (`make_scenario(..., {name: {...}})`), its name in the stress tool
  (`stress.py --families NAME`) and in the validity report: one spelling everywhere;
- `params`: a frozen dataclass deriving from `DriftParams` (`enabled`, `magnitude`, and `scale`,
  the strength its formulas use: `magnitude` when enabled, else 0) whose `FAMILY_NAME` is `name`,
  validated on construction with the `simulator.params` check_* helpers;
- optionally its per-user state, a `FamilyState` dataclass of arrays with a leading user axis N
  (a trait, a satiation, a graph over the users), which the family creates (`new_state`) and
  resets for the users who arrive (`new_users`); the world copies, tiles, saves and loads it
  with the users' own state (`UserState.drift[name]`);
- optionally its structure, built once per world (`build`: a calendar table, an event's topic;
  `world.structure[name]`), and items it adds to the catalog (`catalog_injections`);
- the hooks below; every one has a default that does nothing, so a family overrides only
  what it changes.

It takes effect in one of two ways: `simulator.families.register_family(family)` (the four
built-in families are registered by that call too), after which every `WorldConfig` built has
the family's section; or a scenario file (the overrides `envs.make_scenario` takes) that names it
under `families:` as `{name: "package.module:attr"}` (a `DriftFamily` subclass or instance) and
gives its params under `name`, for that scenario only. The world then runs every family of its
config, in the order of the config (registration order, then the order of `families:`):

  building:        check(params, config) against the rest of the config; bytes_per_user for the
                   world's memory check; catalog_injections; build(world, rng) its structure;
                   new_state(world, n_users, rng) at every (re)seed
  new users:       new_users(world, idx, rng, stage) at each of NEW_USER_STAGES: during the
                   world's sampling of a user, `rng` is the users' stream (where the built-in
                   families draw); at "arrival", last, the family's own stream
  as arrived:      as_arrived(world, state) on a copy: the family's state before any drift (what
                   the stale-state oracle and the users' past visits see)
  choice terms:    taste_term(world, state) [N, T]       added to interests: the tastes felt now
                                                         (World.effective_interest: the seasons)
                   felt_term(world, state) [N, T]        added on top, for choices only
                                                         (World.felt_interest: less satiation)
                   fit_term(world, slates, state) [N, K] added to each served item's fit
                   utility_term(world, slates, state) [N, K]  added to each item's utility (novelty)
                   completion_factor(world, slates, state) [N, K]  multiplies the share watched
                                                         (a repeat is skipped through)
  within a step:   before_choice(world, ctx)   changes scheduled for this step (shocks)
                   -- the users choose and respond --
                   after_response(world, ctx)  what consumption, neighbours and time do to tastes
  between visits:  between_visits(world, gap)  what the days between two sessions do
                   (lifetime worlds only: gap.idx [M] the users starting a new session)
  ground truth:    truth(world), population_truth(world), change_points(world)

A term hook returns an array or None (nothing to add); the world adds the terms of all families in
their order. A dynamics hook mutates `world.state` in place (arrays with a leading user axis, never
a loop over users). The world draws every random number a family needs, so that two policies on
one seed see the same noise: per-step uniforms of the shape `step_draws` asks for (after the
world's own step draws), per-visit ones of `gap_draws`, and at `new_users` the family draws from
the stream it is handed. A new family draws its users' traits at the "arrival" stage, from its own
stream (`World.family_rngs[name]`, seeded by the world's seed and the family's name): worlds without
it keep their numbers, and the family on and off meets the same users. It asks for step and gap
uniforms (from the world's step stream) only when on, for the same reason; the built-in families
draw where they always have (the dynamics fingerprint, tests/test_fingerprint.py). Family code
reaches its parts with `self.config(world.config)`, `self.state_of(state)` and
`world.structure[self.name]`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from simulator.params import check_bool, check_range

if TYPE_CHECKING:
    from simulator.state import UserState
    from simulator.world import World, WorldConfig

# When a family draws for new users, in the order the world samples a user: right after the user's
# own tastes; after the session budget (per-user traits); after the families' traits (who events
# reach); once the user's clock is set (where in the calendar they start); these four from the
# users' stream. Last, "arrival", from the family's own stream (the stage for a new family).
NEW_USER_STAGES = ("tastes", "traits", "events", "clock", "arrival")


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
class FamilyState:
    """A family's per-user state: a dataclass of numpy arrays with a leading user axis N.

    Fields named in `POPULATION` hold one value for the whole population (no user axis): `take`
    copies them whole. `tile` makes the state of a world of N*m users (user i's copies at rows
    i*m .. i*m+m-1, see `World.tile`); a field that holds user indices (a graph) overrides it.
    """

    POPULATION: ClassVar[tuple[str, ...]] = ()

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def copy(self) -> FamilyState:
        return type(self)(**{k: v.copy() for k, v in self.arrays().items()})

    def take(self, index: np.ndarray) -> FamilyState:
        """The state of the users at `index` [M] (population fields copied whole)."""
        return type(self)(**{k: v.copy() if k in self.POPULATION else v[index] for k, v in self.arrays().items()})

    def tile(self, index: np.ndarray, m: int) -> FamilyState:
        """The state of a world of N*m users, `index` [N*m] = repeat(arange(N), m)."""
        return self.take(index)


@dataclass
class StepContext:
    """What one step did, for the `before_choice` and `after_response` hooks, filled as the step goes.
    Arrays lead with the user axis N.

    noise: each family's uniforms in [0, 1) for this step, by name, of the shape its `step_draws`
    asked for (absent when it asked for none); after the response: consumed [N, T] topic mixture of
    the item watched (zero rows without a click); completion [N] fraction watched (0 without a
    click); clicked [N]; clock_before, clock_after [N]: the users' clock (days) before and after the
    step in lifetime worlds, None in session worlds.
    """

    noise: dict[str, np.ndarray] = field(default_factory=dict)
    consumed: np.ndarray | None = None
    completion: np.ndarray | None = None
    clicked: np.ndarray | None = None
    clock_before: np.ndarray | None = None
    clock_after: np.ndarray | None = None


@dataclass
class GapContext:
    """The days between two visits of the users at `idx` [M], for the `between_visits` hooks.

    day_before [M] the end of the last session, day_after [M] the start of the next (days);
    noise: each family's uniforms in [0, 1) for the gap, by name, rows [M], of the shape its
    `gap_draws` asked for (absent when it asked for none).
    """

    idx: np.ndarray
    day_before: np.ndarray
    day_after: np.ndarray
    noise: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def days(self) -> np.ndarray:
        return self.day_after - self.day_before


class DriftFamily:
    """One drift family: its name, params, per-user state, structure and hooks (see the module
    docstring). Subclass it, set `name` and `params`, override the hooks the family needs.

    Two families are equal when they are of the same class and name (a family unpickled in a Ray
    worker equals the one it was pickled from).
    """

    name: ClassVar[str] = ""
    params: ClassVar[type[DriftParams]] = DriftParams

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.name == other.name  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__module__, type(self).__qualname__, self.name))

    def __repr__(self) -> str:
        return f"<drift family '{self.name}' ({type(self).__module__}.{type(self).__qualname__})>"

    # ------------------------------------------------------------- its parts
    def config(self, world_config: WorldConfig) -> DriftParams:
        """This family's params in a WorldConfig."""
        return world_config.params_of(self.name)

    def state_of(self, state: UserState) -> Any:
        """This family's part of the users' state `state` (its `new_state`)."""
        return state.drift[self.name]

    # ------------------------------------------------------ the world's config
    def check(self, params: Any, config: WorldConfig) -> None:
        """Raise ValueError naming the field when `params` do not fit the rest of `config`."""

    def bytes_per_user(self, params: Any, n_topics: int) -> int:
        """Bytes of per-user state, for the world's memory check before it allocates."""
        return 0

    # -------------------------------------------------------------- structure
    def catalog_injections(self, params: Any, n_topics: int) -> tuple[tuple[float, int, int], ...]:
        """(time on the world's clock, n_items, topic) batches of items the catalog must hold."""
        return ()

    def build(self, world: World, rng: np.random.Generator) -> Any:
        """The family's fixed structure, built once per world after the catalog from the catalog's
        stream `rng` (the same for every seed); the world keeps it as `world.structure[name]`."""
        return None

    # ---------------------------------------------------------- per-user state
    def new_state(self, world: World, n_users: int, rng: np.random.Generator) -> FamilyState | None:
        """The family's state for `n_users` user slots (zeros, or what the world's graph stream
        `rng` builds over the users), at every (re)seed; None when it keeps none."""
        return None

    def new_users(self, world: World, idx: np.ndarray, rng: np.random.Generator, stage: str) -> None:
        """The users at `idx` [M] are new: set their rows of the family's state at `stage`
        (NEW_USER_STAGES), drawing from `rng`: the users' stream, or at "arrival" the family's own."""

    def as_arrived(self, world: World, state: UserState) -> None:
        """In place, on a copy of the users' state: the family's part as it was when the users
        arrived, before anything drifted (`World.state_at_start`, `World.past_interactions`)."""

    # ------------------------------------------------------------------ terms
    def taste_term(self, world: World, state: UserState) -> np.ndarray | None:
        """[N, T] added to the users' interests: their tastes as felt now (None: nothing)."""
        return None

    def felt_term(self, world: World, state: UserState) -> np.ndarray | None:
        """[N, T] added to the tastes felt now, for choices only (None: nothing)."""
        return None

    def fit_term(self, world: World, slates: np.ndarray, state: UserState) -> np.ndarray | None:
        """[N, K] added to the fit of each item of `slates` [N, K] (None: nothing)."""
        return None

    def utility_term(self, world: World, slates: np.ndarray, state: UserState) -> np.ndarray | None:
        """[N, K] added to the choice utility of each item of `slates` [N, K] (None: nothing)."""
        return None

    def completion_factor(self, world: World, slates: np.ndarray, state: UserState) -> np.ndarray | None:
        """[N, K] multiplying the share of each item of `slates` [N, K] a user would watch (None: 1)."""
        return None

    # ------------------------------------------------------------------ noise
    def step_draws(self, params: Any, n_topics: int) -> tuple[int, ...] | None:
        """Per-user shape of the uniforms the family needs each step (StepContext.noise), or None."""
        return None

    def gap_draws(self, params: Any, n_topics: int) -> tuple[int, ...] | None:
        """Per-user shape of the uniforms the family needs for a gap (GapContext.noise), or None."""
        return None

    # --------------------------------------------------------------- dynamics
    def before_choice(self, world: World, ctx: StepContext) -> None:
        """Within a step, before the users choose."""

    def after_response(self, world: World, ctx: StepContext) -> None:
        """Within a step, after the users responded (interests are clipped to [-1, 1] after all families)."""

    def between_visits(self, world: World, gap: GapContext) -> None:
        """Lifetime worlds: over the days between two sessions of the users at `gap.idx`."""

    # ----------------------------------------------------------- ground truth
    def truth(self, world: World) -> dict[str, np.ndarray]:
        """Copies of the family's hidden per-user state for analysis, leading axis N (World.ground_truth)."""
        return {}

    def population_truth(self, world: World) -> dict[str, np.ndarray]:
        """Copies of the family's hidden population-wide state (no user axis)."""
        return {}

    def change_points(self, world: World) -> list[dict[str, Any]]:
        """The family's scheduled change points (World.change_points)."""
        return []


HOOKS = (
    "new_users",
    "as_arrived",
    "taste_term",
    "felt_term",
    "fit_term",
    "utility_term",
    "completion_factor",
    "before_choice",
    "after_response",
    "between_visits",
)


def overrides(family: DriftFamily, hook: str) -> bool:
    """Whether `family` does something in `hook` (its class overrides the default)."""
    return getattr(type(family), hook) is not getattr(DriftFamily, hook)


def geometric_share(rate_per_unit: float | np.ndarray, units: np.ndarray) -> np.ndarray:
    """[M] share of the remaining distance covered in `units` [M] time units by a process that
    covers `rate_per_unit` of it per unit: 1 - (1 - rate)^units (the integral of a per-step pull)."""
    return (1.0 - np.power(1.0 - np.asarray(rate_per_unit, dtype=np.float64), units)).astype(np.float32)
