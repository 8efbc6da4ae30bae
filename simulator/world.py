"""The world: a catalog plus N users, stepped for all users at once.

Two time scales. In a session world (the default) an episode is one session: a step is one
recommendation and the clock counts episode steps. In a lifetime world (`lifetime.enabled`) a
user lives across sessions on a clock in days: a step takes the minutes the user spent, a session
that ends is followed by a return visit after a gap (or by churn), and the drift families act on
the days in between. `World.step` documents the order in which everything happens.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulator import catalog as catalog_mod
from simulator import lifetime, response
from simulator.catalog import Catalog, CatalogParams, make_catalog
from simulator.drift import HOOKS, DriftFamily, DriftParams, GapContext, StepContext, overrides
from simulator.families import load_family, registered_families
from simulator.lifetime import MINUTES_PER_DAY, LifetimeParams
from simulator.params import apply_overrides, check_int, check_memory, check_seed
from simulator.response import ResponseParams
from simulator.state import UserState
from simulator.users import UserParams, community_centres, length_fit, length_prior, sample_users


def registered_defaults() -> tuple[tuple[DriftFamily, DriftParams], ...]:
    """Every registered drift family with its default params (off), in registration order."""
    return tuple((family, family.params()) for family in registered_families())


@dataclass(frozen=True)
class WorldConfig:
    """Everything the world is built from: its own sections, and the drift families' by name.

    `families` holds (family, params) pairs in the order the world calls their hooks; by default
    every registered family (`simulator.families`) with its default params, which leave it off. A
    family's params are found by its name: `config.params_of(name)`, or the attribute `config.<name>`.
    `with_overrides` applies a scenario's nested overrides, sections keyed by name either way.
    """

    catalog: CatalogParams = field(default_factory=CatalogParams)
    users: UserParams = field(default_factory=UserParams)
    response: ResponseParams = field(default_factory=ResponseParams)
    lifetime: LifetimeParams = field(default_factory=LifetimeParams)
    families: tuple[tuple[DriftFamily, DriftParams], ...] = field(default_factory=registered_defaults)

    def __post_init__(self) -> None:
        names = []
        for pair in self.families:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], DriftFamily)):
                raise ValueError(f"WorldConfig.families must hold (DriftFamily, params) pairs, got {pair!r}")
            family, params = pair
            if not isinstance(params, family.params):
                raise ValueError(f"WorldConfig.{family.name} must be {family.params.__name__}")
            if hasattr(type(self), family.name):  # config.<name> must reach the family's params
                raise ValueError(f"drift family {family!r}: its name is taken by WorldConfig.{family.name}")
            names.append(family.name)
        if len(set(names)) != len(names):
            raise ValueError(f"WorldConfig.families names a family twice: {names}")
        # A family's params by name, looked up in every hook: not a field (no part of eq, hash or to_dict).
        object.__setattr__(self, "_params_by_name", {family.name: params for family, params in self.families})
        in_days = self.lifetime.enabled
        window = self.catalog.arrival_window
        if not in_days and (window < 1 or window != int(window)):
            raise ValueError(
                "catalog.arrival_window must be a whole number of steps >= 1 in episode steps (session worlds), "
                f"got {window}"
            )
        for family, params in self.families:
            family.check(params, self)

    def __getattr__(self, name: str) -> DriftParams:
        if name.startswith("_"):  # copy, pickle and dataclass machinery: no family is named so
            raise AttributeError(name)
        params = self.__dict__.get("_params_by_name", {}).get(name)
        if params is None:
            raise AttributeError(f"WorldConfig has no section '{name}'")
        return params

    @property
    def family_names(self) -> tuple[str, ...]:
        return tuple(family.name for family, _ in self.families)

    def params_of(self, name: str) -> DriftParams:
        """The params of the drift family `name`; a ValueError lists the families this config has."""
        params = self._params_by_name.get(name)
        if params is not None:
            return params
        raise ValueError(f"unknown drift family '{name}'; valid families: {', '.join(self.family_names)}")

    def with_overrides(self, overrides: Mapping[str, Any], other_sections: tuple[str, ...] = ()) -> WorldConfig:
        """A copy with nested `overrides` applied: the world's sections by field, the families' by
        name. A `families:` entry first adds the families a scenario names by module path,
        {name: "package.module:attr"} (`simulator.families.load_family`), with their default params.
        An unknown section is a ValueError listing the allowed ones (and `other_sections`, those the
        caller routes elsewhere)."""
        if not isinstance(overrides, Mapping):
            raise ValueError(f"overrides for the world must be a mapping, got {type(overrides).__name__}")
        pairs = list(self.families)
        sources = overrides.get("families")
        if sources is not None:
            if not isinstance(sources, Mapping):
                raise ValueError(
                    f"families must map a family's name to its module path 'package.module:attr', got {sources!r}"
                )
            for name, path in sources.items():
                family = load_family(str(name), path)
                known = next((f for f, _ in pairs if f.name == family.name), None)
                if known is None:
                    pairs.append((family, family.params()))
                elif known != family:
                    raise ValueError(f"families.{name}: this scenario has another family of that name: {known!r}")
        core = [f.name for f in dataclasses.fields(self) if f.name != "families"]
        index = {family.name: i for i, (family, _) in enumerate(pairs)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == "families":
                continue
            if key in core:
                changes[key] = apply_overrides(getattr(self, key), value, key)
            elif key in index:
                family, params = pairs[index[key]]
                pairs[index[key]] = (family, _family_overrides(family, params, value))
            else:
                allowed = sorted({*core, *index, "families", *other_sections})
                raise ValueError(f"unknown config key '{key}'; allowed: {', '.join(allowed)}")
        return dataclasses.replace(self, families=tuple(pairs), **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, one section per field and per drift family (keyed like the overrides)."""
        out = {
            f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "families"
        }
        out.update({family.name: dataclasses.asdict(params) for family, params in self.families})
        return out


