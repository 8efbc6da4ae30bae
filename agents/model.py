"""Everything learning agents share on top of the encoder: building it from an env,
the policy/value heads over candidate scores, and a greedy numpy-in/numpy-out policy."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agents.encoder import EncoderConfig, RecommenderEncoder
from agents.lora import add_adapters
from agents.policy import slate_from_scores

# CPU-friendly defaults for RL; every EncoderConfig field can be overridden (config file `model:`).
DEFAULT_MODEL = dict(d_model=64, n_layers=2, n_heads=4, ff_mult=2)


def encoder_config(
    observation_space: Any,
    n_items: int,
    overrides: Mapping[str, Any] | None = None,
    history_feature_names: tuple[str, ...] | None = None,
    static_catalog: bool = False,
) -> EncoderConfig:
    """EncoderConfig sized from the env's single observation space, with model overrides.

    For a "stream" encoder, unless the overrides set them: `history_feature_names`
    (envs.core.history_features(scenario)) gives the days-ago column of lifetime histories
    (``days_ago_feature``), and `static_catalog` (no item feature moves: envs.config.static_catalog)
    turns on ``static_items``."""
    allowed = {f.name for f in dataclasses.fields(EncoderConfig)} - {
        "n_items",
        "history_len",
        "item_feature_dim",
        "history_feature_dim",
        "context_dim",
    }
    merged = {**DEFAULT_MODEL, **(overrides or {})}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise ValueError(f"unknown model config key '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
    if merged.get("history_mode") == "stream":
        if history_feature_names and "days_ago" in history_feature_names:
            merged.setdefault("days_ago_feature", history_feature_names.index("days_ago"))
        merged.setdefault("static_items", bool(static_catalog))
    return EncoderConfig.from_observation_space(observation_space, n_items=n_items, **merged)


class ActorCritic(nn.Module):
    """Encoder + slate head + value head.

    logits(obs) -> [B, C] for one item, or [B, K * C] (K position-specific score
    vectors, concatenated as a MultiDiscrete distribution expects) for a slate of K.
    value(state) -> [B].
    """

    # The critic's entries in the state dict (value_head.*, value_mean, value_std, value_moments): no action reads them.
    CRITIC_PREFIX = "value_"

    def __init__(
        self,
        config: EncoderConfig,
        slate_size: int = 1,
        item_features: np.ndarray | None = None,
        normalize_values: bool = False,
        scaled_logits: bool = False,
        detach_critic: bool = False,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
    ) -> None:
        super().__init__()
        self.encoder = RecommenderEncoder(config, item_features=item_features)
        if lora_rank:  # the encoder's own weights frozen; its linear layers learn low-rank updates (agents.lora)
            add_adapters(self.encoder, lora_rank, lora_alpha)
        self.encoder.keep_user = slate_size > 1 or not self.encoder.streams  # single items: logits only
        self.slate_size = slate_size
        d = config.d_model
        # Slot k scores candidates with state + query_k, so slots can learn different roles.
        self.slot_query = nn.Parameter(torch.zeros(slate_size, d)) if slate_size > 1 else None
        self.value_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))
        self.normalize_values = normalize_values
        if normalize_values:  # value = mean + std * critic output (update_value_statistics); in the state dict
            self.register_buffer("value_mean", torch.zeros(()))
            self.register_buffer("value_std", torch.ones(()))
            # Running first and second moments of the targets and their weight (update_value_statistics).
            self.register_buffer("value_moments", torch.zeros(3, dtype=torch.float64))
        self.detach_critic = detach_critic  # the value head reads the state without moving the encoder
        self.scaled_logits = scaled_logits
        if scaled_logits:  # policy logits = logit_scale * scores (set once after a warm start); in the state dict
            self.register_buffer("logit_scale", torch.ones(()))

    def forward(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """obs -> (action logits [B, C] or [B, K*C], state [B, d]). A "stream" encoder reads each
        observation afresh, as the first step of a trajectory."""
        out = self.encoder(obs)
        return self.action_logits(out), out.state

    def forward_sequence(
        self, window: Any, obs: Mapping[str, Tensor], steps: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """ "stream" encoders: a chunk of T steps from a carried window in one causal pass.
        obs [B, T, ...] -> (logits [B, T, C] or [B, T, K*C], state [B, T, d]); `steps` [B, T] bool:
        the steps to score (default all; the others' outputs are zeros)."""
        out, _ = self.encoder.forward_sequence(window, obs, steps)
        return self.action_logits(out), out.state

    def stream(self, window: Any, obs: Mapping[str, Tensor], cache: Any = None) -> tuple[Tensor, Tensor, Any]:
        """ "stream" encoders: one step from carried windows, reusing `cache` where it fits (see
        RecommenderEncoder.stream). obs [B, ...] -> (logits, state [B, d], the cache after the step)."""
        out, cache = self.encoder.stream(window, obs, cache)
        return self.action_logits(out), out.state, cache

    def action_logits(self, out: Any) -> Tensor:
        """An EncoderOutput (any leading axes [...]) -> logits [..., C], or [..., K*C] for a slate."""
        if self.slot_query is None:
            logits = out.logits
        else:
            queries = out.user[..., None, :, :] + self.slot_query[:, None, :]  # [..., K, C, d]
            logits = (queries * out.candidates[..., None, :, :]).sum(-1) / np.sqrt(out.candidates.shape[-1])
            logits = logits.flatten(-2)
        return logits * self.logit_scale if self.scaled_logits else logits

    def critic(self, state: Tensor) -> Tensor:
        """state [..., d] -> the value head's own output [...]: the value standardised by the running
        statistics of its targets where `normalize_values`, else the value itself. With `detach_critic`
        the critic's gradient stops at the state: its loss trains the value head alone."""
        return self.value_head(state.detach() if self.detach_critic else state).squeeze(-1)

    def value(self, state: Tensor) -> Tensor:
        """state [..., d] -> the value in the reward's units [...] (what GAE reads)."""
        out = self.critic(state)
        return self.value_mean + self.value_std * out if self.normalize_values else out

    def standardized(self, targets: Tensor) -> Tensor:
        """Value targets in the critic's units (the loss compares `critic` with these)."""
        return (targets - self.value_mean) / self.value_std if self.normalize_values else targets


LOGIT_SCALE_RANGE = (1e-2, 1e3)  # scale_for_entropy searches here; beyond it the logits carry no ranking


def mean_entropy(logits: Tensor, slots: int = 1) -> float:
    """logits [B, K*C] (K = `slots` categorical choices side by side) -> the mean entropy per choice, nats."""
    logp = torch.log_softmax(logits.reshape(logits.shape[0], slots, -1).double(), dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def policy_kl(logits: Tensor, reference: Tensor, slots: int = 1) -> Tensor:
    """KL(softmax(logits) || softmax(reference)) per decision, summed over its `slots` choices:
    logits, reference [..., K*C] -> [...] nats."""
    shape = (*logits.shape[:-1], slots, -1)
    logp = torch.log_softmax(logits.reshape(shape), dim=-1)
    logq = torch.log_softmax(reference.reshape(shape), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1).sum(-1)


def scale_for_entropy(logits: Tensor, target: float, slots: int = 1) -> float:
    """The positive s whose softmax(s * logits) has mean entropy `target` nats per choice (bisection on
    log s: the entropy falls as s grows), within LOGIT_SCALE_RANGE; logits [B, K*C] as mean_entropy's."""
    low, high = (math.log(x) for x in LOGIT_SCALE_RANGE)
    for _ in range(60):
        mid = (low + high) / 2
        if mean_entropy(math.exp(mid) * logits, slots) > target:
            low = mid
        else:
            high = mid
    return math.exp((low + high) / 2)


@torch.no_grad()
def calibrate_logits(
    net: ActorCritic, obs: Mapping[str, np.ndarray], target: float, slots: int = 1
) -> dict[str, float]:
    """Set `net.logit_scale` (a net built with scaled_logits) so that its policy's mean entropy per choice
    on `obs` (numpy arrays [B, ...], fresh users' first observations) is `target` nats; the scale and
    the entropy before and after. A warm-started policy ranks candidates well but softly (sasrec's scores
    are close together): sampled, it chooses almost at random, so PPO would start by exploring far from
    the ranking it was given, and its advantages would value what follows a near-random policy."""
    device = next(net.parameters()).device
    tensors = {key: torch.as_tensor(value, device=device) for key, value in obs.items()}
    net.logit_scale.fill_(1.0)
    scores = net(tensors)[0].float()
    scale = scale_for_entropy(scores, target, slots)
    net.logit_scale.fill_(scale)
    return dict(
        logit_scale=scale, entropy_before=mean_entropy(scores, slots), entropy_after=mean_entropy(scale * scores, slots)
    )


VALUE_STD_FLOOR = 1e-2  # the running std of value targets is at least this (a constant return has none)


@torch.no_grad()
def update_value_statistics(net: ActorCritic, targets: Tensor, rate: float) -> None:
    """Fold a train batch's value targets [n] (reward units) into `net`'s running mean and std, then
    rescale the value head's last layer so that every value it gives is unchanged ("preserving outputs
    precisely", PopArt: van Hasselt et al. 2016): only the units of its output move, so the loss sees
    targets of unit scale whatever the returns' scale (minutes per life discounted over days run to
    hundreds).

    The running moments are exponential averages, each batch weighing `rate`, corrected for their start
    at zero as Adam's are: after the first batch the mean and std are that batch's."""
    if not net.normalize_values:
        raise ValueError("update_value_statistics needs an ActorCritic built with normalize_values=True")
    targets = targets.detach().double()
    if targets.numel() == 0:
        return
    m = net.value_moments
    m.mul_(1.0 - rate).add_(torch.stack([targets.mean(), (targets**2).mean(), targets.new_ones(())]), alpha=rate)
    mean = m[0] / m[2]
    std = torch.sqrt(torch.clamp(m[1] / m[2] - mean**2, min=VALUE_STD_FLOOR**2))
    last = net.value_head[-1]
    old_mean, old_std = net.value_mean.double(), net.value_std.double()
    last.weight.mul_((old_std / std).to(last.weight.dtype))
    last.bias.copy_(((old_std * last.bias.double() + old_mean - mean) / std).to(last.bias.dtype))
    net.value_mean.fill_(mean.item())
    net.value_std.fill_(std.item())


def to_tensors(obs: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    return {k: torch.as_tensor(np.asarray(v), device=device) for k, v in obs.items()}


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """`module` in eval mode within, its mode restored after; a module already in eval mode throughout
    is left alone (switching walks every submodule: per served step, 8% of a lifetime evaluation's time under
    cProfile)."""
    if not any(m.training for m in module.modules()):
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@torch.no_grad()
def serve(module: nn.Module, obs: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> Any:
    """module(obs) in eval mode without gradients, for serving numpy observations; restores the mode."""
    with eval_mode(module):
        return module(to_tensors(obs, device))


class GreedyPolicy:
    """Numpy-in, numpy-out policy over an ActorCritic, for evaluation: its greedy ranking, or with
    `temperature` > 0 its choices drawn from softmax(logits / temperature) (the Gumbel-max trick, slot by
    slot without repeats; for one item exactly the softmax). The draws restart from `seed` at each `bind`
    (the harness binds before every evaluation), so each evaluation of a policy meets the same noise."""

    def __init__(
        self, model: ActorCritic, name: str, device: str = "cpu", temperature: float = 0.0, seed: int = 0
    ) -> None:
        self.model, self.name, self.device = model, name, device
        self.temperature, self.seed = float(temperature), int(seed)
        self._rng = np.random.default_rng(self.seed)

    def bind(self, env: Any) -> None:
        self._rng = np.random.default_rng(self.seed)

    def fingerprint(self) -> str:
        """A digest of what decides the served actions (agents.policy.Fingerprinted): the serving settings,
        the encoder's config and every weight and buffer of the model but the critic's (CRITIC_PREFIX)."""
        digest = hashlib.sha256(
            f"{type(self).__name__}|{self.name}|{self.temperature}|{self.seed}|{self.model.slate_size}|"
            f"{self.model.encoder.config}".encode()
        )
        for key, tensor in sorted(self.model.state_dict().items()):
            if not key.startswith(ActorCritic.CRITIC_PREFIX):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, C] the top slot's candidate logits (how the policy ranks candidates for its first slot)."""
        logits, _ = serve(self.model, obs, self.device)
        return logits.float().cpu().numpy()[:, : logits.shape[1] // self.model.slate_size]

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        logits, _ = serve(self.model, obs, self.device)
        return self.choose(logits.float().cpu().numpy())

    def choose(self, logits: np.ndarray) -> np.ndarray:
        """Logits [N, C] or [N, K*C] -> the action [N] or slate [N, K]: greedy, or sampled at the temperature."""
        if self.temperature > 0:
            logits = logits / np.float32(self.temperature) + self._rng.gumbel(size=logits.shape).astype(np.float32)
        return self.greedy(logits)

    def greedy(self, scores: np.ndarray) -> np.ndarray:
        """Logits [N, C] or [N, K*C] -> the greedy action [N] or slate [N, K]."""
        k = self.model.slate_size
        if k == 1:
            return scores.argmax(axis=1)
        # Slot by slot, each slot's best candidate not already taken.
        scores = scores.reshape(scores.shape[0], k, -1)
        taken = np.zeros((scores.shape[0], scores.shape[2]), dtype=bool)
        slate = np.empty((scores.shape[0], k), dtype=np.int64)
        rows = np.arange(scores.shape[0])
        for slot in range(k):
            s = np.where(taken, -np.inf, scores[:, slot])
            slate[:, slot] = s.argmax(axis=1)
            taken[rows, slate[:, slot]] = True
        return slate


class StreamingGreedyPolicy(GreedyPolicy):
    """GreedyPolicy over a "stream" ActorCritic that carries each slot's trajectory from step to step.

    The evaluation harness calls ``bind`` before an evaluation and ``observe`` after every step: a slot
    then continues its trajectory at the next ``act`` unless its slot was reset at that step
    (``info["served"]`` False: the observation is a new user's first). ``act`` without an ``observe``
    since the last ``act`` (any caller that does not step an env in order) reads every observation
    afresh, as a trajectory's first step, which is also what ``scores`` does.
    """

    def __init__(
        self, model: ActorCritic, name: str, device: str = "cpu", temperature: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(model, name, device, temperature, seed)
        self._window = self._cache = self._continues = None

    def bind(self, env: Any) -> None:
        super().bind(env)
        self._window = self._cache = self._continues = None

    def observe(self, obs: Any, actions: Any, rewards: Any, info: Mapping[str, Any]) -> None:
        self._continues = np.asarray(info["served"], dtype=bool)

    def _logits(self, obs: dict[str, np.ndarray]) -> Tensor:
        tensors = to_tensors(obs, self.device)
        n = tensors["history_items"].shape[0]
        history = self.model.encoder.history
        fresh = history.fresh_window(n, self.device)
        window = fresh
        if self._continues is not None and self._window is not None and len(self._continues) == n:
            window = self._window.where(torch.as_tensor(self._continues, device=self.device), fresh)
        with eval_mode(self.model), torch.no_grad():
            logits, _, self._cache = self.model.stream(window, tensors, self._cache)
        self._window, self._continues = self._cache.window, None
        return logits

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.choose(self._logits(obs).float().cpu().numpy())


__all__ = [
    "DEFAULT_MODEL",
    "encoder_config",
    "ActorCritic",
    "GreedyPolicy",
    "StreamingGreedyPolicy",
    "to_tensors",
    "serve",
    "slate_from_scores",
]
