"""The supervised warm start of a PPO agent's encoder, shared by RLlib PPO and SB3 PPO.

A policy gradient alone learns to read a 32-item history slowly, while clicks and watch times in logs
teach it quickly: before its first iteration, a PPO agent's encoder (agents.encoder.RecommenderEncoder)
takes the weights of sasrec's, the engagement model over the same encoder (agents.sequence_models)
fitted for `pretrain_epochs` epochs on logs of the training scenario (LogParams: log_users, log_steps,
epsilon of the logging policy). A resumed run keeps its trained weights.

  state = pretrain_encoder(scenario, params, model={"d_model": 64}, seed=0, device="cpu")
  agent_encoder.load_state_dict(state)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from agents.logs import LogParams, logged_data
from agents.model import encoder_config
from agents.sequence_models import PRETRAIN_OBJECTIVES, EngagementLearner
from agents.training_examples import fit_examples
from envs.config import ScenarioConfig
from envs.core import LIFETIME_HISTORY_FEATURES, RecommenderCore, history_features, static_catalog
from simulator.params import check_int

PRETRAIN_KIND = "sasrec"  # the engagement model whose encoder is the PPO agents' (the same architecture)


@dataclass(frozen=True)
class WarmStartParams(LogParams):
    """The warm start's settings in a PPO agent's `algo:` section: `pretrain_epochs` epochs of sasrec on
    the logs of LogParams (0: no warm start). `pretrain_objective`: "engagement" (the clicks and watch
    times of the logged slates) or "next_item" (self-supervised: predict each next interaction from the
    history; "stream" encoders)."""

    pretrain_epochs: int = 0  # supervised warm start of the encoder on logs (0: none)
    pretrain_objective: str = "engagement"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("algo", "pretrain_epochs", self.pretrain_epochs, 0, 1000)
        if self.pretrain_objective not in PRETRAIN_OBJECTIVES:
            raise ValueError(
                f"algo.pretrain_objective must be one of {', '.join(PRETRAIN_OBJECTIVES)}, "
                f"got {self.pretrain_objective!r}"
            )


def warm_start_note(params: Any) -> str:
    """What a warm start of `params` (LogParams fields and pretrain_epochs) does, for a status line."""
    objective = getattr(params, "pretrain_objective", "engagement")
    what = PRETRAIN_KIND if objective == "engagement" else f"the encoder ({objective.replace('_', ' ')})"
    logs = f"{params.log_users} users x {params.log_steps} steps"
    return f"fitting {what} on logs of {logs}, {params.pretrain_epochs} epoch(s)"


def pretrain_encoder(
    scenario: ScenarioConfig,
    params: Any,
    model: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """The state dict (on the CPU) of sasrec's encoder fitted on logs of `scenario`: `params` gives the
    logs (LogParams fields: log_users, log_steps, epsilon; logged by agents.logs.logged_data with
    `seed`) and the epochs (`pretrain_epochs`); `model` the EncoderConfig overrides, which must be the
    PPO agent's for the weights to fit its encoder; the fit runs on `device` (a cuda learner's warm start
    is a GPU job too). The model's own settings (batch size, learning rate) are sasrec's defaults
    (agents.supervised.SupervisedParams): the same weights as the `sasrec` agent fitted on those logs."""
    from agents.supervised import SupervisedParams

    core = RecommenderCore(scenario, 1, seed)
    config = encoder_config(
        core.single_observation_space, core.n_items, model, history_features(scenario), static_catalog(scenario)
    )
    lifetime = config.history_feature_dim == len(LIFETIME_HISTORY_FEATURES)
    n_positions = int(core.single_observation_space["candidate_items"].shape[-1])
    length_mean = scenario.world.catalog.length_mean
    sasrec = SupervisedParams()
    logs = logged_data(scenario, params, seed, run_dir=None)
    examples = fit_examples(logs, core.n_items, n_positions, config.history_len, length_mean, lifetime)
    learner = EngagementLearner(
        PRETRAIN_KIND,
        config,
        core.item_features,
        n_positions,
        length_mean,
        sasrec.lr,
        sasrec.batch_size,
        seed,
        torch.device(device),
    )
    objective = getattr(params, "pretrain_objective", "engagement")
    if objective != "engagement" and config.history_mode != "stream":
        raise ValueError(f"algo.pretrain_objective {objective} needs model.history_mode stream")
    for _ in range(params.pretrain_epochs):
        if config.history_mode == "stream":  # each logged trajectory read once, as PPO will read them
            learner.train_sequences(examples, objective=objective)
        else:
            learner.train_epoch(examples)
    return {k: v.detach().cpu() for k, v in learner.net.encoder.state_dict().items()}
