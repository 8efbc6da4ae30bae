"""Factories of the package's agents (registered in agents/registry.py): f(scenario, params, ctx) -> agent,
the same signature a researcher's factory has.

`params` is the agent's validated settings dataclass (or None for agents without settings);
`ctx` a registry.RunContext (seed, device, model overrides, run_dir, ray_address, logs). Supervised
baselines and popularity see logged data only: the logs of ctx.logs when given (the offline study's),
else a logging policy runs in the simulator first (agents.logs.logged_data; saved to
run_dir/logs.parquet). Given logs, the bandit starts from what they teach.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.baselines import BanditParams, LinUCBPolicy, PopularityPolicy
from agents.item_score import ItemScoreParams, tune_item_score
from agents.logs import LogParams, logged_data
from agents.oracles import (
    CommunityOracle,
    LifetimeOracle,
    LifetimeOracleParams,
    LookaheadOracle,
    LookaheadParams,
    MyopicOracle,
    SessionOracle,
    StaleStateOracle,
)
from agents.policy import Policy, RandomPolicy
from agents.registry import RunContext
from envs.config import ScenarioConfig

TUNE_SEED_OFFSET = 2_000  # the item score is tuned on other users than training (seed) and evaluation


def build_ppo(scenario: ScenarioConfig, params: Any, ctx: RunContext):
    from agents.rllib_agent import RLlibPPOAgent

    return RLlibPPOAgent(
        scenario, params, seed=ctx.seed, device=ctx.device, model=ctx.model, ray_address=ctx.ray_address
    )


def build_sb3_ppo(scenario: ScenarioConfig, params: Any, ctx: RunContext):
    from agents.sb3_agent import SB3PPOAgent

    return SB3PPOAgent(scenario, params, seed=ctx.seed, device=ctx.device, model=ctx.model)


def build_random(scenario: ScenarioConfig, params: None, ctx: RunContext) -> Policy:
    return RandomPolicy(ctx.seed)


def build_myopic(scenario: ScenarioConfig, params: None, ctx: RunContext) -> Policy:
    return MyopicOracle()


def build_session(scenario: ScenarioConfig, params: None, ctx: RunContext) -> Policy:
    return SessionOracle()


def build_stale(scenario: ScenarioConfig, params: None, ctx: RunContext) -> Policy:
    return StaleStateOracle()


def build_community(scenario: ScenarioConfig, params: None, ctx: RunContext) -> Policy:
    if scenario.world.users.real_history:
        raise ValueError("oracle-community needs simulated users: this scenario's users are real (users.real_history)")
    return CommunityOracle()


def build_lifetime_oracle(scenario: ScenarioConfig, params: LifetimeOracleParams, ctx: RunContext) -> Policy:
    return LifetimeOracle(params)


def build_lookahead(scenario: ScenarioConfig, params: LookaheadParams, ctx: RunContext) -> Policy:
    return LookaheadOracle(params, seed=ctx.seed)


def build_popularity(scenario: ScenarioConfig, params: LogParams, ctx: RunContext) -> Policy:
    from envs.core import RecommenderCore

    n_items = RecommenderCore(scenario, 1, ctx.seed).n_items
    logs = ctx.logs if ctx.logs is not None else logged_data(scenario, params, ctx.seed, ctx.run_dir)
    return PopularityPolicy.from_logs(logs, n_items)


def build_item_score(scenario: ScenarioConfig, params: ItemScoreParams, ctx: RunContext) -> Policy:
    return tune_item_score(scenario, params, TUNE_SEED_OFFSET + ctx.seed)[0]


def build_bandit(scenario: ScenarioConfig, params: BanditParams, ctx: RunContext) -> Policy:
    bandit = LinUCBPolicy(params)
    if ctx.logs is not None:  # the logged slates, as if it had served them (their observations rebuilt)
        from agents.offline import logged_steps
        from envs.vector import RecVectorEnv

        bandit.bind(RecVectorEnv(num_envs=1, scenario=scenario, seed=0))
        bandit.fit_steps(logged_steps(ctx.logs, ctx.logs_scenario or scenario))
    return bandit


def _build_supervised(kind: str):
    def build(scenario: ScenarioConfig, params: Any, ctx: RunContext) -> Policy:
        from agents.supervised import SupervisedRecommender

        if ctx.logs is not None:  # logs taken whole: served from day 0, not deployed on a date
            params = dataclasses.replace(params, train_days=0.0)
        rec = SupervisedRecommender.for_scenario(
            kind, scenario, params, model=ctx.model, seed=ctx.seed, device=ctx.device
        )
        # Deployed on day T (lifetime scenarios), it collects the logs a platform holds on day T.
        until = rec.serves_from_day or None
        rec.fit(ctx.logs if ctx.logs is not None else logged_data(scenario, params, ctx.seed, ctx.run_dir, until))
        return rec

    build.__name__ = f"build_{kind}"
    return build


build_sasrec = _build_supervised("sasrec")
build_gru4rec = _build_supervised("gru4rec")
