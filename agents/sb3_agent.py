"""stable-baselines3 PPO on the batched simulator, with the shared encoder.

SB3's stock policies put a fixed-size `action_net` on top of a features
extractor. Here the action logits are the encoder's state-by-candidate scores
(agents.model.ActorCritic), so `CandidateScoringPolicy` replaces the MLP
extractor / action_net / value_net with that one module and keeps SB3's
distributions, rollout buffer and PPO loss unchanged.

Data flow per PPO iteration (B = num_envs users, C candidates, K slate size):
    SB3VecEnv (SAME_STEP autoreset) -> VecMonitor (episode stats) -> PPO.collect_rollouts
    obs dict [B, ...] -> ActorCritic -> logits [B, C] (Discrete) or [B, K*C] (MultiDiscrete),
                                        value [B, 1]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.vec_env import VecMonitor

from agents.base import TrainableAgent
from agents.model import ActorCritic, GreedyPolicy, encoder_config
from agents.warm_start import WarmStartParams, pretrain_encoder, warm_start_note
from envs.config import ScenarioConfig
from envs.sb3 import SB3VecEnv
from simulator.params import check_int, check_range

CHECKPOINT_FILE = "sb3_ppo.zip"

# EncoderConfig fields that give the weights their meaning: a checkpoint must agree on all of them
# (n_heads changes no tensor shape, so load_state_dict alone would not catch it).
_ARCH_FIELDS = (
    "n_items",
    "history_len",
    "item_feature_dim",
    "history_feature_dim",
    "context_dim",
    "d_model",
    "n_layers",
    "n_heads",
    "ff_mult",
)


@dataclass(frozen=True)
class SB3PPOParams(WarmStartParams):
    """Every SB3 PPO hyperparameter in one place (override with the run config's `algo:` section).

    One iteration collects num_envs * n_steps transitions, then runs n_epochs passes of
    minibatches of batch_size over them. With `pretrain_epochs` > 0 the encoder starts from sasrec's
    fitted for that many epochs on logged data (WarmStartParams: log_users, log_steps, epsilon of the
    logging policy; agents.warm_start, as RLlib PPO's), then PPO fine-tunes it; 0 (the default): from
    its initial weights.
    """

    num_envs: int = 64  # users stepped per env call (SB3's n_envs)
    n_steps: int = 32  # rollout length per user per iteration
    batch_size: int = 512  # minibatch size
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        o = "algo"
        check_int(o, "num_envs", self.num_envs, 1, 1_000_000)
        check_int(o, "n_steps", self.n_steps, 1)
        # SB3 asserts batch_size > 1 (advantage normalisation) and truncates a minibatch larger than the rollout.
        check_int(o, "batch_size", self.batch_size, 2, self.num_envs * self.n_steps)
        check_int(o, "n_epochs", self.n_epochs, 1)
        check_range(o, "learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        check_range(o, "gamma", self.gamma, 0.0, 1.0)
        check_range(o, "gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range(o, "clip_range", self.clip_range, 0.0, 10.0, lo_open=True)
        check_range(o, "ent_coef", self.ent_coef, 0.0, 10.0)
        check_range(o, "vf_coef", self.vf_coef, 0.0, 100.0)
        check_range(o, "max_grad_norm", self.max_grad_norm, 0.0, lo_open=True)


class CandidateScoringPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose logits are ActorCritic's candidate scores (no fixed output layer).

    Extra constructor arguments (pass through `policy_kwargs`):
      n_items:         catalog size (id embedding rows)
      slate_size:      K; must match the action space (Discrete: 1, MultiDiscrete: len(nvec))
      item_features:   the catalog feature table [n_items, F_item] (core.item_features)
      model_overrides: EncoderConfig overrides (the run config's `model:` section)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *,
        n_items: int,
        slate_size: int,
        item_features: np.ndarray | None = None,
        model_overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        expected_k = 1 if isinstance(action_space, spaces.Discrete) else len(getattr(action_space, "nvec", ()))
        if slate_size != expected_k:
            raise ValueError(f"slate_size={slate_size} does not match the action space {action_space}")
        # Set before super().__init__, which calls _build() (plain attributes are fine on an
        # nn.Module before Module.__init__).
        self.n_items = int(n_items)
        self.slate_size = int(slate_size)
        self.item_features = item_features
        self.model_overrides = dict(model_overrides or {})
        # The stock features extractor (a parameter-free FlattenExtractor) still gets built by
        # SB3's constructor; it is never called.
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        """Create the ActorCritic and the optimizer (instead of mlp_extractor/action_net/value_net)."""
        config = encoder_config(self.observation_space, self.n_items, self.model_overrides)
        self.net = ActorCritic(config, self.slate_size, self.item_features)
        # No orthogonal init: the encoder has its own (GPT-style) initialisation.
        # self.parameters() is exactly the ActorCritic's parameters (the flatten extractor has none).
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            n_items=self.n_items,
            slate_size=self.slate_size,
            item_features=self.item_features,
            model_overrides=self.model_overrides,
        )
        return data

    # ------------------------------------------------------------------ helpers
    def _obs(self, obs: PyTorchObs) -> dict[str, torch.Tensor]:
        # SB3's preprocessing: every Box becomes float32 (ids too; the encoder rounds them back).
        return preprocess_obs(obs, self.observation_space, normalize_images=False)  # type: ignore[return-value]

    def _distribution(self, logits: torch.Tensor) -> Distribution:
        # Categorical over [B, C], or MultiCategorical splitting [B, K*C] into K blocks of C.
        return self.action_dist.proba_distribution(action_logits=logits)

    # ------------------------------------------------------------------ SB3 API
    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs -> actions [B] or [B, K], values [B, 1], log_prob [B] (rollout collection)."""
        logits, state = self.net(self._obs(obs))
        distribution = self._distribution(logits)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        values = self.net.value(state).unsqueeze(-1)  # SB3 expects [B, 1]
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs, actions [B] / [B, K] -> values [B, 1], log_prob [B], entropy [B] (PPO loss)."""
        logits, state = self.net(self._obs(obs))
        distribution = self._distribution(logits)
        return self.net.value(state).unsqueeze(-1), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        logits, _ = self.net(self._obs(obs))
        return self._distribution(logits)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """obs -> values [B, 1] (bootstrapping); the state alone, no candidate tower pass."""
        return self.net.value(self.net.encoder.encode_state(self._obs(obs))).unsqueeze(-1)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)


class RolloutClock(BaseCallback):
    """Times SB3's rollout collection within learn(), so that sampling and learning are timed apart."""

    def __init__(self) -> None:
        super().__init__()
        self.sample_s, self._start = 0.0, 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.sample_s = time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


class SB3PPOAgent(TrainableAgent):
    """stable-baselines3 PPO over SB3VecEnv; `device` is where the policy trains ('cpu' or 'cuda')."""

    name = "sb3-ppo"

    def __init__(
        self,
        scenario: ScenarioConfig,
        params: SB3PPOParams = SB3PPOParams(),
        *,
        seed: int = 0,
        device: str = "cpu",
        model: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(params, SB3PPOParams):
            raise ValueError(f"SB3PPOAgent.params must be SB3PPOParams, got {type(params).__name__}")
        self.scenario, self.seed, self.device = scenario, seed, device
        self.params = params
        self.model_overrides = dict(model or {})
        p = self.params
        vec_env = SB3VecEnv(p.num_envs, scenario, seed=seed)
        core = vec_env.core
        # Validates the model overrides before SB3 builds anything.
        self.encoder_config = encoder_config(core.single_observation_space, core.n_items, model)
        self.item_features = core.item_features
        self.env = VecMonitor(vec_env)  # fills model.ep_info_buffer with finished episodes
        self.model = PPO(
            CandidateScoringPolicy,
            self.env,
            learning_rate=p.learning_rate,
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            n_epochs=p.n_epochs,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            clip_range=p.clip_range,
            ent_coef=p.ent_coef,
            vf_coef=p.vf_coef,
            max_grad_norm=p.max_grad_norm,
            policy_kwargs=dict(
                n_items=core.n_items,
                slate_size=scenario.env.slate_size,
                item_features=core.item_features,
                model_overrides=dict(model or {}),
            ),
            seed=seed,
            device=device,
            verbose=0,
        )
        # Without a custom logger, every learn() call builds a new one, and with verbose=0 that
        # still creates an empty /tmp/SB3-<timestamp> folder. One output-less logger instead.
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        # Serving only: in eval mode once, rather than switched at every served step (agents.model.eval_mode).
        self._eval_net = ActorCritic(self.encoder_config, scenario.env.slate_size, self.item_features).eval()
        self._clock = RolloutClock()
        self._pretrained = False

    @property
    def env_steps(self) -> int:
        return int(self.model.num_timesteps)

    def pretrain(self) -> None:
        """Warm-start the encoder (agents.warm_start): sasrec's encoder fitted on logs of the training
        scenario replaces the policy's. Runs before the first iteration of a fresh run (a resumed run
        has its trained weights)."""
        state = pretrain_encoder(self.scenario, self.params, self.model_overrides, self.seed, self.device)
        self.model.policy.net.encoder.load_state_dict(state)  # in place: the optimizer keeps its parameters
        self._pretrained = True

    @property
    def warm_start_pending(self) -> str:
        """What the first iteration's warm start will do ("" when none is due)."""
        if not self.params.pretrain_epochs or self.env_steps or self._pretrained:
            return ""
        return warm_start_note(self.params)

    def train_iteration(self) -> dict[str, float]:
        """One rollout of num_envs * n_steps transitions, then one PPO update; returns scalars. The first
        iteration of a fresh run warm-starts the encoder first (pretrain_s; iteration_s excludes it)."""
        p = self.params
        pretrain_s = np.nan
        if self.warm_start_pending:
            start = time.perf_counter()
            self.pretrain()
            pretrain_s = time.perf_counter() - start
        logger = self.model.logger
        logger.dump()  # clear leftovers: a value missing after learn() reads as NaN, never stale
        steps_before = self.model.num_timesteps
        start = time.perf_counter()
        # With reset_num_timesteps=False, learn() runs until num_timesteps grows by this much:
        # exactly one collect_rollouts + train. Inside learn(), SB3 dumps (clears) the logger
        # after collecting and before train(), so train/* below are this update's values.
        self.model.learn(total_timesteps=p.num_envs * p.n_steps, reset_num_timesteps=False, callback=self._clock)
        elapsed = time.perf_counter() - start
        values = dict(logger.name_to_value)  # a defaultdict(float): .get avoids silent zeros
        get = lambda key: float(values.get(key, np.nan))  # noqa: E731
        episodes = list(self.model.ep_info_buffer or [])  # last 100 finished episodes (VecMonitor)
        steps = self.model.num_timesteps - steps_before
        return dict(
            episode_return_mean=float(np.mean([e["r"] for e in episodes])) if episodes else np.nan,
            episode_len_mean=float(np.mean([e["l"] for e in episodes])) if episodes else np.nan,
            policy_loss=get("train/policy_gradient_loss"),
            value_loss=get("train/value_loss"),
            entropy=-get("train/entropy_loss"),  # SB3 logs the entropy loss, -mean(entropy)
            approx_kl=get("train/approx_kl"),
            clip_fraction=get("train/clip_fraction"),
            env_steps_per_s=steps / elapsed if elapsed > 0 else np.nan,
            env_steps=float(self.model.num_timesteps),
            iteration_s=elapsed,
            sample_s=self._clock.sample_s,  # collect_rollouts (with the advantages)
            learn_s=elapsed - self._clock.sample_s,  # the PPO update
            pretrain_s=pretrain_s,
        )

    def policy(self) -> GreedyPolicy:
        """A CPU snapshot of the current weights as a greedy policy."""
        state = {k: v.detach().cpu() for k, v in self.model.policy.net.state_dict().items()}
        self._eval_net.load_state_dict(state)
        return GreedyPolicy(self._eval_net, self.name)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # Policy + optimizer state dicts, spaces, policy_kwargs and counters (not the env).
        self.model.save(path / CHECKPOINT_FILE)

    def restore(self, path: Path) -> None:
        file = Path(path) / CHECKPOINT_FILE
        if not file.is_file():
            raise ValueError(f"no SB3 PPO checkpoint at {file}")
        try:
            data, params, _ = load_from_zip_file(file, device=self.model.device)
        except Exception as err:  # a truncated zip or foreign file: SB3's errors name no file
            raise ValueError(f"cannot read the SB3 PPO checkpoint {file}: {type(err).__name__}: {err}") from None
        if not data or not params:
            raise ValueError(f"SB3 PPO checkpoint at {file} holds no data or parameters")
        problems = []
        for key in ("observation_space", "action_space"):
            if data.get(key) != getattr(self.model, key):
                problems.append(f"{key} saved={data.get(key)} now={getattr(self.model, key)}")
        saved_kwargs = data.get("policy_kwargs", {})
        if not problems:
            saved_arch = encoder_config(
                data["observation_space"], saved_kwargs.get("n_items"), saved_kwargs.get("model_overrides")
            )
            for name in _ARCH_FIELDS:
                a, b = getattr(saved_arch, name), getattr(self.encoder_config, name)
                if a != b:
                    problems.append(f"model.{name} saved={a} now={b}")
        if problems:
            raise ValueError(f"checkpoint at {file} is incompatible with this agent: " + "; ".join(problems))
        try:
            # Loads "policy" (strict) and "policy.optimizer" into this agent's PPO; env and logger stay.
            self.model.set_parameters(params, exact_match=True, device=self.model.device)
        except RuntimeError as err:  # load_state_dict shape/key mismatch
            raise ValueError(f"checkpoint at {file} is incompatible with this agent: {err}") from err
        self.model.num_timesteps = int(data["num_timesteps"])
        self.model._n_updates = int(data.get("_n_updates", 0))
        self.model._episode_num = int(data.get("_episode_num", 0))

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params) | {
            f"model.{k}": v for k, v in dataclasses.asdict(self.encoder_config).items()
        }

    def close(self) -> None:
        self.env.close()


__all__ = ["SB3PPOParams", "CandidateScoringPolicy", "SB3PPOAgent", "CHECKPOINT_FILE"]
