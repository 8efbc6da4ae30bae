"""The supervised recommender: a sequence model trained on logged interactions, behind the Policy protocol.

The model (agents.sequence_models: ``sasrec``, the shared Transformer encoder, or ``gru4rec``) predicts
the engagement of showing an item to a user from the user's padded interaction history, the same
observation the RL agents get. Serving is myopic and greedy: candidates are ranked by the expected engagement
``p(click | top slot) * E[watch | click]`` (top-K for slates).

Training data come from logs (``agents.logs``, one row per impression) turned
into examples by ``agents.training_examples.step_examples``. With ``retrain_every = k > 0`` the
recommender also learns from what it serves, as deployed recommenders do:
``observe()`` (called by the evaluation harness after every step) buffers the
served impressions and every k steps fine-tunes on logs + fresh data (see ``refit_batches``).

Deployed on a calendar (lifetime scenarios). With ``train_days = T`` (default: half the horizon,
30 days on the `lifetime` preset) the model is trained on the logging policy's logs of days [0, T)
(``collect_logs`` with ``until_day``) and serves from day T: it carries the logging policy as its
``warmup`` and ``serves_from_day = T``, so the evaluation harness serves each user with the logging
policy until their own clock reaches T, then with the model (the harness measures whole lives, and
the minutes from T on as ``return_served_mean``). With ``retrain_every_days = D`` new model
versions are fitted for the refit days c = T + D, T + 2D, ...: agents.deployment keeps the calendar
(which version serves whom, and why the refits are causal).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from agents.deployment import Deployment
from agents.logs import EpsilonPopularity, LogParams
from agents.model import encoder_config, serve
from agents.policy import slate_from_scores
from agents.sequence_models import KINDS, EngagementLearner, EngagementModel
from agents.training_examples import ExampleChain, Examples, ReplayBuffer, fit_examples, served_examples
from envs.core import LIFETIME_HISTORY_FEATURES
from simulator.params import check_int, check_range

__all__ = ["SupervisedParams", "SupervisedRecommender"]

MAX_DAYS = 3650.0


@dataclass(frozen=True)
class SupervisedParams(LogParams):
    """Training of a supervised recommender (the run config's `algo:` section), on top of the
    logged data it learns from (LogParams)."""

    epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3
    retrain_every: int = 0  # refit on logs + fresh interactions every k served steps (0: never)
    refit_batches: int = 32  # minibatches per refit, half fresh and half logged (0: a whole epoch)
    replay_capacity: int = 50_000  # most recent served user-steps kept for refitting
    # Lifetime scenarios only (days mean nothing in a session scenario: set there, an error):
    retrain_every_days: float = 0.0  # refit on days T + D, T + 2D, ... (0: never)
    train_days: float | None = None  # T: trained on logs of days [0, T), served from day T (None: half
    # the horizon, 30 days on `lifetime`; 0: trained on `log_steps` steps of logs of whole lives, served from day 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("algo", "epochs", self.epochs, 1)
        check_int("algo", "batch_size", self.batch_size, 1)
        check_range("algo", "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("algo", "retrain_every", self.retrain_every, 0)
        check_int("algo", "refit_batches", self.refit_batches, 0)
        check_int("algo", "replay_capacity", self.replay_capacity, 1)
        check_range("algo", "retrain_every_days", self.retrain_every_days, 0.0, MAX_DAYS)
        if self.train_days is not None:
            check_range("algo", "train_days", self.train_days, 0.0, MAX_DAYS)
        if self.retrain_every and self.retrain_every_days:
            raise ValueError(
                "algo.retrain_every (served steps) and algo.retrain_every_days (days) are two cadences: set one"
            )

    @property
    def name_suffix(self) -> str:
        """What the refitting variant adds to the agent's name: -retrain (every k steps), -retrain-7d (days)."""
        if self.retrain_every:
            return "-retrain"
        return f"-retrain-{self.retrain_every_days:g}d" if self.retrain_every_days else ""

    def deployment_day(self, horizon_days: float | None) -> float:
        """T, the day the model starts serving: train_days (half of `horizon_days` when None) on a
        lifetime scenario of that horizon, 0 in session scenarios (`horizon_days` None)."""
        if horizon_days is None:
            return 0.0
        return 0.5 * float(horizon_days) if self.train_days is None else float(self.train_days)

    def check_scenario(self, scenario: Any) -> None:
        """ValueError, in one line, for settings the scenario cannot take: a cadence in days or a
        train_days in a session scenario (no calendar), a train_days at or past the horizon."""
        life = scenario.world.lifetime
        if not life.enabled:
            for name in ("retrain_every_days", "train_days"):
                if getattr(self, name):
                    raise ValueError(
                        f"algo.{name} is for lifetime scenarios: {scenario.name!r} has no calendar "
                        "(days mean nothing there; refit every k served steps with algo.retrain_every)"
                    )
            return
        day = self.deployment_day(life.horizon_days)
        if day >= life.horizon_days:
            raise ValueError(
                f"algo.train_days must be in [0, {life.horizon_days:g}) (lifetime.horizon_days), got {day:g}"
            )


class SupervisedRecommender:
    """A supervised sequence recommender behind the Policy protocol (greedy by expected engagement).

    kind:              "sasrec" (Transformer encoder) or "gru4rec" (GRU over the same tokens).
    observation_space: the env's single observation space (gymnasium Dict).
    item_features:     the catalog feature table [n_items, F_item] (``env.core.item_features``).
    n_items:           catalog size (item ids are 0..n_items-1).
    params:            training and refitting settings (SupervisedParams: epochs, batch_size, lr,
                       retrain_every = k > 0 refits every k observed steps on logs + fresh served
                       data, refit_batches, replay_capacity), validated once by the dataclass.
    model:             EncoderConfig overrides (d_model, n_layers, ...) on top of DEFAULT_MODEL.
    seed:              seeds the initial weights, the shuffling and dropout: same seed and data,
                       same scores.
    length_mean:       the catalog's ``length_mean`` (history watch times are in its units);
                       ``bind(env)`` checks it. ``from_env`` fills it and the sizes in.
    horizon_days:      lifetime scenarios: ``lifetime.horizon_days`` (the default day T of
                       ``train_days`` is half of it); required there, checked by ``bind(env)``;
                       filled in by ``from_env`` and ``for_scenario``.

    ``name`` is the kind, with "-retrain" when retrain_every > 0 ("-retrain-7d" for a cadence in
    days). ``losses`` holds the per-epoch mean losses of the last ``fit``; ``refit_losses`` one loss
    per refit. On lifetime scenarios, ``serves_from_day`` (T) and ``warmup`` (the logging policy,
    seeded with `seed`; None when T = 0) tell the harness when the model takes over, and the
    deployment serves model versions (``deployment``, an agents.deployment.Deployment): ``versions``
    holds one record per version fitted in the current evaluation (VERSION_RECORD keys: version 0 is
    the fit on the logs), ``refits`` the refit versions' records (``versions[1:]``). ``learner`` holds
    the model being trained (its weights, optimizer and shuffling RNG; ``net`` is its model).
    """

    def __init__(
        self,
        kind: str,
        observation_space: Any,
        item_features: np.ndarray | None,
        n_items: int,
        params: SupervisedParams = SupervisedParams(),
        model: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str = "cpu",
        length_mean: float = 4.0,
        horizon_days: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"SupervisedRecommender.kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(params, SupervisedParams):
            raise ValueError(f"SupervisedRecommender.params must be SupervisedParams, got {type(params).__name__}")
        if model is not None and not isinstance(model, Mapping):
            raise ValueError(f"SupervisedRecommender.model must be a dict or None, got {type(model).__name__}")
        check_int("supervised", "n_items", n_items, 1)
        check_int("supervised", "seed", seed, 0)
        check_range("supervised", "length_mean", length_mean, 0.0, lo_open=True)
        self.kind, self.params = kind, params
        self.n_items, self.seed, self.length_mean = int(n_items), int(seed), float(length_mean)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"SupervisedRecommender.device is not a torch device: {device!r}") from err
        self.config = encoder_config(observation_space, self.n_items, model)
        # A lifetime scenario's observations: histories with days ago and session starts.
        self.lifetime = self.config.history_feature_dim == len(LIFETIME_HISTORY_FEATURES)
        self.n_positions = int(observation_space["candidate_items"].shape[-1])
        if item_features is not None:
            item_features = np.asarray(item_features, dtype=np.float32)
            expected = (self.n_items, self.config.item_feature_dim)
            if item_features.shape != expected:
                raise ValueError(
                    f"SupervisedRecommender.item_features must have shape {expected} "
                    f"(n_items, F_item), got {item_features.shape}"
                )
        elif self.config.item_feature_dim:
            raise ValueError(
                "SupervisedRecommender.item_features is required: the observations carry "
                "history ids only (pass env.core.item_features)"
            )
        self.item_features = item_features
        self.name = kind + params.name_suffix
        self.slate_size = 1
        if params.retrain_every_days and not self.lifetime:
            raise ValueError("algo.retrain_every_days is for lifetime scenarios: this env has no calendar")
        if self.lifetime and horizon_days is None:
            raise ValueError(
                "SupervisedRecommender.horizon_days is required on a lifetime scenario (use from_env or for_scenario)"
            )
        if self.lifetime:
            check_range("supervised", "horizon_days", horizon_days, 0.0, MAX_DAYS, lo_open=True)
        self.horizon_days = float(horizon_days) if self.lifetime else None
        self.serves_from_day = params.deployment_day(self.horizon_days)
        self._dated = self.lifetime and (self.serves_from_day > 0 or params.retrain_every_days > 0)
        self._build()
        self._start_serving()

    @classmethod
    def from_env(
        cls, kind: str, env: Any, params: SupervisedParams = SupervisedParams(), **kwargs: Any
    ) -> SupervisedRecommender:
        """Sizes, item features and length_mean read from a RecVectorEnv or RecEnv; `kwargs`: model,
        seed, device."""
        core = env.unwrapped.core if hasattr(env, "unwrapped") else env.core
        config = env.unwrapped.config
        params.check_scenario(config)
        kwargs.setdefault("length_mean", config.world.catalog.length_mean)
        if config.world.lifetime.enabled:
            kwargs.setdefault("horizon_days", config.world.lifetime.horizon_days)
        return cls(kind, core.single_observation_space, core.item_features, core.n_items, params, **kwargs)

    @classmethod
    def for_scenario(
        cls, kind: str, scenario: Any, params: SupervisedParams = SupervisedParams(), **kwargs: Any
    ) -> SupervisedRecommender:
        """Sizes, item features and length_mean read from a ScenarioConfig (an env of it is built to
        read them); `kwargs`: model, seed, device."""
        from envs.core import RecommenderCore

        params.check_scenario(scenario)
        probe = RecommenderCore(scenario, 1, kwargs.get("seed", 0))
        kwargs.setdefault("length_mean", scenario.world.catalog.length_mean)
        if scenario.world.lifetime.enabled:
            kwargs.setdefault("horizon_days", scenario.world.lifetime.horizon_days)
        return cls(kind, probe.single_observation_space, probe.item_features, probe.n_items, params, **kwargs)

    def _build(self) -> None:
        """Fresh weights, optimizer, shuffling RNG and empty replay, all from the seed."""
        p = self.params
        self.learner = EngagementLearner(
            self.kind,
            self.config,
            self.item_features,
            self.n_positions,
            self.length_mean,
            p.lr,
            p.batch_size,
            self.seed,
            self.device,
        )
        self._logged: Examples | None = None
        self._fresh = ReplayBuffer(self.params.replay_capacity)
        self.losses: list[float] = []
        self.refit_losses: list[float] = []
        self.deployment: Deployment | None = None
        self.n_observed = 0
        self.n_refits = 0
        self._base: dict[str, Any] | None = None  # a calendar deployment's version 0 (learner.snapshot())
        self._fit_seconds = 0.0

    @property
    def net(self) -> EngagementModel:
        """The model being trained (a calendar deployment serves frozen copies of it)."""
        return self.learner.net

    def with_retraining(self, retrain_every: int = 0, days: float = 0.0) -> SupervisedRecommender:
        """A copy of this (fitted) recommender that refits every `retrain_every` served steps or,
        on a lifetime scenario, every `days` days from its deployment day (one of the two)."""
        check_int("algo", "retrain_every", retrain_every, 0)
        check_range("algo", "retrain_every_days", days, 0.0, MAX_DAYS)
        if bool(retrain_every) == bool(days):
            raise ValueError("with_retraining takes one cadence: retrain_every (served steps) or days")
        if days and not self.lifetime:
            raise ValueError("algo.retrain_every_days is for lifetime scenarios: this env has no calendar")
        other = copy.deepcopy(self)
        other.params = dataclasses.replace(self.params, retrain_every=retrain_every, retrain_every_days=float(days))
        other.name = self.kind + other.params.name_suffix
        other._dated = self.lifetime and (self.serves_from_day > 0 or days > 0)
        other._start_serving()  # a calendar deployment starts again from the fitted version 0
        return other

    # ------------------------------------------------------------------ Policy
    def bind(self, env: Any) -> None:
        """Read the slate size and check the catalog's length_mean; forget the previous episode's done mask."""
        config = env.unwrapped.config if hasattr(env, "unwrapped") else env.config
        length_mean = float(config.world.catalog.length_mean)
        if not np.isclose(length_mean, self.length_mean):
            raise ValueError(
                f"env catalog length_mean={length_mean} but the recommender was built with "
                f"length_mean={self.length_mean} (use SupervisedRecommender.from_env)"
            )
        self.slate_size = int(config.env.slate_size)
        if self.lifetime and not np.isclose(config.world.lifetime.horizon_days, self.horizon_days):
            raise ValueError(
                f"env lifetime.horizon_days={config.world.lifetime.horizon_days} but the recommender was built "
                f"with horizon_days={self.horizon_days} (use SupervisedRecommender.from_env)"
            )
        self._start_serving()

    def _start_serving(self) -> None:
        """Start a new evaluation. Step cadence (or none): forget the clocks; the model and its refits
        so far stay. Calendar deployment: a fresh one from version 0 (the weights, optimizer and
        shuffling RNG as ``fit`` left them, the warm-up reseeded), no served rows, the version
        records restarted."""
        self._refit_seconds = 0.0
        # The platform's policy before T: the logging policy, seeded afresh for every evaluation.
        self.warmup = EpsilonPopularity(self.params.epsilon, self.seed) if self.serves_from_day > 0 else None
        self.deployment = None
        if not self._dated:
            return
        if self._base is None:  # not fitted: version 0 is the initial weights
            self._base = self.learner.snapshot()
        self.learner.restore(self._base)
        self._fresh, self.n_refits, self.n_observed = ReplayBuffer(self.params.replay_capacity), 0, 0
        base = dict(logged_steps=self._logged_steps, fresh_steps=0.0, fresh_rows=0.0)
        base.update(fit_seconds=self._fit_seconds, at_step=0.0)
        self.deployment = Deployment(
            self.serves_from_day,
            self.params.retrain_every_days,
            self.horizon_days,
            self.learner.frozen_copy(),
            base,
            self._fit_version,
        )

    @property
    def versions(self) -> list[dict[str, float]]:
        """One record per model version of the current calendar deployment (VERSION_RECORD keys); [] off it."""
        return self.deployment.versions if self.deployment is not None else []

    @property
    def refits(self) -> list[dict[str, float]]:
        """The records of the refit versions of the current calendar deployment (VERSION_RECORD keys)."""
        return self.versions[1:]

    def serving_stats(self) -> dict[str, float]:
        """Scalars of the last evaluation for results.csv: refits and refit_seconds (their fit time)
        and, deployed on a calendar, serving_lag_days (mean over the steps the model served of
        the user's day - the cutoff of the version that served it), versions_kept_max (most model
        versions held at once), refit_past_cutoff (mean over refits of the share of live users past
        the version's cutoff when it was fitted) and served_from_day (T)."""
        if not self._dated:
            return dict(refits=float(self.n_refits), refit_seconds=self._refit_seconds)
        return dict(refits=float(self.n_refits), **self.deployment.stats())

    def scores(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Expected engagement (minutes) of showing each candidate at the top: [N, C] float32.
        Deployed on a calendar: each user's by the newest kept version whose cutoff is <= their
        day (the oldest kept one for users before T, whose slates the warm-up serves), one forward
        pass per version among them."""
        if not self._dated:
            return self._engagement(self.net, obs)
        return self.deployment.scores(obs, self._engagement)

    def _engagement(self, net: EngagementModel, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n, C] float32 expected engagement (minutes) of `net` on a batch of observations."""
        click_logit, watch = serve(net, obs, self.device)
        return (torch.sigmoid(click_logit) * watch * self.length_mean).float().cpu().numpy()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Greedy: the candidate with the highest expected engagement [N], or the top-K [N, K]."""
        return slate_from_scores(self.scores(obs), self.slate_size)

    # ---------------------------------------------------------------- training
    def fit(self, logs: pd.DataFrame) -> list[float]:
        """Train from scratch (re-seeded weights, empty replay) on logs; returns per-epoch mean losses.

        Loss = BCE(click logit, click) + squared error of the watch time (in mean lengths) on
        clicked rows. Empty logs, missing columns or ids outside the catalog are a ValueError.
        """
        started = time.perf_counter()
        examples = fit_examples(
            logs, self.n_items, self.n_positions, self.config.history_len, self.length_mean, self.lifetime
        )
        self._build()
        self._logged = examples
        self.losses = [self.learner.train_epoch(self._logged) for _ in range(self.params.epochs)]
        self._fit_seconds = time.perf_counter() - started
        self._start_serving()  # a calendar deployment starts from these weights (version 0)
        return list(self.losses)

    # --------------------------------------------------------------- retraining
    def observe(
        self, obs: Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, info: Mapping[str, np.ndarray]
    ) -> None:
        """Buffer the served step's impressions; every `retrain_every` calls, refit one epoch.

        obs is what act() saw; rewards [N]; `info["served"]` [N] marks slots whose action was
        shown (False while autoresetting), `info["position"]` [N] the clicked slot (-1: none).
        Each slate item becomes an impression with its position, as in the logs. No-op when
        retrain_every is 0. Deployed on a calendar, see `_observe_dated`.
        """
        if self._dated:
            self._observe_dated(obs, actions, rewards, info)
            return
        if not self.params.retrain_every:
            return
        rows = np.flatnonzero(np.asarray(info["served"], dtype=bool))
        if rows.size:
            self._fresh.push(served_examples(obs, actions, rewards, np.asarray(info["position"]), rows))
        self.n_observed += 1
        if self.n_observed % self.params.retrain_every == 0:
            self._refit()

    def _observe_dated(
        self, obs: Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, info: Mapping[str, np.ndarray]
    ) -> None:
        """The calendar deployment's bookkeeping after a step (lifetime scenarios; obs, actions as
        act() saw them, rewards [N], info with `day` [N] (clock after the step), `served` [N] and
        the harness's `evaluated` [N] (this model's own action, in a counted life; `served` when
        absent) and `done` [N] (the user ended at this step; none when absent)). The deployment counts
        the serving lag of the model's own steps; refitting in days, they are buffered with the day
        they were served on; then the deployment moves the clocks, has every version that has become
        due fitted (`_fit_version`) and drops the versions no live user can be served by again.
        """
        rows, day = self.deployment.record_served(obs, info)
        if rows.size and self.params.retrain_every_days:
            examples = served_examples(obs, actions, rewards, np.asarray(info["position"]), rows)
            examples.day = day
            self._fresh.push(examples)
        self.n_observed += 1
        self.deployment.advance(info)

    def _fit_version(self, cutoff: float) -> tuple[EngagementModel, dict[str, float]]:
        """Fine-tune the newest version on the logs + every served row there is (the newest
        replay_capacity steps), all dated before `cutoff` (asserted): the version for `cutoff`, as
        (its serving copy, its record's FIT_RECORD fields)."""
        started = time.perf_counter()
        fresh = self._fresh_examples()
        latest = fresh.max_day() if fresh is not None else float("nan")
        assert fresh is None or latest < cutoff, (
            f"the version for day {cutoff:g} would train on a row of day {latest:g}"
        )
        parts = [part for part in (self._logged, fresh) if part is not None]
        if parts:  # (an unfitted model that served nothing yet has nothing to learn from)
            self._train_parts(parts)
        net = self.learner.frozen_copy()
        self.n_refits += 1
        return net, dict(
            logged_steps=self._logged_steps,
            fresh_steps=float(fresh.n_steps if fresh is not None else 0),
            fresh_rows=float(len(fresh) if fresh is not None else 0),
            fresh_max_day=latest,
            fit_seconds=time.perf_counter() - started,
            at_step=float(self.n_observed),
        )

    @property
    def _logged_steps(self) -> float:
        """User-steps of the logs the model was fitted on (0 before a fit)."""
        return float(self._logged.n_steps if self._logged is not None else 0)

    def _fresh_examples(self) -> ReplayBuffer | None:
        """The served rows buffered for refitting (the newest replay_capacity steps), or None."""
        return self._fresh if len(self._fresh) else None

    def _refit(self) -> None:
        """Step cadence: fine-tune on the original logs + the fresh data (newest replay_capacity steps)."""
        started = time.perf_counter()
        parts = [part for part in (self._logged, self._fresh_examples()) if part is not None]
        if not parts:
            return
        self._train_parts(parts)
        self.n_refits += 1
        self._refit_seconds += time.perf_counter() - started

    def _train_parts(self, parts: list[Examples | ReplayBuffer]) -> None:
        """Fine-tune on `parts` (non-empty), read in place as one chain of their rows: a whole epoch
        over them, or `refit_batches` minibatches in which each part weighs the same; the loss goes
        to refit_losses."""
        data = ExampleChain(parts)
        if not self.params.refit_batches:
            self.refit_losses.append(self.learner.train_epoch(data))
            return
        sizes = np.array([len(part) for part in parts], dtype=np.float64)
        p = np.repeat(1.0 / (len(parts) * sizes), sizes.astype(np.int64))  # each part weighs the same
        size = min(self.params.batch_size, len(data))
        batches = [self.learner.rng.choice(len(data), size=size, p=p) for _ in range(self.params.refit_batches)]
        self.refit_losses.append(self.learner.train_on(data, batches))
