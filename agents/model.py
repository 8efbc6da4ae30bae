"""Everything learning agents share on top of the encoder: building it from an env,
the policy/value heads over candidate scores, and a greedy numpy-in/numpy-out policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agents.encoder import EncoderConfig, RecommenderEncoder
from agents.policy import slate_from_scores

# CPU-friendly defaults for RL; every EncoderConfig field can be overridden (config file `model:`).
DEFAULT_MODEL = dict(d_model=64, n_layers=2, n_heads=4, ff_mult=2)


def encoder_config(observation_space: Any, n_items: int, overrides: Mapping[str, Any] | None = None) -> EncoderConfig:
    """EncoderConfig sized from the env's single observation space, with model overrides."""
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
    return EncoderConfig.from_observation_space(observation_space, n_items=n_items, **merged)


class ActorCritic(nn.Module):
    """Encoder + slate head + value head.

    logits(obs) -> [B, C] for one item, or [B, K * C] (K position-specific score
    vectors, concatenated as a MultiDiscrete distribution expects) for a slate of K.
    value(state) -> [B].
    """

    def __init__(self, config: EncoderConfig, slate_size: int = 1, item_features: np.ndarray | None = None) -> None:
        super().__init__()
        self.encoder = RecommenderEncoder(config, item_features=item_features)
        self.slate_size = slate_size
        d = config.d_model
        # Slot k scores candidates with state + query_k, so slots can learn different roles.
        self.slot_query = nn.Parameter(torch.zeros(slate_size, d)) if slate_size > 1 else None
        self.value_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))

    def forward(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """obs -> (action logits [B, C] or [B, K*C], state [B, d])."""
        out = self.encoder(obs)
        if self.slot_query is None:
            return out.logits, out.state
        queries = out.user[:, None] + self.slot_query[None, :, None, :]  # [B, K, C, d]
        logits = (queries * out.candidates[:, None]).sum(-1) / np.sqrt(out.candidates.shape[-1])  # [B, K, C]
        return logits.reshape(logits.shape[0], -1), out.state

    def value(self, state: Tensor) -> Tensor:
        return self.value_head(state).squeeze(-1)


def to_tensors(obs: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    return {k: torch.as_tensor(np.asarray(v), device=device) for k, v in obs.items()}


@torch.no_grad()
def serve(module: nn.Module, obs: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> Any:
    """module(obs) in eval mode without gradients, for serving numpy observations; restores the mode."""
    was_training = module.training
    module.eval()
    try:
        return module(to_tensors(obs, device))
    finally:
        module.train(was_training)


class GreedyPolicy:
    """Numpy-in, numpy-out greedy policy over an ActorCritic (evaluation; no exploration)."""

    def __init__(self, model: ActorCritic, name: str, device: str = "cpu") -> None:
        self.model, self.name, self.device = model, name, device

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, C] the top slot's candidate logits (how the policy ranks candidates for its first slot)."""
        logits, _ = serve(self.model, obs, self.device)
        return logits.float().cpu().numpy()[:, : logits.shape[1] // self.model.slate_size]

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        logits, _ = serve(self.model, obs, self.device)
        k = self.model.slate_size
        scores = logits.float().cpu().numpy()
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


__all__ = ["DEFAULT_MODEL", "encoder_config", "ActorCritic", "GreedyPolicy", "to_tensors", "serve", "slate_from_scores"]
