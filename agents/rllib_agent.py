"""RLlib PPO (new API stack) on the natively batched env, with the shared encoder.

One env runner steps `num_envs_per_env_runner` users per call through
RecVectorEnv's vector entry point (NEXT_STEP autoreset); the learner runs on
the GPU when asked for. The RLModule is a thin shell around agents.model.ActorCritic.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import TrainableAgent
from agents.encoder import EncoderConfig
from agents.lora import load_warm_start
from agents.model import (
    DEFAULT_MODEL,
    ActorCritic,
    GreedyPolicy,
    StreamingGreedyPolicy,
    calibrate_logits,
    encoder_config,
    policy_kl,
    update_value_statistics,
)
from agents.warm_start import WarmStartParams, warm_start_note
from envs.config import ScenarioConfig
from simulator.params import check_bool, check_int, check_range

MAX_SEQ_LEN = 4096  # algo.max_seq_len: longer chunks make the learner's attention masks quadratic in memory
MAX_STAGGER_STEPS = 100_000  # algo.stagger_steps: a burn-in longer than any life only costs time
MAX_WORLD_REFRESH_STEPS = 10_000_000  # algo.world_refresh_steps: beyond any run's length
MAX_LORA_RANK = 4096  # algo.lora_rank: at most the encoder's width, checked against model.d_model
ANCHOR_KL_KEY = "anchor_kl"  # the learner's metric: mean KL(policy || reference) over the last minibatch
CALIBRATION_USERS = 512  # algo.warm_start_entropy: fresh users whose first observations set the logit scale
CALIBRATION_SEED = 104_729  # ... drawn from the run's seed plus this (not the training or evaluation users)
EVAL_SAMPLE_SEED = 15_485_863  # algo.eval_temperature: the draws of every evaluation start from this seed


@dataclass(frozen=True)
class PPOParams(WarmStartParams):
    """Every PPO hyperparameter in one place (override with the run config's `algo:` section).

    With `pretrain_epochs` > 0 the encoder starts from a supervised next-engagement model (sasrec,
    the same encoder) fitted for that many epochs on logged data (LogParams: log_users, log_steps,
    epsilon of the logging policy), then PPO fine-tunes it: a policy gradient alone learns to read
    a 32-item history slowly, while clicks and watch times in logs teach it quickly.

    For the first `critic_warmup_steps` env steps only the value head learns (the policy and the
    encoder it shares with the critic stay as they are): a warm-started policy is good and its fresh
    critic is not, and PPO's first updates, driven by that critic's advantages, would otherwise move
    the policy off its warm start on noise (standard when fine-tuning a pretrained policy with an
    actor-critic).

    With `freeze_history_encoder` the warm-started history Transformer stays as sasrec fitted it and
    PPO learns the rest (the candidate tower, target attention, the policy and value heads): the
    learner then runs no backward pass through the history, most of its work on the CPU.

    With `stagger_steps` (the "stream" encoder) the env runner's users do not all start their lives
    together: before the first sample each slot's user lives a uniform 0 .. stagger_steps steps under
    the warm-started policy, unrecorded (agents.rllib_stream.env_runner_class), so each train batch
    mixes life stages instead of holding N users of one age. With `warm_start_entropy` the warm-started
    policy's logits are scaled (agents.model.calibrate_logits) so that, sampled, it chooses with that mean
    entropy on fresh users, its ranking unchanged; with `anchor_coeff` the loss adds that weight times
    KL(policy || the policy as the warm start left it, frozen in the module). With `eval_temperature`
    the evaluations (validation, the best snapshot's choice, the final one) serve the policy's sampled
    choices at that temperature (1: as PPO samples them) instead of its greedy ranking. With
    `critic_trains_encoder` False the value head reads the encoder's state detached, so the value loss
    (large on lifetimes, whose calendar-discounted targets run to hundreds) no longer moves the encoder
    the policy reads: the critic fits on the policy's representation. With `world_refresh_steps` the
    training world starts afresh (a new seed: new users, the catalog's popularity and the social trend as
    in a new world) after that many of its steps, each moving every slot's user once, so training, like
    evaluation, sees worlds no older than that instead of one aged by everything served since the start
    (docs/lifetime: on long runs the training world's popularity concentrated on what the policy serves).

    The sizes left None (num_env_runners, num_envs_per_env_runner, train_batch_size, minibatch_size)
    and `lr` are chosen from the learner's device and the kind of scenario when the agent is built
    (:meth:`for_device`), as measured there (docs/benchmarks). On the CPU the sampler runs in the driver
    process: within sessions on 256 users, with batches of 8,192 in minibatches of 512 at lr 1e-3 (a
    learner step per 512 samples as before, on four times the data per iteration: on mixed it reached
    50.8 minutes in 126 s instead of 326 s, its final return level with the earlier sizes); on lifetimes
    on 64 users, with batches of 2,048 in minibatches of 512 at lr 5e-4 (the lifetime report's runs). On
    cuda env runners on every core but two, 256 users each, a train batch of what they sample in one
    round, minibatches of up to 8,192 and lr 5e-4.
    """

    num_env_runners: int | None = None  # None: from the device (cpu: 0, sample in the driver process)
    num_envs_per_env_runner: int | None = None  # users stepped per env-runner call (None: cpu 256/64, cuda 256)
    rollout_fragment_length: int = 32
    train_batch_size: int | None = None  # per learner (None: cpu 8,192 / 2,048 on lifetimes; cuda one round)
    minibatch_size: int | None = None  # None: cpu 512, cuda min(train batch, 8,192)
    num_epochs: int = 4
    lr: float | None = None  # None: from the device and the scenario (cpu sessions 1e-3, else 5e-4)
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    entropy_coeff: float = 0.01
    vf_loss_coeff: float = 0.5
    grad_clip: float = 1.0
    reward_scale: float = 0.25  # rewards are minutes; ~1 per step trains the critic better
    pretrain_epochs: int = 3  # supervised warm start of the encoder on logs (0: none; agents.warm_start)
    critic_warmup_steps: int = 0  # env steps at the start in which only the value head learns (0: none)
    freeze_history_encoder: bool = False  # keep the warm-started history Transformer fixed (needs pretrain_epochs)
    max_seq_len: int = 32  # "stream" encoders: steps per sequence the learner reads in one causal pass
    gamma_per_day: float = 0.0  # lifetimes, "stream" encoders: discount per day between steps instead of gamma (0: off)
    normalize_values: bool = False  # the critic learns targets standardised by their running statistics (PopArt)
    value_stats_rate: float = 0.1  # normalize_values: weight of each train batch in the running mean and std
    stagger_steps: int = 0  # "stream" encoders: before sampling, each slot's user lives 0..this many steps, unrecorded
    anchor_coeff: float = 0.0  # weight of KL(policy || the warm-started policy) in the loss (0: off)
    warm_start_entropy: float = 0.0  # the warm-started policy's logits scaled to this mean entropy, nats (0: off)
    eval_temperature: float = 0.0  # evaluations serve draws from softmax(logits / this) (0: the greedy ranking)
    critic_trains_encoder: bool = True  # False: the value loss trains the value head only, not the shared encoder
    world_refresh_steps: int = 0  # "stream" encoders: the training world starts afresh after this many steps (0: never)
    lora_rank: int = 0  # > 0: fine-tune the warm-started encoder through rank-r adapters only (LoRA; 0: all weights)
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank

    def __post_init__(self) -> None:
        super().__post_init__()
        o = "algo"
        for name, low, high in DEVICE_SIZES:
            if getattr(self, name) is not None:
                check_int(o, name, getattr(self, name), low, high)
        check_int(o, "rollout_fragment_length", self.rollout_fragment_length, 1)
        if self.train_batch_size is not None and self.minibatch_size is not None:
            check_int(o, "minibatch_size", self.minibatch_size, 1, self.train_batch_size)
        check_int(o, "num_epochs", self.num_epochs, 1)
        if self.lr is not None:
            check_range(o, "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range(o, "gamma", self.gamma, 0.0, 1.0)
        check_range(o, "lambda_", self.lambda_, 0.0, 1.0)
        check_range(o, "clip_param", self.clip_param, 0.0, 10.0, lo_open=True)
        check_range(o, "entropy_coeff", self.entropy_coeff, 0.0, 10.0)
        check_range(o, "vf_loss_coeff", self.vf_loss_coeff, 0.0, 100.0)
        check_range(o, "grad_clip", self.grad_clip, 0.0, lo_open=True)
        check_range(o, "reward_scale", self.reward_scale, 0.0, lo_open=True)
        check_int(o, "critic_warmup_steps", self.critic_warmup_steps, 0)
        check_bool(o, "freeze_history_encoder", self.freeze_history_encoder)
        check_int(o, "max_seq_len", self.max_seq_len, 1, MAX_SEQ_LEN)
        check_range(o, "gamma_per_day", self.gamma_per_day, 0.0, 1.0)
        check_bool(o, "normalize_values", self.normalize_values)
        check_range(o, "value_stats_rate", self.value_stats_rate, 0.0, 1.0, lo_open=True)
        check_int(o, "stagger_steps", self.stagger_steps, 0, MAX_STAGGER_STEPS)
        check_range(o, "warm_start_entropy", self.warm_start_entropy, 0.0)
        check_range(o, "anchor_coeff", self.anchor_coeff, 0.0, 100.0)
        check_range(o, "eval_temperature", self.eval_temperature, 0.0, 100.0)
        check_bool(o, "critic_trains_encoder", self.critic_trains_encoder)
        check_int(o, "world_refresh_steps", self.world_refresh_steps, 0, MAX_WORLD_REFRESH_STEPS)
        check_int(o, "lora_rank", self.lora_rank, 0, MAX_LORA_RANK)
        check_range(o, "lora_alpha", self.lora_alpha, 0.0, 1e4, lo_open=True)
        if self.lora_rank and not self.pretrain_epochs:
            raise ValueError(
                "algo.lora_rank fine-tunes the warm-started encoder through adapters: it needs the warm start "
                "(algo.pretrain_epochs > 0); without it the frozen encoder would keep its random weights"
            )
        if self.lora_rank and self.freeze_history_encoder:
            raise ValueError(
                "algo.lora_rank and algo.freeze_history_encoder are two ways to fine-tune the warm start: set one"
            )
        if self.anchor_coeff and not self.pretrain_epochs:
            raise ValueError(
                "algo.anchor_coeff keeps the policy near the warm-started one: it needs the warm start "
                "(algo.pretrain_epochs > 0)"
            )
        if self.warm_start_entropy and not self.pretrain_epochs:
            raise ValueError(
                "algo.warm_start_entropy scales the warm-started policy's logits: it needs the warm start "
                "(algo.pretrain_epochs > 0)"
            )
        if self.freeze_history_encoder and not self.pretrain_epochs:
            raise ValueError(
                "algo.freeze_history_encoder needs the warm start (algo.pretrain_epochs > 0): "
                "without it the frozen history encoder would keep its random weights"
            )

    def check_scenario(self, scenario: Any) -> None:
        """Settings the scenario cannot take (run.py's settings call it before any work)."""
        most = math.log(scenario.env.num_candidates)
        if self.warm_start_entropy >= most:
            raise ValueError(
                f"algo.warm_start_entropy must be below log(env.num_candidates) = {most:.3f} nats (a uniform "
                f"choice among {scenario.env.num_candidates}), got {self.warm_start_entropy}"
            )
        if self.gamma_per_day > 0 and not scenario.world.lifetime.enabled:
            raise ValueError(
                f"algo.gamma_per_day discounts over calendar days: {scenario.name!r} has no calendar "
                "(a lifetime scenario has); use algo.gamma"
            )

    def check_model(self, model: Mapping[str, Any]) -> None:
        """Settings the encoder (`model:` resolved) cannot take (run.py's settings call it before any work)."""
        width = model.get("d_model", DEFAULT_MODEL["d_model"])
        if self.lora_rank > width:
            raise ValueError(
                f"algo.lora_rank must be at most model.d_model = {width} (a full-rank update), got {self.lora_rank}"
            )
        if model.get("history_mode", EncoderConfig.history_mode) == "stream":
            return
        if self.gamma_per_day > 0:
            raise ValueError(
                "algo.gamma_per_day needs model.history_mode stream (its train batch carries the days); "
                "with the window encoder set algo.gamma_per_day: 0 (algo.gamma discounts per step)"
            )
        if self.stagger_steps:
            raise ValueError(
                "algo.stagger_steps needs model.history_mode stream (its env runner runs the burn-in); "
                "with the window encoder set algo.stagger_steps: 0"
            )
        if self.world_refresh_steps:
            raise ValueError(
                "algo.world_refresh_steps needs model.history_mode stream (its env runner starts the new "
                "worlds); with the window encoder set algo.world_refresh_steps: 0"
            )

    def for_device(self, device: str, cpus: int | None = None, calendar: bool = False) -> PPOParams:
        """These settings with the sizes and lr left None chosen for a learner on `device` ("cpu" or
        "cuda") on a machine of `cpus` cores (default: this one's), for a scenario with a `calendar`
        (lifetimes) or without (sessions)."""
        if device == "cuda":
            runners = (
                self.num_env_runners if self.num_env_runners is not None else max(1, (cpus or os.cpu_count() or 2) - 2)
            )
            envs = self.num_envs_per_env_runner or 256
            batch = self.train_batch_size or max(1, runners) * envs * self.rollout_fragment_length
            sizes = dict(
                num_env_runners=runners,
                num_envs_per_env_runner=envs,
                train_batch_size=batch,
                minibatch_size=self.minibatch_size or min(batch, 8192),
                lr=CUDA_LR,
            )
        else:
            sizes = dict(CPU_SIZES["lifetimes" if calendar else "sessions"])
            sizes = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in sizes.items()}
            if self.num_envs_per_env_runner is None:  # no more users than one round of a train batch set smaller
                rounds_of = max(1, sizes["train_batch_size"] // self.rollout_fragment_length)
                sizes["num_envs_per_env_runner"] = min(sizes["num_envs_per_env_runner"], rounds_of)
            sizes["minibatch_size"] = min(sizes["minibatch_size"], sizes["train_batch_size"])
        chosen = dataclasses.replace(self, **{k: v for k, v in sizes.items() if getattr(self, k) is None})
        chosen._check_rounds()
        return chosen

    def _check_rounds(self) -> None:
        """RLlib samples the train batch in whole rounds of max(1, runners) x envs x fragment env steps and
        refuses a batch that whole rounds overshoot by more than 10%: say so in one line, first."""
        runners, envs = max(1, self.num_env_runners), self.num_envs_per_env_runner
        fragment = self.rollout_fragment_length
        per_round, batch = runners * envs * fragment, self.train_batch_size
        if -(-batch // per_round) * per_round > 1.1 * batch:
            raise ValueError(
                f"algo.train_batch_size {batch:,} is not close to whole sampling rounds of "
                f"max(1, num_env_runners) x num_envs_per_env_runner x rollout_fragment_length = "
                f"{runners} x {envs} x {fragment} = {per_round:,} env steps: set train_batch_size to a multiple "
                f"of {per_round:,} or rollout_fragment_length to {max(1, batch // (runners * envs))}"
            )


# What PPOParams.for_device chooses on the CPU when left None, by kind of scenario (docs/benchmarks: the
# sessions' sizes reached mixed's 50.8 in less than half the wall time of the lifetimes' sizes, with which
# the lifetime report's runs were measured).
CPU_SIZES = {
    "sessions": dict(
        num_env_runners=0, num_envs_per_env_runner=256, train_batch_size=8192, minibatch_size=512, lr=1e-3
    ),
    "lifetimes": dict(
        num_env_runners=0, num_envs_per_env_runner=64, train_batch_size=2048, minibatch_size=512, lr=5e-4
    ),
}
CUDA_LR = 5e-4  # the H200 runs of docs/benchmarks

DEVICE_SIZES = (  # the sizes PPOParams.for_device chooses when left None: (field, lowest, highest)
    ("num_env_runners", 0, 256),
    ("num_envs_per_env_runner", 1, None),
    ("train_batch_size", 1, None),
    ("minibatch_size", 1, None),
)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_free_heap(_: Any = None) -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing). A stream
    learner's packed batches change shape from one minibatch to the next, and glibc keeps the pages they
    free scattered through the heap: resident memory grows through training without a trim
    (docs/benchmarks.md, Memory)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _rl_module_class():
    """Defined lazily: importing ray is slow and only RLlib users need it."""
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    from agents.stream import CarriedWindow

    class DriftRecRLModule(TorchRLModule, ValueFunctionAPI):
        """Policy logits = encoder state x candidate scores; value = MLP on the state.

        With a "stream" encoder the module is stateful: its RLlib state is the carried window
        (agents.stream.CarriedWindow: the last R tokens and the count read), so sampling reads one new
        token per step, continuing from keys and values cached in the module (a cache that does not
        belong to the window handed in, e.g. after a weight sync, is rebuilt from the window: same
        numbers), and learning reads each max_seq_len chunk in one causal pass from the window at
        its start.
        """

        def setup(self) -> None:
            cfg = self.model_config
            self.net = ActorCritic(
                cfg["encoder"],
                cfg["slate_size"],
                cfg["item_features"],
                cfg.get("normalize_values", False),
                cfg.get("scaled_logits", False),
                detach_critic=not cfg.get("critic_trains_encoder", True),
                lora_rank=cfg.get("lora_rank", 0),
                lora_alpha=cfg.get("lora_alpha", 16.0),
            )
            self.streams = self.net.encoder.streams
            self._cache = None  # sampling: the stream's keys and values (see agents.stream.StreamCache)
            # The policy PPO is kept near (anchor_coeff): a frozen copy, set after the warm start; in the checkpoint.
            self.reference = copy.deepcopy(self.net).requires_grad_(False) if cfg.get("anchor_coeff") else None
            if cfg.get("freeze_history", False):
                # No gradients: the optimizer skips these weights and autograd never enters the history.
                self.net.encoder.history.requires_grad_(False)
            if cfg["slate_size"] > 1:
                self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(
                    input_lens=[int(n) for n in self.action_space.nvec]
                )

        def reference_logits(self, batch: dict[str, Any]) -> Any:
            """The frozen reference policy's logits on a train batch (as _forward_train's, no autograd)."""
            with torch.no_grad():
                if self.streams:
                    window = CarriedWindow.from_state(batch[Columns.STATE_IN])
                    steps = batch.get(Columns.LOSS_MASK)
                    return self.reference.forward_sequence(window, batch[Columns.OBS], steps)[0]
                return self.reference(batch[Columns.OBS])[0]

        def get_initial_state(self) -> dict[str, Any]:
            if not self.net.encoder.streams:
                return {}
            history = self.net.encoder.history
            window = history.fresh_window(1, "cpu")
            return {key: value[0] for key, value in window.as_state().items()}

        def set_state(self, state) -> None:
            super().set_state(state)
            self._cache = None  # new weights: cached keys and values are stale

        def fresh_window(self, n: int) -> CarriedWindow:
            """Carried windows of n trajectories about to open (nothing read yet)."""
            return self.net.encoder.history.fresh_window(n, next(self.parameters()).device)

        def sample_step(self, obs: dict[str, np.ndarray], window: CarriedWindow, explore: bool) -> dict[str, Any]:
            """One step of N users in arrays (agents.rllib_stream's env runner): obs [N, ...] and their
            carried windows -> actions, their logp, the action-distribution inputs, values, and the
            windows after the step. Actions come from the module's own distribution classes, as
            RLlib's GetActions connector samples them."""
            with torch.inference_mode():
                device = next(self.parameters()).device
                tensors = {key: torch.as_tensor(value, device=device) for key, value in obs.items()}
                logits, state, self._cache = self.net.stream(window, tensors, self._cache)
                values = self.net.value(state)
                cls = self.get_exploration_action_dist_cls() if explore else self.get_inference_action_dist_cls()
                dist = cls.from_logits(logits)
                if not explore:
                    dist = dist.to_deterministic()
                actions = dist.sample()
                logp = dist.logp(actions)
            numpy = lambda x: x.float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()  # noqa: E731
            return dict(
                actions=numpy(actions),
                logp=numpy(logp),
                dist=numpy(logits),
                values=numpy(values),
                window=CarriedWindow(*(x.cpu() for x in self._cache.window)),
            )

        def _sample(self, batch: dict[str, Any], value: bool) -> dict[str, Any]:
            # Sampling and serving only (training goes through _forward_train): no autograd bookkeeping.
            with torch.inference_mode():
                if not self.streams:
                    logits, state = self.net(batch[Columns.OBS])
                    out = {Columns.ACTION_DIST_INPUTS: logits}
                else:
                    obs = {key: value[:, 0] for key, value in batch[Columns.OBS].items()}  # the time axis of 1
                    window = CarriedWindow.from_state(batch[Columns.STATE_IN])
                    logits, state, self._cache = self.net.stream(window, obs, self._cache)
                    out = {
                        Columns.ACTION_DIST_INPUTS: logits[:, None],
                        Columns.STATE_OUT: self._cache.window.as_state(),
                    }
                if value:
                    values = self.net.value(state)
                    out[Columns.VF_PREDS] = values[:, None] if self.streams else values
            return out

        def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
            return self._sample(batch, value=False)

        def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
            # Sampling also keeps each observation's value (the episodes store it as an extra model
            # output): the weights are the learner's as of its next update, so GAE reads these
            # instead of a second encoder pass over the whole train batch (see compute_values).
            return self._sample(batch, value=True)

        def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
            if self.streams:
                # Only the steps the loss reads are scored (RLlib pads each sequence to max_seq_len).
                window = CarriedWindow.from_state(batch[Columns.STATE_IN])
                logits, state = self.net.forward_sequence(window, batch[Columns.OBS], batch.get(Columns.LOSS_MASK))
            else:
                logits, state = self.net(batch[Columns.OBS])
            # The state is reused by compute_values: one encoder pass for policy and value.
            return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: state}

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None):
            if embeddings is not None:
                # The loss's call: in the critic's own units (standardised where values are normalised;
                # the learner standardises the targets alike). GAE's calls below are in reward units.
                return self.net.critic(embeddings)
            # The GAE connector's call over the whole train batch: value targets are never
            # differentiated (the loss passes the embeddings of _forward_train), and the value
            # reads the state only, so no candidate tower, target attention or autograd graph.
            # Rows sampled by this module carry their value already; only the rows RLlib appends
            # to each episode chunk to bootstrap from (loss mask off: observations never acted
            # on, so never valued at sampling; their stored value is a copy of the row before)
            # need the encoder.
            obs, stored, acted = batch[Columns.OBS], batch.get(Columns.VF_PREDS), batch.get(Columns.LOSS_MASK)
            with torch.no_grad():
                if not self.streams:
                    if stored is None or acted is None:
                        return self.net.value(self.net.encoder.encode_state(obs))
                    values = torch.as_tensor(stored, dtype=torch.float32, device=acted.device).clone()
                    fresh = ~acted.bool()
                    if fresh.any():
                        values[fresh] = self.net.value(
                            self.net.encoder.encode_state({k: v[fresh] for k, v in obs.items()})
                        )
                    return values
                window = CarriedWindow.from_state(batch[Columns.STATE_IN])
                lengths = batch[Columns.SEQ_LENS]
                real = torch.arange(obs["history_items"].shape[1], device=lengths.device) < lengths[:, None]
                if stored is None or acted is None:
                    return self.net.value(self.net.encoder.history.read(window, obs, real).state)
                values = torch.as_tensor(stored, dtype=torch.float32, device=acted.device).clone()
                fresh = real & ~acted.bool()
                if fresh.any():
                    state = self.net.encoder.history.read(window, obs, fresh).state
                    values[fresh] = self.net.value(state[fresh])
                return values

    return DriftRecRLModule


def set_reference(module: Any) -> None:
    """The reference policy of an anchored module (anchor_coeff) becomes its policy as it is now."""
    module.reference.load_state_dict(module.net.state_dict())


def _learner_class():
    """Defined lazily, like the module: PPO's torch learner with a critic-only mode."""
    import torch
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.connectors.connector_v2 import ConnectorV2
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.learner.learner import POLICY_LOSS_KEY, VF_LOSS_KEY
    from ray.rllib.evaluation.postprocessing import Postprocessing

    class DriftRecPPOLearner(PPOTorchLearner):
        """PPO's loss; while `critic_only` is set (the critic warm-up), the value loss alone, on the
        encoder state detached, so only the value head gets gradients and the policy is unchanged. A
        module that normalises values (model_config `normalize_values`) is trained on standardised
        targets, its statistics updated from each train batch (ValueStatistics, last in the pipeline)."""

        critic_only = False

        def build(self) -> None:
            super().build()
            if self._learner_connector is not None:
                self._learner_connector.append(ValueStatistics())

        def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
            module = self.module[module_id].unwrapped()
            if module.net.normalize_values:  # the targets in the critic's units (compute_values with embeddings)
                batch = dict(batch)
                batch[Postprocessing.VALUE_TARGETS] = module.net.standardized(batch[Postprocessing.VALUE_TARGETS])
            if not self.critic_only:
                loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
                coeff = float(module.model_config.get("anchor_coeff") or 0.0)
                if coeff:  # KL to the warm-started policy, over the steps the loss reads
                    slots = int(module.model_config["slate_size"])
                    kl = policy_kl(fwd_out[Columns.ACTION_DIST_INPUTS], module.reference_logits(batch), slots)
                    mask = batch.get(Columns.LOSS_MASK)
                    kl = kl[mask.bool()].mean() if mask is not None else kl.mean()
                    self.metrics.log_dict({ANCHOR_KL_KEY: kl.detach()}, key=module_id, window=1)
                    loss = loss + coeff * kl
                return loss
            values = module.compute_values(batch, embeddings=fwd_out[Columns.EMBEDDINGS].detach())
            error = (values - batch[Postprocessing.VALUE_TARGETS]) ** 2
            mask = batch.get(Columns.LOSS_MASK)  # RLlib's artificial last step of each chunk
            loss = error[mask].mean() if mask is not None else error.mean()
            self.metrics.log_dict(
                {POLICY_LOSS_KEY: torch.zeros(()), VF_LOSS_KEY: loss.detach()}, key=module_id, window=1
            )
            return loss

        def compute_gradients(self, loss_per_module, **kwargs):
            # Parameters the loss does not reach (the policy's, in critic-only mode) have no gradient;
            # RLlib's clipping and apply step expect tensors, and Adam leaves gradient-less ones alone.
            grads = super().compute_gradients(loss_per_module, **kwargs)
            return {pid: g for pid, g in grads.items() if g is not None}

    class ValueStatistics(ConnectorV2):
        """The learner pipeline's last piece: each module that normalises values folds the batch's value
        targets (reward units, the steps the loss reads) into its running statistics
        (agents.model.update_value_statistics) before the learner's epochs read them."""

        def __call__(self, *, rl_module, batch, episodes, shared_data=None, **kwargs):
            for module_id, columns in batch.items():
                module = rl_module[module_id].unwrapped()
                net = module.net
                if not net.normalize_values:
                    continue
                targets = torch.as_tensor(columns[Postprocessing.VALUE_TARGETS])
                mask = columns.get(Columns.LOSS_MASK)
                if mask is not None:
                    targets = targets[torch.as_tensor(mask, device=targets.device).bool()]
                update_value_statistics(net, targets, float(module.model_config["value_stats_rate"]))
            return batch

    return DriftRecPPOLearner


RLLIB_ENV_NAME = "driftrec-vector"
SAMPLER_FILE = "sampler.pt"  # in a checkpoint: the in-process sampler's users and carried histories


def make_rllib_env(env_config: Mapping[str, Any]):
    """Env creator for RLlib's vector entry point: env_config holds scenario, seed, reward_scale, num_envs."""
    from gymnasium.wrappers.vector import TransformReward

    from envs.vector import RecVectorEnv

    worker = int(getattr(env_config, "worker_index", 0))
    env = RecVectorEnv(
        num_envs=int(env_config["num_envs"]),
        scenario=env_config["scenario"],
        seed=int(env_config["seed"]) + 7919 * worker,
    )
    scale = float(env_config["reward_scale"])
    return TransformReward(env, lambda r: r * scale)


class RLlibPPOAgent(TrainableAgent):
    """RLlib PPO over RecVectorEnv; `device` is where the learner runs ('cpu' or 'cuda')."""

    name = "ppo"

    def __init__(
        self,
        scenario: ScenarioConfig,
        params: PPOParams = PPOParams(),
        *,
        seed: int = 0,
        device: str = "cpu",
        model: Mapping[str, Any] | None = None,
        ray_address: str | None = None,
    ) -> None:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from envs.core import RecommenderCore, history_features, static_catalog

        self.scenario, self.seed, self.device = scenario, seed, device
        if not isinstance(params, PPOParams):
            raise ValueError(f"RLlibPPOAgent.params must be PPOParams, got {type(params).__name__}")
        params = params.for_device(device, calendar=scenario.world.lifetime.enabled)
        self.params = params
        probe = RecommenderCore(scenario, 1, seed)
        self.encoder_config = encoder_config(
            probe.single_observation_space, probe.n_items, model, history_features(scenario), static_catalog(scenario)
        )
        self.item_features = probe.item_features
        self.model_overrides = dict(model or {})
        params.check_scenario(scenario)
        params.check_model({"history_mode": self.encoder_config.history_mode, "d_model": self.encoder_config.d_model})
        p = self.params
        if not ray.is_initialized():
            if ray_address:
                ray.init(address=ray_address)
            else:
                ray.init(num_cpus=max(2, p.num_env_runners + 1), include_dashboard=False, log_to_driver=False)
        from ray.tune.registry import register_env

        register_env(RLLIB_ENV_NAME, make_rllib_env)  # known to remote env runners too
        config = (
            PPOConfig()
            .environment(
                env=RLLIB_ENV_NAME,
                env_config=dict(scenario=scenario, seed=seed, reward_scale=p.reward_scale),
                disable_env_checking=True,
            )
            .env_runners(
                num_env_runners=p.num_env_runners,
                num_envs_per_env_runner=p.num_envs_per_env_runner,
                rollout_fragment_length=p.rollout_fragment_length,
                gym_env_vectorize_mode="vector_entry_point",
                num_cpus_per_env_runner=1,
                **self._stream_runner(),
            )
            .learners(
                num_learners=0,
                num_gpus_per_learner=1 if device == "cuda" else 0,
                learner_class=_learner_class(),
                **self._stream_batch(),
            )
            .training(
                train_batch_size_per_learner=p.train_batch_size,
                minibatch_size=p.minibatch_size,
                num_epochs=p.num_epochs,
                lr=p.lr,
                gamma=p.gamma,
                lambda_=p.lambda_,
                clip_param=p.clip_param,
                entropy_coeff=p.entropy_coeff,
                vf_loss_coeff=p.vf_loss_coeff,
                vf_clip_param=1e6,
                grad_clip=p.grad_clip,
                use_kl_loss=False,
            )
            .rl_module(
                rl_module_spec=RLModuleSpec(
                    module_class=_rl_module_class(),
                    model_config=dict(
                        encoder=self.encoder_config,
                        slate_size=scenario.env.slate_size,
                        item_features=self.item_features,
                        freeze_history=p.freeze_history_encoder,
                        max_seq_len=p.max_seq_len,
                        normalize_values=p.normalize_values,
                        value_stats_rate=p.value_stats_rate,
                        scaled_logits=p.warm_start_entropy > 0,
                        anchor_coeff=p.anchor_coeff,
                        critic_trains_encoder=p.critic_trains_encoder,
                        lora_rank=p.lora_rank,
                        lora_alpha=p.lora_alpha,
                    ),
                )
            )
            .reporting(metrics_num_episodes_for_smoothing=100)
            .debugging(seed=seed, log_level="ERROR")
        )
        self.algo = config.build_algo()
        # Learning timed apart from sampling: RLlib's own timers are smoothed (EMA), not per-iteration sums.
        self._learn_s = 0.0
        update = self.algo.learner_group.update

        def timed_update(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return update(*args, **kwargs)
            finally:
                self._learn_s += time.perf_counter() - start

        self.algo.learner_group.update = timed_update
        self._env_steps = 0
        self._pretrained = False
        self._calibration = None  # the logit scale set after the warm start, reported with its iteration
        # Serving only: in eval mode once, rather than switched at every served step (agents.model.eval_mode).
        self._eval_net = ActorCritic(
            self.encoder_config,
            scenario.env.slate_size,
            self.item_features,
            self.params.normalize_values,
            self.params.warm_start_entropy > 0,
            lora_rank=self.params.lora_rank,
            lora_alpha=self.params.lora_alpha,
        ).eval()

    @property
    def env_steps(self) -> int:
        return self._env_steps

    def _stream_runner(self) -> dict[str, Any]:
        """ "stream" encoders: the env runner that samples in arrays (agents.rllib_stream)."""
        if self.encoder_config.history_mode != "stream":
            return {}
        from agents.rllib_stream import env_runner_class

        return dict(env_runner_cls=env_runner_class(self.params.stagger_steps, self.params.world_refresh_steps))

    def _stream_batch(self) -> dict[str, Any]:
        """ "stream" encoders: the train batch built in arrays (agents.rllib_stream) instead of RLlib's
        per-episode default pipeline."""
        if self.encoder_config.history_mode != "stream":
            return {}
        from agents.rllib_stream import train_batch_connector

        p = self.params
        calendar = {}
        if p.gamma_per_day > 0:
            from envs.core import context_features

            calendar = dict(
                gamma_per_day=p.gamma_per_day,
                horizon_days=self.scenario.world.lifetime.horizon_days,
                progress_column=context_features(self.scenario).index("progress"),
            )
        connector = train_batch_connector(p.gamma, p.lambda_, **calendar)
        return dict(
            learner_connector=lambda *args, **kwargs: connector(), add_default_connectors_to_learner_pipeline=False
        )

    def pretrain(self) -> None:
        """Warm-start the encoder (agents.warm_start): sasrec's encoder fitted on logs of the training
        scenario goes into the learner's module, and the env runners are synced. Runs before the first
        iteration of a fresh run (a resumed run has its trained weights)."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        from agents.warm_start import pretrain_encoder

        # On the learner's device: on cuda the warm start is a GPU job too.
        state = pretrain_encoder(self.scenario, self.params, self.model_overrides, self.seed, self.device)
        self.algo.learner_group.foreach_learner(
            lambda learner: load_warm_start(learner.module[DEFAULT_MODULE_ID].net.encoder, state)
        )
        if self.params.warm_start_entropy:
            obs = self._calibration_observations()
            target, slots = self.params.warm_start_entropy, self.scenario.env.slate_size
            (result,) = self.algo.learner_group.foreach_learner(
                lambda learner: calibrate_logits(learner.module[DEFAULT_MODULE_ID].net, obs, target, slots)
            )
            self._calibration = result.get()
        if self.params.anchor_coeff:  # the policy as the warm start (and the logit scale) left it
            self.algo.learner_group.foreach_learner(lambda learner: set_reference(learner.module[DEFAULT_MODULE_ID]))
        self.algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.algo.learner_group, inference_only=True, timeout_seconds=None
        )
        self._pretrained = True

    def _calibration_observations(self) -> dict[str, np.ndarray]:
        """First observations of CALIBRATION_USERS fresh users of the training scenario (own seed)."""
        from envs.vector import RecVectorEnv

        env = RecVectorEnv(num_envs=CALIBRATION_USERS, scenario=self.scenario, seed=self.seed + CALIBRATION_SEED)
        return env.reset()[0]

    @property
    def warm_start_pending(self) -> str:
        """What the first iteration's warm start will do ("" when none is due)."""
        p = self.params
        if not p.pretrain_epochs or self._env_steps or self._pretrained:
            return ""
        return warm_start_note(p)

    def train_iteration(self) -> dict[str, float]:
        """One PPO iteration (sampling, then the learner's update); the first of a fresh run warm-starts
        the encoder first (pretrain_s). iteration_s excludes the warm start; learn_s is the update."""
        pretrain_s = np.nan
        if self.params.pretrain_epochs and self._env_steps == 0 and not self._pretrained:
            start = time.perf_counter()
            self.pretrain()
            pretrain_s = time.perf_counter() - start
        critic_only = self._env_steps < self.params.critic_warmup_steps  # from env steps: a resumed run agrees
        self.algo.learner_group.foreach_learner(lambda learner: setattr(learner, "critic_only", critic_only))
        self._learn_s = 0.0
        start = time.perf_counter()
        result = self.algo.train()
        self.algo.learner_group.foreach_learner(return_free_heap)  # in the learners' processes
        elapsed = time.perf_counter() - start
        runners = result.get("env_runners", {})
        learner = result.get("learners", {}).get("default_policy", {})
        steps = int(runners.get("num_env_steps_sampled", 0))
        self._env_steps += steps
        scale = self.params.reward_scale
        get = lambda d, k: float(d.get(k, np.nan))  # noqa: E731
        return dict(
            episode_return_mean=get(runners, "episode_return_mean") / scale,
            episode_len_mean=get(runners, "episode_len_mean"),
            policy_loss=get(learner, "policy_loss"),
            value_loss=get(learner, "vf_loss"),
            entropy=get(learner, "entropy"),
            env_steps_per_s=steps / elapsed if elapsed > 0 else np.nan,
            env_steps=float(self._env_steps),
            iteration_s=elapsed,
            sample_s=elapsed - self._learn_s,  # sampling, plus RLlib's bookkeeping and the weight sync
            learn_s=self._learn_s,
            pretrain_s=pretrain_s,
            critic_only=float(critic_only),
            **({"anchor_kl": get(learner, ANCHOR_KL_KEY)} if self.params.anchor_coeff else {}),
            **self._calibration_metrics(),
            **self._world_metrics(),
        )

    def _world_metrics(self) -> dict[str, float]:
        """The training world's population state, which the fresh worlds of evaluations do not share:
        `world_top10_popularity`, the share of the catalog's popularity held by its ten most popular items
        (it moves with what the policy serves where `catalog.popularity_memory`; docs/lifetime). Only where
        the sampler runs in this process (num_env_runners 0)."""
        if self.params.num_env_runners or not self.scenario.world.catalog.popularity_memory:
            return {}
        core = self.algo.env_runner.env.unwrapped.core
        popularity = core.world.popularity
        return {"world_top10_popularity": float(np.sort(popularity)[-10:].sum() / popularity.sum())}

    def _calibration_metrics(self) -> dict[str, float]:
        """The warm start's logit scale and the policy's entropy before and after it (its iteration only)."""
        done, self._calibration = self._calibration, None
        if not done:
            return {}
        return {f"warm_start_{key}": value for key, value in done.items()}

    def policy(self) -> GreedyPolicy:
        module = self.algo.get_module()
        state = {k: v.detach().cpu() for k, v in module.net.state_dict().items()}
        self._eval_net.load_state_dict(state)
        cls = StreamingGreedyPolicy if self._eval_net.encoder.streams else GreedyPolicy
        return cls(self._eval_net, self.name, temperature=self.params.eval_temperature, seed=EVAL_SAMPLE_SEED)

    def _sampler(self) -> Any:
        """The env runner sampling in this process that keeps users' trajectories across iterations (the
        batched runner of "stream" encoders, with num_env_runners 0), else None."""
        runner = getattr(self.algo, "env_runner", None)
        return runner if hasattr(runner, "sampling_state") and self.params.num_env_runners == 0 else None

    def save(self, path: Path) -> None:
        path = Path(path).resolve()
        path.mkdir(parents=True, exist_ok=True)
        self.algo.save_to_path(str(path / "algorithm"))
        runner = self._sampler()
        if runner is not None:  # the users being sampled and their carried histories: a resume goes on with them
            import torch

            torch.save(runner.sampling_state(), path / SAMPLER_FILE)
        (path / "agent.json").write_text(json.dumps(self._signature() | {"env_steps": self._env_steps}))

    def restore(self, path: Path) -> None:
        path = Path(path).resolve()
        meta = path / "agent.json"
        if not meta.is_file() or not (path / "algorithm").is_dir():
            raise ValueError(f"no PPO checkpoint at {path} (expected agent.json and algorithm/)")
        try:
            saved = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta} is not valid JSON ({err}): a truncated or corrupted checkpoint") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("env_steps"), int):
            raise ValueError(f"{meta} lacks env_steps: not a driftrec PPO checkpoint")
        mismatch = {k: (saved.get(k), v) for k, v in self._signature().items() if saved.get(k) != v}
        if mismatch:
            raise ValueError(
                f"checkpoint at {path} is incompatible with this run: "
                + ", ".join(f"{k} saved={a!r} now={b!r}" for k, (a, b) in mismatch.items())
            )
        try:
            self.algo.restore_from_path(str(path / "algorithm"))
        except Exception as err:  # a truncated pickle or foreign files: RLlib's errors name no file
            raise ValueError(
                f"cannot restore the PPO checkpoint in {path / 'algorithm'}: {type(err).__name__}: {err}"
            ) from None
        # Restoring into a live algorithm (run.py --keep-best at the end of training) updates its learner
        # but not what samples and serves: the env runners skip weights whose sequence number is older
        # than theirs, and the snapshot's is. So load the restored weights into them directly.
        weights = self.learner_weights()
        self.algo.env_runner_group.foreach_env_runner(lambda runner: runner.module.net.load_state_dict(weights))
        self._env_steps = int(saved["env_steps"])
        runner, sampler = self._sampler(), path / SAMPLER_FILE
        if runner is not None and sampler.is_file():
            import torch

            try:
                state = torch.load(sampler, weights_only=False)
                runner.load_sampling_state(state)
            except Exception as err:  # a truncated or foreign file
                raise ValueError(
                    f"cannot restore the sampler state in {sampler}: {type(err).__name__}: {err}"
                ) from None

    def learner_weights(self) -> dict[str, Any]:
        """A CPU copy of the learner's network weights (what trains; policy() holds what serves)."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        (result,) = self.algo.learner_group.foreach_learner(
            lambda learner: {
                k: v.detach().cpu().clone() for k, v in learner.module[DEFAULT_MODULE_ID].net.state_dict().items()
            }
        )
        return result.get()

    def _signature(self) -> dict[str, Any]:
        """What must match between a checkpoint and the agent restoring it."""
        return dict(
            agent=self.name,
            n_items=self.encoder_config.n_items,
            encoder=json.loads(json.dumps(dataclasses.asdict(self.encoder_config))),
            slate_size=self.scenario.env.slate_size,
        )

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params) | {
            f"model.{k}": v for k, v in dataclasses.asdict(self.encoder_config).items()
        }

    def close(self) -> None:
        self.algo.stop()
