"""The world: a catalog plus N users, stepped for all users at once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulator import cognitive, response, seasonal, shocks, social
from simulator.catalog import Catalog, CatalogParams, make_catalog
from simulator.cognitive import CognitiveParams
from simulator.params import check_int
from simulator.response import ResponseParams
from simulator.seasonal import SeasonalParams
from simulator.shocks import ShockParams
from simulator.social import SocialParams
from simulator.state import UserState
from simulator.users import UserParams, community_centres, sample_users

DRIFT_FAMILIES = ("seasonal", "social", "cognitive", "shocks")


@dataclass(frozen=True)
class WorldConfig:
    catalog: CatalogParams = field(default_factory=CatalogParams)
    users: UserParams = field(default_factory=UserParams)
    response: ResponseParams = field(default_factory=ResponseParams)
    seasonal: SeasonalParams = field(default_factory=SeasonalParams)
    social: SocialParams = field(default_factory=SocialParams)
    cognitive: CognitiveParams = field(default_factory=CognitiveParams)
    shocks: ShockParams = field(default_factory=ShockParams)

    def __post_init__(self) -> None:
        for e in self.shocks.active_events():
            if e.kind == "injection" and e.topic >= self.catalog.n_topics:
                raise ValueError(
                    f"shocks.events[injection].topic must be < catalog.n_topics={self.catalog.n_topics}, got {e.topic}"
                )


@dataclass
class StepResult:
    """Outcome of one step for every user, arrays of leading length N.

    position: chosen slate position, -1 for no click; item: clicked item, -1 for none;
    watch_time: minutes watched (the engagement reward); completion: fraction watched;
    terminated: the session ended (budget spent or the user left);
    fit [N, K]: true topic fit of each served item to the user's interests as felt when
    choosing (after this step's shocks; see `World.slate_fit`). Hidden state: not for agents.
    """

    position: np.ndarray
    item: np.ndarray
    watch_time: np.ndarray
    completion: np.ndarray
    terminated: np.ndarray
    fit: np.ndarray

    @property
    def clicked(self) -> np.ndarray:
        return self.position >= 0


class World:
    """N users and a catalog. `step(slates)` advances every user by one recommendation.

    Randomness comes from separate streams (catalog, users, step noise), and the
    step stream draws the same shapes whatever the slates, so two policies run on
    the same seed see the same noise (common random numbers).
    """

    def __init__(self, config: WorldConfig, n_users: int, seed: int = 0) -> None:
        check_int("world", "n_users", n_users, 1)
        self.config = config
        # The catalog and the taste communities are the world's fixed structure: they
        # depend on catalog.seed only, so training and evaluation seeds share them.
        catalog_rng = np.random.default_rng(config.catalog.seed)
        self.centres = community_centres(config.users, config.catalog.n_topics, catalog_rng)
        typical = np.float32(config.users.community_strength) * self.centres  # a community's average member

        def rating(topics: np.ndarray, quality: np.ndarray) -> np.ndarray:
            """[I] the mean personal value of each item over the taste communities."""
            fit = topics.astype(np.float32) @ typical.T  # [I, communities]
            return response.personal_value(fit, quality[:, None], config.response).mean(axis=1)

        self.catalog: Catalog = make_catalog(
            config.catalog, catalog_rng, config.shocks.injections(config.catalog.n_topics), rating
        )
        self.phases = seasonal.topic_phases(config.catalog.n_topics)
        # Appeal repeats with the period: one [period, T] table, looked up by calendar time.
        self.season_table = (
            seasonal.seasonal_appeal(np.arange(config.seasonal.period), self.phases, config.seasonal)
            if config.seasonal.scale
            else None
        )
        self._pos_bias: dict[int, np.ndarray] = {}
        self._n_users = n_users
        self.noise_map: np.ndarray | None = None  # [N] row of the step noise each user uses
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random streams from `seed`: new social graph, new users at step 0."""
        cfg, n = self.config, self._n_users
        self.seed = int(seed)
        users_ss, step_ss, graph_ss = np.random.SeedSequence(self.seed).spawn(3)
        self.user_rng = np.random.default_rng(users_ss)
        self.step_rng = np.random.default_rng(step_ss)
        graph_rng = np.random.default_rng(graph_ss)
        community = graph_rng.integers(0, cfg.users.n_communities, size=n).astype(np.int32)
        self.neighbours = social.make_graph(community, cfg.social, graph_rng)
        t, r = cfg.catalog.n_topics, cfg.users.recent_items
        z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
        self.state = UserState(
            interest=z(n, t),
            initial_interest=z(n, t),
            satiation=z(n, t),
            satisfaction=z(n),
            budget=z(n),
            step=np.zeros(n, np.int32),
            calendar_offset=np.zeros(n, np.int32),
            novelty_seeking=z(n),
            susceptibility=z(n),
            community=community,
            shock_draw=z(n),
            shock_target=z(n, t),
            recent_items=np.full((n, r), -1, np.int32),
            recent_ptr=np.zeros(n, np.int32),
            trend=np.full(t, 1.0 / t, np.float32),
        )
        self.reset_users()

    # ------------------------------------------------------------------ users
    @property
    def n_users(self) -> int:
        return self.state.n_users

    def reset_users(self, mask: np.ndarray | None = None) -> None:
        """Replace the users in `mask` [N] (all if None) by fresh users at episode step 0."""
        s, cfg = self.state, self.config
        idx = np.arange(self.n_users) if mask is None else np.flatnonzero(mask)
        if idx.size == 0:
            return
        new = sample_users(cfg.users, s.community[idx], self.centres, self.user_rng)
        s.interest[idx] = new["interest"]
        s.initial_interest[idx] = new["interest"]
        s.budget[idx] = new["budget"]
        s.novelty_seeking[idx] = new["novelty_seeking"]
        s.susceptibility[idx] = new["susceptibility"]
        s.shock_draw[idx] = new["shock_draw"]
        s.shock_target[idx] = new["shock_target"]
        s.satiation[idx] = 0.0
        s.satisfaction[idx] = cfg.users.satisfaction_init
        s.step[idx] = 0
        period = cfg.seasonal.period
        s.calendar_offset[idx] = self.user_rng.integers(0, period, size=idx.size) if cfg.seasonal.random_offset else 0
        s.recent_items[idx] = -1
        s.recent_ptr[idx] = 0

    def past_interactions(self, idx: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """What the users at `idx` [M] did on their `users.past_interactions` = P visits before
        this episode, oldest first, as arrays [M, P]: item (the clicked one, or the first on offer
        when nothing was), clicked, completion and watch_time.

        Each past visit offered `users.past_pool` items drawn uniformly from the initial catalog;
        the user chose among them and the no-click option by the response model, under the
        tastes they arrive with (satiation fades between visits, so none). A recommender that
        reads a user's history meets a returning user, as real platforms mostly do, not a
        stranger: what the user watched, and how much of it, tells their tastes.
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
        state = self.state.take(idx)
        state.satiation[:] = 0.0
        outside = response.no_click_utility(np.full(m, cfg.users.satisfaction_init, np.float32), cfg.response)
        c = self.catalog
        for j in range(p):  # P past visits (a handful), each vectorised over users
            pool = rng.integers(0, c.n_initial, size=(m, cfg.users.past_pool))
            utility, fit = self.slate_utility(pool, state, positions=False)
            choice = response.sample_choice(
                response.choice_probabilities(utility, outside), rng.random(m, dtype=np.float32)
            )
            clicked = choice >= 0
            pick = np.maximum(choice, 0)
            item = pool[np.arange(m), pick]
            value = response.personal_value(fit[np.arange(m), pick], c.quality[item], cfg.response)
            done = np.where(clicked, response.completion(value, c.attractiveness[item], cfg.response), 0.0)
            out["item"][:, j] = item
            out["clicked"][:, j] = clicked
            out["completion"][:, j] = done
            out["watch_time"][:, j] = c.length[item] * done
        return out

    @property
    def noise_rows(self) -> int:
        """Rows of step noise drawn per step (fewer than N when users share noise)."""
        return self.n_users if self.noise_map is None else int(self.noise_map.max()) + 1

    @property
    def calendar(self) -> np.ndarray:
        """[N] each user's calendar time (drives seasons)."""
        return self.state.calendar_offset + self.state.step

    # ------------------------------------------------------------- responses
    def effective_interest(self, state: UserState | None = None) -> np.ndarray:
        """[N, T] interests as felt now: long-term interests plus the season."""
        s = self.state if state is None else state
        if self.season_table is None:
            return s.interest
        season = self.season_table[(s.calendar_offset + s.step) % self.config.seasonal.period]
        return s.interest + seasonal.personal_season(season, s.interest)

    def felt_interest(self, state: UserState | None = None) -> np.ndarray:
        """[N, T] interests as they drive choices now: effective interests less satiation."""
        s = self.state if state is None else state
        felt = self.effective_interest(s)
        if self.config.cognitive.scale:
            felt = felt - cognitive.satiation_penalty(s.satiation, self.config.cognitive)
        return felt

    def slate_fit(self, slates: np.ndarray, state: UserState | None = None) -> np.ndarray:
        """[N, K] true topic fit of the items in `slates` [N, K] (item ids) to the users' felt interests.

        Fit = item topic mixture . felt interests, under the current state (or `state`): what
        `slate_utility` and `step` use. Position does not enter it. `step` applies a scheduled
        shock before scoring, so for a user a shock hits at that step, the fit `step` reports
        (StepResult.fit) differs from this one taken before the step.
        """
        return np.einsum("nkt,nt->nk", self.catalog.topics[slates], self.felt_interest(state))  # no [N, K, T] temporary

    def slate_utility(
        self, slates: np.ndarray, state: UserState | None = None, positions: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Utilities [N, K] of the items in `slates` [N, K], and their fit [N, K] (see `slate_fit`).

        With positions=False every item is scored as if shown alone at the top.
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
        if cfg.cognitive.scale and cfg.cognitive.novelty_weight:
            fresh = cognitive.freshness(c.arrival_step[slates], s.step, cfg.cognitive)
            utility += cognitive.novelty_bonus(slates, s.recent_items, fresh, s.novelty_seeking, cfg.cognitive)
        return utility, fit

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

    # ------------------------------------------------------------------ step
    def step(self, slates: np.ndarray) -> StepResult:
        """Advance all users by one step; `slates` [N, K] holds item ids shown top to bottom."""
        cfg, c, s = self.config, self.catalog, self.state
        n = self.n_users
        if slates.ndim != 2 or slates.shape[0] != n:
            raise ValueError(f"slates must have shape [n_users={n}, slate_size], got {slates.shape}")
        rows = np.arange(n)
        # Fixed-shape draws every step, whatever the slates (common random numbers).
        n_draw, t = self.noise_rows, s.interest.shape[1]
        uniforms = self.step_rng.random((2, n_draw), dtype=np.float32)
        watch_noise = self.step_rng.standard_normal(n_draw, dtype=np.float32)
        walk_noise = (
            self.step_rng.random((n_draw, t), dtype=np.float32)
            if cfg.cognitive.scale and cfg.cognitive.random_walk_std
            else None
        )
        if self.noise_map is not None:  # rows sharing a noise row see the same draws
            uniforms, watch_noise = uniforms[:, self.noise_map], watch_noise[self.noise_map]
            walk_noise = None if walk_noise is None else walk_noise[self.noise_map]

        shocks.apply_shocks(s.interest, s.shock_target, s.shock_draw, s.step, cfg.shocks)

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
        done_frac = np.where(clicked, done_frac, np.float32(0.0))
        noise = np.exp(np.float32(cfg.response.watch_noise) * watch_noise)
        watch = c.length[chosen] * done_frac * noise

        felt = response.experience(clicked, value, c.attractiveness[chosen], cfg.response)
        response.update_satisfaction(s.satisfaction, felt, cfg.response)
        s.budget -= response.budget_cost(watch, value, cfg.response)

        consumed = c.topics[chosen] * clicked[:, None]  # [N, T], zero rows without a click
        cognitive.update_satiation(s.satiation, consumed, done_frac, cfg.cognitive)
        cognitive.reinforce(s.interest, consumed, done_frac, cfg.cognitive)
        if walk_noise is not None:
            cognitive.random_walk(s.interest, walk_noise, cfg.cognitive)
        if cfg.social.scale:
            pull = social.neighbour_pull(s.interest, self.neighbours, s.susceptibility, cfg.social)
            pull += social.trend_pull(s.interest, s.trend, s.susceptibility, cfg.social)
            s.interest += pull
        s.trend = social.update_trend(s.trend, consumed, clicked, cfg.social)
        np.clip(s.interest, -1.0, 1.0, out=s.interest)

        hit = np.flatnonzero(clicked)
        s.recent_items[hit, s.recent_ptr[hit]] = item[hit]
        s.recent_ptr[hit] = (s.recent_ptr[hit] + 1) % s.recent_items.shape[1]
        s.step += 1

        leave = uniforms[1] < response.leave_probability(s.satisfaction, cfg.response)
        terminated = (s.budget <= 0.0) | leave
        return StepResult(
            position=position,
            item=item,
            watch_time=watch.astype(np.float32),
            completion=done_frac,
            terminated=terminated,
            fit=fit,
        )

    def state_at_start(self) -> UserState:
        """The users' tastes as they were at the start of their episodes, the rest as now.

        Interests back to `initial_interest`, satiation to none and the season to the episode's
        first step (drift undone); satisfaction, budget, recent items and the episode step (item
        freshness) stay current. What a recommender that stopped updating its picture of the
        user would believe: the stale-state reference plans with it.
        """
        s = self.state.copy()
        s.interest = s.initial_interest.copy()
        s.satiation[:] = 0.0
        s.calendar_offset = s.calendar_offset - s.step  # calendar = offset + step: frozen at its start
        return s

    # ---------------------------------------------------------- ground truth
    def change_points(self) -> list[dict[str, Any]]:
        """Scheduled change points (episode steps) and, per event, which users they hit [N]."""
        out = []
        for cp in shocks.change_points(self.config.shocks):
            cp["affected"] = self.state.shock_draw < cp["fraction"] if cp["kind"] != "injection" else None
            out.append(cp)
        return out

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Copies of the hidden state for analysis and oracles (never part of an observation)."""
        s = self.state
        return dict(
            interest=s.interest.copy(),
            effective_interest=np.array(self.effective_interest()),
            satiation=s.satiation.copy(),
            satisfaction=s.satisfaction.copy(),
            budget=s.budget.copy(),
            step=s.step.copy(),
            calendar=self.calendar.copy(),
            trend=s.trend.copy(),
        )

    # ------------------------------------------------------- copy, save, load
    def copy(self, seed: int | None = None) -> World:
        """An independent copy (catalog shared read-only). With `seed`, the copy's step noise is reseeded."""
        other = object.__new__(World)
        other.__dict__.update(self.__dict__)
        other.state = self.state.copy()
        other._pos_bias = dict(self._pos_bias)
        other.user_rng = _copy_rng(self.user_rng)
        other.step_rng = np.random.default_rng(seed) if seed is not None else _copy_rng(self.step_rng)
        return other

    def tile(self, m: int, seed: int | None = None, noise_groups: int | None = None) -> World:
        """A world of N*m users: user i's copies at rows i*m .. i*m+m-1, for what-if rollouts.

        The social graph is tiled so copy j of a user follows copy j of its neighbours.
        With `noise_groups` = g (dividing m), copies j and j' of a user share step noise
        when j % g == j' % g: comparing branches on common random numbers.
        """
        check_int("world.tile", "m", m, 1)
        other = self.copy(seed)
        index = np.repeat(np.arange(self.n_users), m)
        other.state = self.state.take(index)
        other._n_users = self.n_users * m
        if noise_groups is not None:
            if noise_groups < 1 or m % noise_groups:
                raise ValueError(f"world.tile: noise_groups must divide m={m}, got {noise_groups}")
            copy = np.tile(np.arange(m), self.n_users)
            other.noise_map = index * noise_groups + copy % noise_groups
        else:
            other.noise_map = None
        other.neighbours = (self.neighbours[index] * m + np.tile(np.arange(m), self.n_users)[:, None]).astype(np.int32)
        return other

    def save(self, path: str | Path) -> None:
        """Save the user state and random streams (the catalog is rebuilt from config and seed)."""
        rng = json.dumps(dict(user=self.user_rng.bit_generator.state, step=self.step_rng.bit_generator.state))
        with open(path, "wb") as f:  # a file object: np.savez would append '.npz' to a bare path
            np.savez(f, rng_state=np.array(rng), neighbours=self.neighbours, **self.state.arrays())

    def load(self, path: str | Path) -> None:
        """Restore a state saved by `save` from a world built with the same config and seed."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        rng = json.loads(str(arrays.pop("rng_state")))
        neighbours = arrays.pop("neighbours")
        if arrays["interest"].shape[1] != self.config.catalog.n_topics:
            raise ValueError(
                f"saved state has {arrays['interest'].shape[1]} topics, this world has {self.config.catalog.n_topics}"
            )
        self.state = UserState(**arrays)
        self.neighbours = neighbours
        self._n_users = self.state.n_users
        self.noise_map = None
        self.user_rng.bit_generator.state = rng["user"]
        self.step_rng.bit_generator.state = rng["step"]


def _copy_rng(rng: np.random.Generator) -> np.random.Generator:
    bg = type(rng.bit_generator)()
    bg.state = rng.bit_generator.state
    return np.random.Generator(bg)
