"""Builders for the policies that experiments/run.py evaluates without RL training.

Every builder has one signature, build(scenario, seed, device, model, algo, run_dir) -> Policy;
`algo` carries its settings (overridable from the run config's `algo:` section).
Supervised baselines and popularity see logged data only: a logging policy runs in the
simulator first (its logs are saved to run_dir/logs.parquet).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from agents.baselines import LinUCBPolicy, PopularityPolicy
from agents.logs import EpsilonPopularity, collect_logs, save_logs
from agents.oracles import LookaheadOracle, MyopicOracle, SessionOracle
from agents.policy import Policy, RandomPolicy
from envs.config import ScenarioConfig
from simulator.params import apply_overrides, check_int, check_range

LOG_SEED_OFFSET = 1_000  # logs come from other users than training (seed) and evaluation


@dataclass(frozen=True)
class LogParams:
    """The logged data a supervised baseline trains on."""
    log_users: int = 256         # parallel logged sessions
    log_steps: int = 400         # steps logged (sessions restart as they end)
    epsilon: float = 0.3         # exploration of the epsilon-popularity logging policy

    def __post_init__(self) -> None:
        check_int("algo", "log_users", self.log_users, 1)
        check_int("algo", "log_steps", self.log_steps, 1)
        check_range("algo", "epsilon", self.epsilon, 0.0, 1.0)


@dataclass(frozen=True)
class SupervisedParams(LogParams):
    epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3
    retrain_every: int = 0       # refit on logs + fresh interactions every k served steps (0: never)
    refit_batches: int = 32      # minibatches per refit, half fresh and half logged (0: a whole epoch)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("algo", "epochs", self.epochs, 1)
        check_int("algo", "batch_size", self.batch_size, 1)
        check_range("algo", "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("algo", "retrain_every", self.retrain_every, 0)
        check_int("algo", "refit_batches", self.refit_batches, 0)


@dataclass(frozen=True)
class BanditParams:
    alpha: float = 1.0           # width of the upper confidence bound
    ridge: float = 1.0           # prior precision of the linear model

    def __post_init__(self) -> None:
        check_range("algo", "alpha", self.alpha, 0.0)
        check_range("algo", "ridge", self.ridge, 0.0, lo_open=True)


@dataclass(frozen=True)
class LookaheadParams:
    top: int = 3                 # candidates (by the session oracle's score) planned over
    rollouts: int = 8            # simulator copies per candidate (>= 2: paired standard errors)
    horizon: int = 100           # steps each rollout looks ahead
    z: float = 2.0               # leave the session oracle's choice only if the gain exceeds z standard errors

    def __post_init__(self) -> None:
        check_int("algo", "top", self.top, 1)
        check_int("algo", "rollouts", self.rollouts, 2)
        check_int("algo", "horizon", self.horizon, 1)
        check_range("algo", "z", self.z, 0.0)


def _logs(scenario: ScenarioConfig, params: LogParams, seed: int, run_dir: Path | None):
    logs = collect_logs(scenario, EpsilonPopularity(params.epsilon, seed), params.log_users, params.log_steps,
                        seed=LOG_SEED_OFFSET + seed)
    if run_dir is not None:
        save_logs(logs, Path(run_dir) / "logs.parquet")
    return logs


def _no_settings(name: str, algo: Mapping[str, Any]) -> None:
    if algo:
        raise ValueError(f"{name} takes no algo settings, got {sorted(algo)}")


def build_random(scenario, seed, device, model, algo, run_dir) -> Policy:
    _no_settings("random", algo)
    return RandomPolicy(seed)


def build_myopic(scenario, seed, device, model, algo, run_dir) -> Policy:
    _no_settings("oracle-myopic", algo)
    return MyopicOracle()


def build_session(scenario, seed, device, model, algo, run_dir) -> Policy:
    _no_settings("oracle-session", algo)
    return SessionOracle()


def build_lookahead(scenario, seed, device, model, algo, run_dir) -> Policy:
    p = apply_overrides(LookaheadParams(), algo, "algo")
    return LookaheadOracle(top=p.top, rollouts=p.rollouts, horizon=p.horizon, z=p.z, seed=seed)


def build_popularity(scenario, seed, device, model, algo, run_dir) -> Policy:
    p = apply_overrides(LogParams(), algo, "algo")
    from envs.core import RecommenderCore

    n_items = RecommenderCore(scenario, 1, seed).n_items
    return PopularityPolicy.from_logs(_logs(scenario, p, seed, run_dir), n_items)


def build_bandit(scenario, seed, device, model, algo, run_dir) -> Policy:
    p = apply_overrides(BanditParams(), algo, "algo")
    return LinUCBPolicy(alpha=p.alpha, ridge=p.ridge)


def _build_supervised(kind: str):
    def build(scenario, seed, device, model, algo, run_dir) -> Policy:
        from agents.supervised import SupervisedRecommender
        from envs.core import RecommenderCore

        p = apply_overrides(SupervisedParams(), algo, "algo")
        probe = RecommenderCore(scenario, 1, seed)
        rec = SupervisedRecommender(kind, probe.single_observation_space, probe.item_features, probe.n_items,
                                    model=model, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, seed=seed,
                                    device=device, retrain_every=p.retrain_every, refit_batches=p.refit_batches,
                                    length_mean=scenario.world.catalog.length_mean)
        rec.fit(_logs(scenario, p, seed, run_dir))
        return rec

    return build


build_sasrec = _build_supervised("sasrec")
build_gru4rec = _build_supervised("gru4rec")