def _family_overrides(family: DriftFamily, params: DriftParams, value: Any) -> DriftParams:
    """`params` with `value` applied; what the family's params class refuses is a ValueError naming it."""
    try:
        return apply_overrides(params, value, family.name)
    except ValueError:
        raise
    except Exception as err:  # a researcher's params class that refuses otherwise: one line all the same
        raise ValueError(f"{family.name}: its params refused {value!r}: {type(err).__name__}: {err}") from None


def _draws(config: WorldConfig, hook: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(family name, per-user shape) of the uniforms the families ask for in `hook` (step_draws or gap_draws)."""
    t = config.catalog.n_topics
    asked = ((family.name, getattr(family, hook)(params, t)) for family, params in config.families)
    return tuple((name, tuple(shape)) for name, shape in asked if shape is not None)


@dataclass
class StepResult:
    """Outcome of one step for every user, arrays of leading length N.

    position: chosen slate position, -1 for no click; item: clicked item, -1 for none;
    watch_time: minutes watched (the engagement reward); completion: fraction watched;
    session_end: the session ended (budget spent or the user left);
    terminated: the user is gone: the session ended (session worlds), or the user churned and
    will never return (lifetime worlds);
    gap [N]: lifetime worlds, days until the next visit for users whose session ended and who
    return (NaN otherwise, and in session worlds);
    fit [N, K]: true topic fit of each served item to the user's interests as felt when
    choosing (after this step's `before_choice` changes; see `World.slate_fit`). Hidden state: not for agents.
    """

    position: np.ndarray
    item: np.ndarray
    watch_time: np.ndarray
    completion: np.ndarray
    session_end: np.ndarray
    terminated: np.ndarray
    gap: np.ndarray
    fit: np.ndarray

    @property
    def clicked(self) -> np.ndarray:
        return self.position >= 0


PAST_ROWS_PER_CHUNK = 20_000_000  # past visits x items on offer scored at once (bounds the memory of resets)


def world_bytes_per_user(config: WorldConfig) -> float:
    """Bytes a World holds per user: the users' state arrays and every drift family's per-user state."""
    t = config.catalog.n_topics
    per_user = 4 * (2 * t + config.users.recent_items + 16) + 8 * 4
    return float(per_user + sum(family.bytes_per_user(params, t) for family, params in config.families))


class World:
    """N users and a catalog. `step(slates)` advances every user by one recommendation.

    Randomness comes from separate streams (catalog, users, step noise), and the
    step stream draws the same shapes whatever the slates, so two policies run on
    the same seed see the same noise (common random numbers).

    The drift families of the config (`config.families`, `simulator.drift`) own their parts:
    `structure[name]` what a family built once for this world, `state.drift[name]` its per-user
    state; the world calls their hooks in the config's order and sums their terms.
    """

    def __init__(self, config: WorldConfig, n_users: int, seed: int = 0) -> None:
        check_int("world", "n_users", n_users, 1, 100_000_000)
        check_seed("world seed", seed)
        t = config.catalog.n_topics
        check_memory(
            f"world: {n_users:,} users x catalog.n_topics = {t}", float(n_users) * world_bytes_per_user(config)
        )
        self.config = config
        self.lifetime = config.lifetime.enabled
        self.families: tuple[DriftFamily, ...] = tuple(family for family, _ in config.families)
        # The families that do something in each hook, in order (the others are skipped).
        self.hooks = {hook: tuple(f for f in self.families if overrides(f, hook)) for hook in HOOKS}
        # Per family, the per-user shapes of the uniforms it asks for each step and each gap.
        self.step_draws = _draws(config, "step_draws")
        self.gap_draws = _draws(config, "gap_draws")
        # The catalog and the taste communities are the world's fixed structure: they
        # depend on catalog.seed only, so training and evaluation seeds share them.
        catalog_rng = np.random.default_rng(config.catalog.seed)
        self.centres = community_centres(config.users, config.catalog.n_topics, catalog_rng)
        # [communities, T] a community's average member's interests (a user's own part averages 0)
        self.typical_interest = (np.float32(config.users.community_strength) * self.centres).astype(np.float32)
        self.log_length_prior = length_prior(config.catalog)  # where preferred lengths are drawn

        def rating(topics: np.ndarray, quality: np.ndarray, length: np.ndarray) -> np.ndarray:
            """[I] the mean personal value of each item over the taste communities (typical length taste)."""
            fit = topics.astype(np.float32) @ self.typical_interest.T  # [I, communities]
            if config.users.length_taste:
                centre, spread = self.log_length_prior
                fit += length_fit(np.log(length)[:, None], centre, config.users.length_taste, spread)
            return response.personal_value(fit, quality[:, None], config.response).mean(axis=1)

        injections = tuple(batch for f, p in config.families for batch in f.catalog_injections(p, t))
        self.catalog: Catalog = make_catalog(config.catalog, catalog_rng, injections, rating, in_days=self.lifetime)
        # Each family's fixed structure, from the catalog's stream after the catalog.
        self.structure: dict[str, Any] = {f.name: f.build(self, catalog_rng) for f in self.families}
        self._pos_bias: dict[int, np.ndarray] = {}
        self._n_users = n_users
        self.noise_map: np.ndarray | None = None  # [N] row of the step noise each user uses
        self.tracked: np.ndarray | None = None  # users whose interests are traced day by day (see track)
        # Real ml-100k users and their first ratings (users.real_history); needs the data package.
        self.real = None
        if config.users.real_history:
            from simulator.realhistory import load_real_histories

            n_past = config.users.past_interactions
            self.real = load_real_histories(n_past, self.catalog.topics, self.catalog.popularity)
        self.real_user = np.full(n_users, -1, np.int64)  # [N] the real user each slot is (-1: none)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random streams from `seed`: new users at step 0, and the families' new state
        over them (a graph over the users, from the graph stream after the users' communities)."""
        cfg, n = self.config, self._n_users
        self.seed = int(seed)
        users_ss, step_ss, graph_ss = np.random.SeedSequence(self.seed).spawn(3)
        self.user_rng = np.random.default_rng(users_ss)
        self.step_rng = np.random.default_rng(step_ss)
        graph_rng = np.random.default_rng(graph_ss)
        # Each family's own stream, by its name: what it draws there moves no other family's numbers.
        self.family_rngs = {
            f.name: np.random.default_rng(np.random.SeedSequence([self.seed, zlib.crc32(f.name.encode())]))
            for f in self.families
        }
        community = graph_rng.integers(0, cfg.users.n_communities, size=n).astype(np.int32)
        t, r = cfg.catalog.n_topics, cfg.users.recent_items
        z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
        self.state = UserState(
            interest=z(n, t),
            initial_interest=z(n, t),
            satisfaction=z(n),
            budget=z(n),
            step=np.zeros(n, np.int32),
            episode_step=np.zeros(n, np.int32),
            calendar_offset=np.zeros(n, np.float64),
            day=np.zeros(n, np.float64),
            first_day=np.zeros(n, np.float64),
            last_visit=np.zeros(n, np.float64),
            session=np.zeros(n, np.int32),
            activity=np.ones(n, np.float32),
            session_watch=z(n),
            session_letdown=z(n),
            session_clicks=np.zeros(n, np.int32),
            preferred_length=z(n),
            community=community,
            recent_items=np.full((n, r), -1, np.int32),
            recent_ptr=np.zeros(n, np.int32),
        )
        for family in self.families:
            own = family.new_state(self, n, graph_rng)
            if own is not None:
                self.state.drift[family.name] = own
        self.popularity = self.catalog.popularity.copy()  # [I] what the population watches (lifetime: it moves)
        self.item_features = self.catalog.features.copy()  # [I, T + 4] as observed now (popularity column moves)
        self.trace: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # Values that depend on the users' clocks only (what a family reads off the date), computed once
        # per clock change: emptied whenever a clock moves or users change.
        self.clock_cache: dict[str, Any] = {}
        self.reset_users()

    # ------------------------------------------------------------------ users
    @property
    def n_users(self) -> int:
        return self.state.n_users

    def reset_users(self, mask: np.ndarray | None = None) -> None:
        """Replace the users in `mask` [N] (all if None) by fresh users at episode step 0 (in lifetime
        worlds: at the first visit of their life, some time in the first `first_visit_days`)."""
        s, cfg = self.state, self.config
        idx = np.arange(self.n_users) if mask is None else np.flatnonzero(mask)
        if idx.size == 0:
            return
        self.clock_cache = {}

        def families_draw(stage: str) -> None:
            for family in self.hooks["new_users"]:
                rng = self.family_rngs[family.name] if stage == "arrival" else self.user_rng
                family.new_users(self, idx, rng, stage)

        new = sample_users(
            cfg.users, s.community[idx], self.centres, self.user_rng, self.log_length_prior, families_draw
        )
        if self.real is not None:  # a real user: their real genre profile in place of the community's centre
            who = self.user_rng.integers(0, self.real.n_users, size=idx.size)
            self.real_user[idx] = who
            w = np.float32(cfg.users.community_strength)
            own = new["interest"] - w * self.centres[s.community[idx]]
            new["interest"] = np.clip(own + w * self.real.taste[who], -1.0, 1.0).astype(np.float32)
        s.interest[idx] = new["interest"]
        s.initial_interest[idx] = new["interest"]
        s.budget[idx] = new["budget"]
        s.preferred_length[idx] = new["preferred_length"]
        s.satisfaction[idx] = cfg.users.satisfaction_init
        s.step[idx] = 0
        s.episode_step[idx] = 0
        if self.lifetime:
            life = cfg.lifetime
            s.calendar_offset[idx] = life.calendar_start  # one calendar for everyone: dates are shared
            s.day[idx] = life.first_visit_days * self.user_rng.random(idx.size)
            s.activity[idx] = lifetime.sample_activity(life, idx.size, self.user_rng)
        else:
            s.calendar_offset[idx] = 0.0  # a family may start users elsewhere in the calendar
            s.day[idx] = 0.0
        s.first_day[idx] = s.day[idx]
        s.last_visit[idx] = s.day[idx]  # no visit before: days away count from the first
        s.session[idx] = 0
        s.session_watch[idx] = 0.0
        s.session_letdown[idx] = 0.0
        s.session_clicks[idx] = 0
        s.recent_items[idx] = -1
        s.recent_ptr[idx] = 0
        families_draw("clock")
        families_draw("arrival")

    def past_interactions(self, idx: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """What the users at `idx` [M] did on their `users.past_interactions` = P visits before
        this episode, oldest first, as arrays [M, P]: item (the clicked one, or the first on offer
        when nothing was), clicked, completion and watch_time.

        Each past visit offered `users.past_pool` items drawn uniformly from the initial catalog;
        the user chose among them and the no-click option by the response model, under the
        tastes they arrive with (each family's state as they arrived: `as_arrived`). A recommender that
        reads a user's history meets a returning user, as real platforms mostly do, not a
        stranger: what the user watched, and how much of it, tells their tastes.

        With `users.real_history`, the P interactions are the real ml-100k user's first P ratings
        (`simulator.realhistory`: their simulated counterparts, watched to rating / 5).
        """
        cfg, p = self.config, self.config.users.past_interactions
        m = idx.size
        out = dict(
            item=np.zeros((m, p), np.int32),
            clicked=np.zeros((m, p), bool),
            completion=np.zeros((m, p), np.float32),
            watch_time=np.zeros((m, p), np.float32),
        )
        if p == 0 or m == 0:
            return out
        if self.real is not None:  # their first real ratings, as simulated items, all watched
            real = self.real_user[idx]
            item = self.real.items[real]
            out["item"][:] = item
            out["clicked"][:] = True
            out["completion"][:] = self.real.completion[real]
            out["watch_time"][:] = self.catalog.length[item] * self.real.completion[real]
            return out
        chunk = max(1, PAST_ROWS_PER_CHUNK // (p * cfg.users.past_pool))
        if m > chunk:  # huge configs only: bounded memory, user block by user block
            for start in range(0, m, chunk):
                part = self.past_interactions(idx[start : start + chunk], rng)
                for key, value in part.items():
                    out[key][start : start + chunk] = value
            return out
        # All P past visits of all M users at once: each user scores its P x pool items in one row
        # (no copy of the state per visit), then rows of [M * P] visits, user-major.
        state = self.state.take(idx)
        for family in self.hooks["as_arrived"]:
            family.as_arrived(self, state)
        k = cfg.users.past_pool
        rows = m * p
        pool = rng.integers(0, self.catalog.n_initial, size=(m, p * k))
        uniform = rng.random(rows, dtype=np.float32)
        outside = response.no_click_utility(np.full(rows, cfg.users.satisfaction_init, np.float32), cfg.response)
        utility, fit = self.slate_utility(pool, state, positions=False)  # [M, P * pool]
        utility, fit, pool = utility.reshape(rows, k), fit.reshape(rows, k), pool.reshape(rows, k)
        choice = response.sample_choice(response.choice_probabilities(utility, outside), uniform)
        clicked = choice >= 0
        pick = np.maximum(choice, 0)
        at = np.arange(rows)
        item = pool[at, pick]
        c = self.catalog
        value = response.personal_value(fit[at, pick], c.quality[item], cfg.response)
        done = np.where(clicked, response.completion(value, c.attractiveness[item], cfg.response), np.float32(0.0))
        out["item"][:] = item.reshape(m, p)
        out["clicked"][:] = clicked.reshape(m, p)
        out["completion"][:] = done.reshape(m, p)
        out["watch_time"][:] = (c.length[item] * done).reshape(m, p)
        return out

    @property
    def noise_rows(self) -> int:
        """Rows of step noise drawn per step (fewer than N when users share noise)."""
        return self.n_users if self.noise_map is None else int(self.noise_map.max()) + 1

    @property
    def clock(self) -> np.ndarray:
        """[N] each user's time on the world's clock: the episode step (session worlds) or the day
        (lifetime worlds). Item arrivals, freshness and scheduled events are on this clock."""
        return self.state.day if self.lifetime else self.state.step

    @property
    def calendar(self) -> np.ndarray:
        """[N] each user's calendar time (families read dates off it): steps, or the day of the year in
        lifetime worlds."""
        return self.calendar_of(self.state)

    def calendar_of(self, state: UserState) -> np.ndarray:
        """[N] the calendar time of the users of `state` (a planning state's frozen calendar, say)."""
        return state.calendar_offset + (state.day if self.lifetime else state.step)

    # ------------------------------------------------------------- responses
    def effective_interest(self, state: UserState | None = None) -> np.ndarray:
        """[N, T] interests as felt now: long-term interests plus the families' taste terms."""
        s = self.state if state is None else state
        felt = s.interest
        for family in self.hooks["taste_term"]:
            term = family.taste_term(self, s)
            if term is not None:
                felt = felt + term
        return felt

    def felt_interest(self, state: UserState | None = None) -> np.ndarray:
        """[N, T] interests as they drive choices now: effective interests plus the families' felt terms."""
        s = self.state if state is None else state
        felt = self.effective_interest(s)
        for family in self.hooks["felt_term"]:
            term = family.felt_term(self, s)
            if term is not None:
                felt = felt + term
        return felt

    def slate_fit(self, slates: np.ndarray, state: UserState | None = None) -> np.ndarray:
        """[N, K] true fit of the items in `slates` [N, K] (item ids) to the users' felt interests.

        Fit = item topic mixture . felt interests (+ `users.length_fit` of the item's length to the
        user's preferred length when `users.length_taste` > 0, + the families' fit terms), under the
        current state (or `state`): what `slate_utility` and `step` use. Position does not enter it.
        `step` runs the families' `before_choice` changes before scoring, so for a user such a change
        hits at that step, the fit `step` reports (StepResult.fit) differs from this one taken before the step.
        """
        s = self.state if state is None else state
        fit = np.einsum("nkt,nt->nk", self.catalog.topics[slates], self.felt_interest(s))  # no [N, K, T] temporary
        if self.config.users.length_taste:
            taste, spread = self.config.users.length_taste, self.log_length_prior[1]
            fit += length_fit(self.catalog.log_length[slates], s.preferred_length, taste, spread)
        for family in self.hooks["fit_term"]:
            term = family.fit_term(self, slates, s)
            if term is not None:
                fit += term
        return fit

    def slate_utility(
        self, slates: np.ndarray, state: UserState | None = None, positions: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Utilities [N, K] of the items in `slates` [N, K], and their fit [N, K] (see `slate_fit`).

        Utility = fit_weight x fit + attractiveness_weight x attractiveness + the position bias +
        the families' utility terms. With positions=False every item is scored as if
        shown alone at the top.
        """
        cfg, c = self.config, self.catalog
        s = self.state if state is None else state
        fit = self.slate_fit(slates, s)  # [N, K]
        utility = (
            np.float32(cfg.response.fit_weight) * fit
            + np.float32(cfg.response.attractiveness_weight) * c.attractiveness[slates]
        )
        if positions:
            k = slates.shape[1]
            if k not in self._pos_bias:
                self._pos_bias[k] = response.position_log_bias(k, cfg.response)
            utility += self._pos_bias[k]
        for family in self.hooks["utility_term"]:
            term = family.utility_term(self, slates, s)
            if term is not None:
                utility += term
        return utility, fit

    def completion_factor(self, slates: np.ndarray, state: UserState | None = None) -> np.ndarray | None:
        """[N, K] the product of the families' factors on the share of each item of `slates` [N, K]
        a user would watch, or None when none has one."""
        s = self.state if state is None else state
        factor = None
        for family in self.hooks["completion_factor"]:
            term = family.completion_factor(self, slates, s)
            if term is not None:
                factor = term if factor is None else factor * term
        return factor

    def slate_value(self, slates: np.ndarray, state: UserState | None = None) -> np.ndarray:
        """[N, K] personal value (quality x appeal to the user's current tastes, response.personal_value)
        of the items in `slates` [N, K], under the current state (or `state`)."""
        return response.personal_value(
            self.slate_fit(slates, state), self.catalog.quality[slates], self.config.response
        )

    def expected_engagement(self, items: np.ndarray, state: UserState | None = None) -> np.ndarray:
        """[N, C] expected watch time of each item in `items` [N, C] if shown alone at the top
        (under the current state, or `state`)."""
        cfg = self.config.response
        s = self.state if state is None else state
        utility, fit = self.slate_utility(items, s, positions=False)
        outside = response.no_click_utility(s.satisfaction, cfg)
        p_click = 1.0 / (1.0 + np.exp(outside[:, None] - utility))  # logit with one item + no-click
        value = response.personal_value(fit, self.catalog.quality[items], cfg)
        watch = self.catalog.length[items] * response.completion(value, self.catalog.attractiveness[items], cfg)
        factor = self.completion_factor(items, s)
        if factor is not None:
            watch *= factor
        noise_mean = np.float32(np.exp(0.5 * cfg.watch_noise**2))  # mean of the log-normal factor
        return (p_click * watch * noise_mean).astype(np.float32)

    def expected_budget_cost(
        self, items: np.ndarray, watch: np.ndarray | None = None, state: UserState | None = None
    ) -> np.ndarray:
        """[N, C] expected minutes of session budget one step spends if `items` [N, C] is shown alone at the top.

        `response.budget_cost` (what `step` charges) applied to the expected watch time
        (`expected_engagement`, or `watch` [N, C] when already computed) and the items' personal
        value; exact, since the cost is linear in watch time and a step without a click costs the
        browse cost only.
        """
        if watch is None:
            watch = self.expected_engagement(items, state)
        return response.budget_cost(watch, self.slate_value(items, state), self.config.response)

    def watch_per_budget(self, items: np.ndarray, state: UserState | None = None) -> np.ndarray:
        """[N, C] expected watch time per expected minute of budget spent, for each item of `items` [N, C].

        `expected_engagement` / `expected_budget_cost`, float32. With a fixed session budget, the
        item with the best ratio buys the most watch time (what the session oracle ranks by).
        """
        watch = self.expected_engagement(items, state)
        return watch / self.expected_budget_cost(items, watch, state)

    def expected_experience(self, items: np.ndarray, state: UserState | None = None) -> np.ndarray:
        """[N, C] expected experience (`response.experience`) of showing each item of `items` [N, C]
        alone at the top: what it does to satisfaction, hence to the return visit (lifetime worlds)."""
        cfg = self.config.response
        s = self.state if state is None else state
        utility, fit = self.slate_utility(items, s, positions=False)
        p_click = 1.0 / (1.0 + np.exp(response.no_click_utility(s.satisfaction, cfg)[:, None] - utility))
        value = response.personal_value(fit, self.catalog.quality[items], cfg)
        on_click = response.experience(np.ones_like(value, bool), value, self.catalog.attractiveness[items], cfg)
        return (p_click * on_click + (1.0 - p_click) * np.float32(cfg.skip_experience)).astype(np.float32)

    # ------------------------------------------------------------------ step
    def step(self, slates: np.ndarray) -> StepResult:
        """Advance all users by one step; `slates` [N, K] holds item ids shown top to bottom.

        In order: draw this step's noise (fixed shapes: the world's, then the uniforms each family
        asks for); the families' `before_choice` hooks; choice over the slate (with the families'
        terms), watch time, experience, satisfaction and budget; the clock advances by the minutes
        spent (lifetime worlds); the families' `after_response` hooks; interests clipped to
        [-1, 1]; the leave decision. Lifetime worlds then end the sessions that are over: churn, or
        a return gap, the families' `between_visits` hooks over it, and a new session. The
        families run in the config's order (`simulator.drift` says what each hook is for).
        """
        cfg, c, s = self.config, self.catalog, self.state
        n = self.n_users
        if slates.ndim != 2 or slates.shape[0] != n:
            raise ValueError(f"slates must have shape [n_users={n}, slate_size], got {slates.shape}")
        rows = np.arange(n)
        # Fixed-shape draws every step, whatever the slates (common random numbers).
        n_draw = self.noise_rows
        uniforms = self.step_rng.random((2, n_draw), dtype=np.float32)
        watch_noise = self.step_rng.standard_normal(n_draw, dtype=np.float32)
        family_noise = {
            name: self.step_rng.random((n_draw, *shape), dtype=np.float32) for name, shape in self.step_draws
        }
        visit_noise = self._visit_noise(n_draw) if self.lifetime else None
        if self.noise_map is not None:  # rows sharing a noise row see the same draws
            uniforms, watch_noise = uniforms[:, self.noise_map], watch_noise[self.noise_map]
            family_noise = {k: v[self.noise_map] for k, v in family_noise.items()}
            if visit_noise is not None:
                visit_noise = {k: v[self.noise_map] for k, v in visit_noise.items()}

        ctx = StepContext(noise=family_noise)
        for family in self.hooks["before_choice"]:
            family.before_choice(self, ctx)

        utility, fit = self.slate_utility(slates)
        outside = response.no_click_utility(s.satisfaction, cfg.response)
        probs = response.choice_probabilities(utility, outside)
        position = response.sample_choice(probs, uniforms[0])
        clicked = position >= 0
        pos = np.maximum(position, 0)
        item = np.where(clicked, slates[rows, pos], -1)
        chosen = slates[rows, pos]
        value = response.personal_value(fit[rows, pos], c.quality[chosen], cfg.response)
        done_frac = response.completion(value, c.attractiveness[chosen], cfg.response)
        factor = self.completion_factor(chosen[:, None])
        if factor is not None:  # a repeat of a recent item is mostly skipped through
            done_frac = done_frac * factor[:, 0]
        done_frac = np.where(clicked, done_frac, np.float32(0.0))
        noise = np.exp(np.float32(cfg.response.watch_noise) * watch_noise)
        watch = c.length[chosen] * done_frac * noise

        felt = response.experience(clicked, value, c.attractiveness[chosen], cfg.response)
        response.update_satisfaction(s.satisfaction, felt, cfg.response)
        s.budget -= response.budget_cost(watch, value, cfg.response)

        ctx.consumed = c.topics[chosen] * clicked[:, None]  # [N, T], zero rows without a click
        ctx.completion = done_frac
        ctx.clicked = clicked
        if self.lifetime:
            ctx.clock_before = s.day.copy()
            s.day += (np.float64(cfg.response.browse_cost) + watch) / MINUTES_PER_DAY
            self.clock_cache = {}
            ctx.clock_after = s.day
            s.session_watch += watch
            s.session_letdown += np.where(clicked, response.letdown(value, c.attractiveness[chosen], cfg.response), 0.0)
            s.session_clicks += clicked
        for family in self.hooks["after_response"]:
            family.after_response(self, ctx)
        np.clip(s.interest, -1.0, 1.0, out=s.interest)

        hit = np.flatnonzero(clicked)
        s.recent_items[hit, s.recent_ptr[hit]] = item[hit]
        s.recent_ptr[hit] = (s.recent_ptr[hit] + 1) % s.recent_items.shape[1]
        s.step += 1
        s.episode_step += 1
        if cfg.catalog.popularity_memory:
            self.popularity = catalog_mod.update_popularity(self.popularity, item[hit], cfg.catalog)
            self.item_features[:, -1] = catalog_mod.popularity_score(self.popularity)

        leave = uniforms[1] < response.leave_probability(s.satisfaction, cfg.response)
        session_end = (s.budget <= 0.0) | leave
        gap = np.full(n, np.nan)
        terminated = session_end
        if self.lifetime:
            terminated, gap = self._end_sessions(session_end, visit_noise)
        if self.tracked is not None:
            self._record_trace()
        return StepResult(
            position=position,
            item=item,
            watch_time=watch.astype(np.float32),
            completion=done_frac,
            session_end=session_end,
            terminated=terminated,
            gap=gap,
            fit=fit,
        )

    # ------------------------------------------------------------- lifetimes
    def _visit_noise(self, n_draw: int) -> dict[str, np.ndarray]:
        """Lifetime worlds: this step's draws for the session ends (every row, used by the rows whose
        session ends): churn and gap uniforms, the next budget's normal, then the uniforms each
        family asks for over a gap (`gap_draws`, keyed by the family's name)."""
        noise = dict(
            churn=self.step_rng.random(n_draw, dtype=np.float32),
            gap=self.step_rng.random(n_draw, dtype=np.float32),
            budget=self.step_rng.standard_normal(n_draw, dtype=np.float32),
        )
        for name, shape in self.gap_draws:
            noise[f"family:{name}"] = self.step_rng.random((n_draw, *shape), dtype=np.float32)
        return noise

    def _end_sessions(self, session_end: np.ndarray, noise: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Lifetime worlds: the users whose session is over churn, or come back after a gap; the
        families act on the days away and a new session starts. Returns (churned [N], gap [N])."""
        cfg, s = self.config, self.state
        life, n = cfg.lifetime, self.n_users
        churned = np.zeros(n, bool)
        gap = np.full(n, np.nan)
        idx = np.flatnonzero(session_end)
        if idx.size == 0:
            return churned, gap
        sat = s.satisfaction[idx]
        letdown = s.session_letdown[idx] / np.maximum(s.session_clicks[idx], 1)
        watch_share = np.minimum(s.session_watch[idx] / np.float32(cfg.users.budget_mean), 2.0)
        gone = noise["churn"][idx] < lifetime.churn_probability(sat, letdown, life)
        churned[idx[gone]] = True
        back = idx[~gone]
        if back.size == 0:
            return churned, gap
        rate = lifetime.return_rate(sat[~gone], letdown[~gone], watch_share[~gone], s.activity[back], life)
        days = lifetime.sample_gap(rate, noise["gap"][back], life)
        gap[back] = days
        before = s.day[back].copy()
        s.last_visit[back] = before
        s.day[back] = before + days
        self.clock_cache = {}
        own = {name: noise[f"family:{name}"][back] for name, _ in self.gap_draws}
        ctx = GapContext(idx=back, day_before=before, day_after=s.day[back], noise=own)
        for family in self.hooks["between_visits"]:
            family.between_visits(self, ctx)
        np.clip(s.interest, -1.0, 1.0, out=s.interest)
        # A new session: a fresh budget, part of the satisfaction the last one ended with.
        u = cfg.users
        s.budget[back] = np.maximum(u.budget_mean + u.budget_std * noise["budget"][back], 1.0)
        s.satisfaction[back] = lifetime.next_satisfaction(s.satisfaction[back], u.satisfaction_init, life)
        s.session[back] += 1
        s.step[back] = 0
        s.session_watch[back] = 0.0
        s.session_letdown[back] = 0.0
        s.session_clicks[back] = 0
        return churned, gap

    def track(self, users: np.ndarray | None) -> None:
        """Trace the true interests of `users` (indices; None: stop) at every whole day their clock
        passes (lifetime worlds), for plots: `interest_trace()`."""
        self.tracked = None if users is None else np.asarray(users, dtype=np.int64)
        self.trace = []
        self._traced_day = None if users is None else np.floor(self.state.day[self.tracked])

    def _record_trace(self) -> None:
        day = np.floor(self.state.day[self.tracked])
        moved = day > self._traced_day
        if moved.any():
            who = self.tracked[moved]
            self.trace.append((who.copy(), day[moved].copy(), self.state.interest[who].copy()))
            self._traced_day = np.where(moved, day, self._traced_day)

    def interest_trace(self) -> dict[str, np.ndarray]:
        """The daily trace of `track`: user [R], day [R] (whole days), interest [R, T], one row per
        user and day their clock passed (a user away for a week gives one row at their return)."""
        if not self.trace:
            t = self.config.catalog.n_topics
            return dict(user=np.zeros(0, np.int64), day=np.zeros(0), interest=np.zeros((0, t), np.float32))
        users, days, interests = zip(*self.trace)
        return dict(user=np.concatenate(users), day=np.concatenate(days), interest=np.concatenate(interests))

    def state_at_start(self) -> UserState:
        """The users' tastes as they were at the start of their episodes, the rest as now.

        Interests back to `initial_interest`, each family's state as the users arrived
        (`DriftFamily.as_arrived`) and the calendar to the episode's first step (the first visit in
        lifetime worlds: drift undone); satisfaction, budget,
        recent items and the clock (item freshness) stay current. What a recommender that stopped
        updating its picture of the user would believe: the stale-state reference plans with it.
        """
        s = self.state.copy()
        s.interest = s.initial_interest.copy()
        for family in self.hooks["as_arrived"]:
            family.as_arrived(self, s)
        elapsed = (s.day - s.first_day) if self.lifetime else s.step
        s.calendar_offset = s.calendar_offset - elapsed  # calendar = offset + clock: frozen at its start
        return s

    def state_of_community(self) -> UserState:
        """The users' tastes replaced by their community's average member's (`typical_interest`),
        the rest as now.

        What a recommender that had identified each user's taste community, and nothing more,
        would believe: the community reference (oracle-community) plans with it, so that against the
        true-state oracle it measures what the rest of a user's history can still be worth.
        Simulated communities only: real users' tastes are their real profiles, not a community's.
        """
        if self.real is not None:
            raise ValueError("oracle-community needs simulated users: users.real_history gives real profiles")
        s = self.state.copy()
        s.interest = self.typical_interest[s.community]
        return s

    # ---------------------------------------------------------- ground truth
    def change_points(self) -> list[dict[str, Any]]:
        """The families' scheduled change points (`DriftFamily.change_points`: episode steps, or days
        in lifetime worlds, and per event which users it hits [N])."""
        return [cp for family in self.families for cp in family.change_points(self)]

    def ground_truth(self, user: int | None = None) -> dict[str, np.ndarray]:
        """Copies of the hidden state for analysis and oracles (never part of an observation).

        interest, effective_interest [N, T]; satisfaction, budget, step, calendar [N]; each family's
        own (`DriftFamily.truth`, leading axis N; `population_truth`, no user axis).
        Lifetime worlds add day (the clock), session (sessions started before the current one),
        first_day, last_visit (end of the previous session; the first visit's start before one) and
        activity. With `user`, that user's row of every per-user entry (population-wide ones whole).
        """
        s = self.state
        truth = dict(
            interest=s.interest.copy(),
            effective_interest=np.array(self.effective_interest()),
            satisfaction=s.satisfaction.copy(),
            budget=s.budget.copy(),
            step=s.step.copy(),
            calendar=self.calendar.copy(),
        )
        for family in self.families:
            truth.update(family.truth(self))
        if self.lifetime:
            for name in ("day", "session", "first_day", "last_visit", "activity"):
                truth[name] = getattr(s, name).copy()
        if user is not None:
            truth = {k: v[user] for k, v in truth.items()}
        for family in self.families:
            truth.update(family.population_truth(self))
        return truth

    # ------------------------------------------------------- copy, save, load
    def copy(self, seed: int | None = None) -> World:
        """An independent copy (catalog shared read-only). With `seed`, the copy's step noise is reseeded."""
        other = object.__new__(World)
        other.__dict__.update(self.__dict__)
        other.state = self.state.copy()
        other.real_user = self.real_user.copy()
        other._pos_bias = dict(self._pos_bias)
        other.user_rng = _copy_rng(self.user_rng)
        other.family_rngs = {name: _copy_rng(rng) for name, rng in self.family_rngs.items()}
        other.step_rng = np.random.default_rng(seed) if seed is not None else _copy_rng(self.step_rng)
        other.popularity = self.popularity.copy()
        other.item_features = self.item_features.copy()
        other.tracked, other.trace, other.clock_cache = None, [], {}
        return other

    def tile(self, m: int, seed: int | None = None, noise_groups: int | None = None) -> World:
        """A world of N*m users: user i's copies at rows i*m .. i*m+m-1, for what-if rollouts.

        The families' state is tiled too (`FamilyState.tile`: in a graph over the users, copy j of a
        user follows copy j of the others). With `noise_groups` = g (dividing m), copies j and j' of
        a user share step noise when j % g == j' % g: comparing branches on common random numbers.
        """
        check_int("world.tile", "m", m, 1)
        other = self.copy(seed)
        index = np.repeat(np.arange(self.n_users), m)
        other.state = self.state.tile(index, m)
        other._n_users = self.n_users * m
        other.real_user = self.real_user[index]
        if noise_groups is not None:
            if noise_groups < 1 or m % noise_groups:
                raise ValueError(f"world.tile: noise_groups must divide m={m}, got {noise_groups}")
            copy = np.tile(np.arange(m), self.n_users)
            other.noise_map = index * noise_groups + copy % noise_groups
        else:
            other.noise_map = None
        return other

    def save(self, path: str | Path) -> None:
        """Save the user state (the families' included), the population's popularity
        and the random streams (the catalog and the families' structure are rebuilt from config and seed)."""
        families = {name: rng.bit_generator.state for name, rng in self.family_rngs.items()}
        rng = json.dumps(
            dict(user=self.user_rng.bit_generator.state, step=self.step_rng.bit_generator.state, families=families)
        )
        with open(path, "wb") as f:  # a file object: np.savez would append '.npz' to a bare path
            np.savez(
                f,
                rng_state=np.array(rng),
                popularity=self.popularity,
                **self.state.arrays(),
            )

    def load(self, path: str | Path) -> None:
        """Restore a state saved by `save` from a world built with the same config and seed."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        rng = json.loads(str(arrays.pop("rng_state")))
        popularity = arrays.pop("popularity", None)
        if arrays["interest"].shape[1] != self.config.catalog.n_topics:
            raise ValueError(
                f"saved state has {arrays['interest'].shape[1]} topics, this world has {self.config.catalog.n_topics}"
            )
        missing = sorted(set(self.state.arrays()) - set(arrays))
        if missing:
            raise ValueError(f"saved state lacks {', '.join(missing)} (saved by an older version, or other families?)")
        self.state = UserState.from_arrays(arrays, like=self.state)
        self._n_users = self.state.n_users
        self.noise_map = None
        self.clock_cache = {}
        if popularity is not None:
            self.popularity = popularity
            self.item_features[:, -1] = (
                catalog_mod.popularity_score(popularity)
                if self.config.catalog.popularity_memory
                else self.catalog.features[:, -1]
            )
        self.user_rng.bit_generator.state = rng["user"]
        self.step_rng.bit_generator.state = rng["step"]
        for name, state in rng.get("families", {}).items():
            if name in self.family_rngs:
                self.family_rngs[name].bit_generator.state = state


def _copy_rng(rng: np.random.Generator) -> np.random.Generator:
    bg = type(rng.bit_generator)()
    bg.state = rng.bit_generator.state
    return np.random.Generator(bg)
