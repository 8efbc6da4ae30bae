"""Factories of the agents in agents/registry.py: f(scenario, params, ctx) -> agent.

`params` is the agent's validated settings dataclass (or None for agents without settings);
`ctx` a registry.RunContext (seed, device, model overrides, run_dir, ray_address). Supervised
baselines and popularity see logged data only: a logging policy runs in the simulator first
(its logs are saved to run_dir/logs.parquet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.baselines import BanditParams, LinUCBPolicy, PopularityPolicy
from agents.item_score import ItemScoreParams, tune_item_score
from agents.logs import EpsilonPopularity, LogParams, collect_logs, save_logs
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

LOG_SEED_OFFSET = 1_000  # logs come from other users than training (seed) and evaluation
TUNE_SEED_OFFSET = 2_000  # so do the users the item score is tuned on


def logged_data(
    scenario: ScenarioConfig, params: LogParams, seed: int, run_dir: Path | None, until_day: float | None = None
):
    """Logs of the epsilon-popularity logging policy on users of seed LOG_SEED_OFFSET + seed:
    `log_steps` steps, or with `until_day` (lifetime scenarios) the days [0, until_day) of
    `log_users` lives (at most `env.max_steps` steps, a life's longest)."""
    logs = collect_logs(
        scenario,
        EpsilonPopularity(params.epsilon, seed),
        params.log_users,
        params.log_steps if until_day is None else scenario.env.max_steps,
        seed=LOG_SEED_OFFSET + seed,
        until_day=until_day,
    )
    if run_dir is not None:
        save_logs(logs, Path(run_dir) / "logs.parquet")
    return logs


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
    return PopularityPolicy.from_logs(logged_data(scenario, params, ctx.seed, ctx.run_dir), n_items)


def build_item_score(scenario: ScenarioConfig, params: ItemScoreParams, ctx: RunContext) -> Policy:
    return tune_item_score(scenario, params, TUNE_SEED_OFFSET + ctx.seed)[0]


def build_bandit(scenario: ScenarioConfig, params: BanditParams, ctx: RunContext) -> Policy:
    return LinUCBPolicy(params)


def _build_supervised(kind: str):
    def build(scenario: ScenarioConfig, params: Any, ctx: RunContext) -> Policy:
        from agents.supervised import SupervisedRecommender

        rec = SupervisedRecommender.for_scenario(
            kind, scenario, params, model=ctx.model, seed=ctx.seed, device=ctx.device
        )
        # Deployed on day T (lifetime scenarios): the logs a platform holds on day T.
        rec.fit(logged_data(scenario, params, ctx.seed, ctx.run_dir, until_day=rec.serves_from_day or None))
        return rec

    build.__name__ = f"build_{kind}"
    return build


build_sasrec = _build_supervised("sasrec")
build_gru4rec = _build_supervised("gru4rec")
