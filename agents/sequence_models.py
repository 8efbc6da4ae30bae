"""The supervised sequence models and how they are fitted.

Two models predict the engagement of showing an item to a user from the user's padded interaction
history (the same observation the RL agents get):

- ``sasrec``:  the project's Transformer :class:`~agents.encoder.RecommenderEncoder`
  (a SASRec-style next-engagement model);
- ``gru4rec``: the same token embeddings (``HistoryEncoder.embed``), but a GRU
  instead of the Transformer blocks.

Both have two heads over (state, candidate) pairs (`EngagementModel`): a click logit, trained with
binary cross-entropy, and the watch time given a click (softplus, in units of the catalog's mean item
length), trained by squared error on clicked rows. `EngagementLearner` fits one on training examples;
the supervised recommender (agents.supervised) serves it and the PPO agents' warm start
(agents.warm_start) reads its encoder.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.encoder import EncoderConfig, HistoryEncoder, RecommenderEncoder
from agents.training_examples import HISTORY_KEYS, ExampleChain, Examples

KINDS = ("sasrec", "gru4rec")


class GRUHistoryEncoder(HistoryEncoder):
    """GRU4Rec-style history encoder: the tokens of ``HistoryEncoder.embed`` fed to a GRU.

    Token t = item-id embedding + proj(item features) + proj(responses) + position, as
    for the Transformer; the CLS token (+ proj(context)) is the initial hidden state.
    One GRU cell replaces the Transformer blocks (``n_layers``/``n_heads`` are unused);
    padded steps leave the hidden state unchanged, so an empty history gives the
    CLS/context state. forward(obs) -> state [B, d_model].
    """

    def __init__(
        self,
        config: EncoderConfig,
        item_embedding: nn.Embedding | None = None,
        item_features: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__(config, item_embedding=item_embedding, item_features=item_features)
        self.stack = nn.GRUCell(config.d_model, config.d_model)

    def encode_tokens(self, tokens: Tensor, key_mask: Tensor) -> Tensor:
        """tokens [B, 1 + H, d] (CLS first), key_mask bool [B, 1 + H] -> state [B, d]."""
        state = tokens[:, 0]
        for t in range(1, tokens.shape[1]):
            state = torch.where(key_mask[:, t, None], self.stack(tokens[:, t], state), state)
        return self.final_norm(state)


PRETRAIN_OBJECTIVES = ("engagement", "next_item")  # EngagementLearner.train_sequences


class EngagementModel(nn.Module):
    """History encoder + item tower with a click head and a watch-time head.

    forward(obs, positions) -> (click_logit [B, C], watch [B, C]): the click logit of
    showing candidate c at slate position ``positions[b, c]`` (all top-slot when None),
    and E[watch time | click] > 0 in units of the catalog's mean item length.
    """

    def __init__(self, kind: str, config: EncoderConfig, item_features: np.ndarray | None, n_positions: int) -> None:
        super().__init__()
        self.encoder = RecommenderEncoder(config, item_features=item_features)
        if kind == "gru4rec":
            self.encoder.history = GRUHistoryEncoder(config, self.encoder.item_tower.item_embedding, item_features)
        d = config.d_model
        self.click_bias = nn.Parameter(torch.zeros(()))
        self.position_bias = nn.Parameter(torch.zeros(n_positions))  # position bias of the logged slates
        self.watch_query = nn.Linear(d, d)
        self.watch_bias = nn.Parameter(torch.zeros(()))  # softplus(0) = 0.69 mean lengths: a fair start

    def forward(self, obs: Mapping[str, Tensor], positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._heads(self.encoder(obs), positions)

    def forward_sequence(
        self, window: Any, obs: Mapping[str, Tensor], positions: Tensor, steps: Tensor
    ) -> tuple[Tensor, Tensor, Any]:
        """A "stream" encoder's chunk of T steps from carried windows (agents.stream.CarriedWindow) in
        one causal pass: obs [U, T, ...], positions [U, T, C], steps [U, T] bool (the steps to score)
        -> (click_logit [U, T, C], watch [U, T, C], the window after the chunk)."""
        out, read = self.encoder.forward_sequence(window, obs, steps)
        click_logit, watch = self._heads(out, positions)
        return click_logit, watch, read.window

    def _heads(self, out: Any, positions: Tensor | None) -> tuple[Tensor, Tensor]:
        bias = self.position_bias[0] if positions is None else self.position_bias[positions]
        click_logit = out.logits + self.click_bias + bias
        watch = F.softplus(RecommenderEncoder.score(self.watch_query(out.user), out.candidates) + self.watch_bias)
        return click_logit, watch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run a block with torch's RNG seeded, leaving the caller's RNG state as it was."""
    devices = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class EngagementLearner:
    """An EngagementModel with its Adam optimizer and its shuffling RNG, all from one seed: it fits
    training examples (agents.training_examples: Examples, ExampleChain or a ReplayBuffer) by one Adam
    step per minibatch of rows. Loss = BCE(click logit, click) + squared error of the watch time (in
    mean item lengths) on clicked rows; gradients clipped to norm 1.

    kind: one of KINDS; config: the EncoderConfig; item_features: the catalog feature table
    [n_items, F_item] (None when the observations carry ids only); n_positions: the slate positions of
    the logged slates (the observation's C candidates); length_mean: the catalog's mean item length
    (watch times are learnt in its units); lr, batch_size: Adam's step size and the minibatch of an
    epoch; seed: the initial weights, the shuffling and dropout (same seed and data, same weights);
    device: where it trains.
    """

    def __init__(
        self,
        kind: str,
        config: EncoderConfig,
        item_features: np.ndarray | None,
        n_positions: int,
        length_mean: float,
        lr: float,
        batch_size: int,
        seed: int,
        device: torch.device,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.length_mean, self.batch_size, self.device = float(length_mean), int(batch_size), device
        with seeded(seed, device):
            self.net = EngagementModel(kind, config, item_features, n_positions)
        self.net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.rng = np.random.default_rng(seed)
        self.features = None if item_features is None else torch.as_tensor(item_features)

    def batch(
        self, data: Examples | ExampleChain, rows: np.ndarray
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """(obs with one candidate per row [B, 1], positions [B, 1], click [B], watch [B] in mean lengths)."""
        batch = data.rows(rows)
        obs = {k: torch.from_numpy(batch[k]) for k in HISTORY_KEYS}
        target = torch.from_numpy(batch["target_item"])[:, None]
        obs["candidate_items"] = target
        if self.features is not None:
            obs["candidate_features"] = self.features[target]
        obs = {k: v.to(self.device) for k, v in obs.items()}
        positions = torch.from_numpy(batch["target_position"])[:, None].to(self.device)
        click = torch.from_numpy(batch["click"]).to(self.device)
        watch = torch.from_numpy(batch["watch_time"] / np.float32(self.length_mean)).to(self.device)
        return obs, positions, click, watch

    def train_epoch(self, data: Examples | ExampleChain) -> float:
        """One shuffled pass over `data`; returns the mean loss per example."""
        order = self.rng.permutation(len(data))
        size = self.batch_size
        return self.train_on(data, [order[i : i + size] for i in range(0, len(order), size)])

    def train_on(self, data: Examples | ExampleChain, batches: list[np.ndarray]) -> float:
        """One Adam step per batch of example rows of `data`; returns the mean loss per example."""
        self.net.train()
        total, count = 0.0, 0
        with seeded(int(self.rng.integers(2**31)), self.device):  # dropout, if any
            for rows in batches:
                obs, positions, click, watch = self.batch(data, rows)
                click_logit, watch_pred = self.net(obs, positions)
                loss = F.binary_cross_entropy_with_logits(click_logit[:, 0], click)
                clicked = click > 0
                if clicked.any():
                    loss = loss + F.mse_loss(watch_pred[clicked, 0], watch[clicked])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                self.optimizer.step()
                total += float(loss.detach()) * len(rows)
                count += len(rows)
        self.net.eval()
        return total / max(count, 1)

    def train_sequences(self, data: Examples, chunk: int = 128, objective: str = "engagement") -> float:
        """One shuffled pass over `data`'s trajectories for a "stream" encoder (agents.stream): each
        logged trajectory ((seed, user), `data.opens`) is read once, in causal chunks of `chunk` steps
        from the window carried from the chunk before (not differentiated through), with one Adam step
        per chunk of a minibatch of trajectories holding about `batch_size` impressions. Returns the mean
        loss per scored step or impression.

        objective "engagement": the loss of :meth:`train_on` on the logged impressions (the logging
        policy's slates and how users responded). "next_item" (self-supervised, as SASRec): each step's
        state predicts the interaction its user had next (the item the env records in the history: the
        click, or the top item without one), softmax over the whole catalog scored by the item tower;
        no slate, click or watch time is read."""
        if objective not in PRETRAIN_OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(PRETRAIN_OBJECTIVES)}, got {objective!r}")
        if data.opens is None:
            raise ValueError("train_sequences needs examples from logs (Examples.opens: where trajectories start)")
        trajectory = np.cumsum(data.opens) - 1  # [S]
        lengths = np.bincount(trajectory)
        first = np.cumsum(lengths) - lengths
        slate = len(data) // data.n_steps  # impressions per step (the logged slate's size)
        if slate * data.n_steps != len(data):
            raise ValueError(f"train_sequences needs one slate per step: {len(data)} rows over {data.n_steps} steps")
        rows = np.argsort(data.step_index, kind="stable").reshape(data.n_steps, slate)  # [S, K] by step
        per_batch = max(1, round(self.batch_size / max(1.0, lengths.mean() * slate)))
        order = self.rng.permutation(len(lengths))
        self.net.train()
        total, count = 0.0, 0
        with seeded(int(self.rng.integers(2**31)), self.device):
            for start in range(0, len(order), per_batch):
                chosen = order[start : start + per_batch]
                longest = int(lengths[chosen].max())
                steps = first[chosen, None] + np.arange(longest)  # [U, T] user-steps, padded past each end
                real = np.arange(longest)[None, :] < lengths[chosen, None]
                steps = np.where(real, steps, 0)
                window = self.net.encoder.history.fresh_window(len(chosen), self.device)
                for begin in range(0, longest, chunk):
                    part = slice(begin, begin + chunk)
                    score = self._sequence_loss if objective == "engagement" else self._next_item_loss
                    loss, n, window = score(data, steps[:, part], real[:, part], rows, window)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                    self.optimizer.step()
                    window = type(window)(*(w.detach() for w in window))
                    total += float(loss.detach()) * n
                    count += n
        self.net.eval()
        return total / max(count, 1)

    def _sequence_loss(
        self, data: Examples, steps: np.ndarray, real: np.ndarray, rows: np.ndarray, window: Any
    ) -> tuple[Tensor, int, Any]:
        """The loss of user-steps `steps` [U, T] (`real` where they exist) from carried windows."""
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        obs = {k: to(getattr(data, k)[steps]) for k in HISTORY_KEYS}
        obs["history_mask"] = obs["history_mask"] * to(real.astype(np.float32))[..., None]  # padding reads nothing
        impressions = rows[steps]  # [U, T, K]
        target = to(data.target_item[impressions])
        obs["candidate_items"] = target
        if self.features is not None:
            obs["candidate_features"] = self.features.to(self.device)[target]
        positions = to(data.target_position[impressions])
        click = to(data.click[impressions])
        watch = to(data.watch_time[impressions] / np.float32(self.length_mean))
        live = to(real)
        click_logit, watch_pred, window = self.net.forward_sequence(window, obs, positions, live)
        keep = live[..., None].expand_as(click)
        loss = F.binary_cross_entropy_with_logits(click_logit[keep], click[keep])
        clicked = keep & (click > 0)
        if clicked.any():
            loss = loss + F.mse_loss(watch_pred[clicked], watch[clicked])
        return loss, int(keep.sum()), window

    def _next_item_loss(
        self, data: Examples, steps: np.ndarray, real: np.ndarray, rows: np.ndarray, window: Any
    ) -> tuple[Tensor, int, Any]:
        """The next-interaction loss of user-steps `steps` [U, T] from carried windows."""
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        obs = {k: to(getattr(data, k)[steps]) for k in HISTORY_KEYS}
        obs["history_mask"] = obs["history_mask"] * to(real.astype(np.float32))[..., None]
        impressions = rows[steps]  # [U, T, K]
        clicked = data.click[impressions] > 0
        top = np.take_along_axis(impressions, np.argmin(data.target_position[impressions], axis=-1)[..., None], -1)
        hit = np.take_along_axis(impressions, np.argmax(clicked, axis=-1)[..., None], -1)
        entry = data.target_item[np.where(clicked.any(-1, keepdims=True), hit, top)[..., 0]]  # [U, T]
        encoder = self.net.encoder
        read = encoder.history.read(window, obs, to(real))
        table = encoder.history.item_features
        items = torch.arange(encoder.config.n_items, device=self.device)
        catalog = encoder.item_tower(items, None if table is None else table.to(self.device))  # [I, d]
        live = to(real)
        logits = read.state[live] @ catalog.T / np.sqrt(catalog.shape[-1])
        loss = F.cross_entropy(logits, to(entry)[live])
        return loss, int(live.sum()), read.window

    def snapshot(self) -> dict[str, Any]:
        """Copies of the weights, the optimizer's state and the shuffling RNG's state."""
        return copy.deepcopy(
            dict(net=self.net.state_dict(), optimizer=self.optimizer.state_dict(), rng=self.rng.bit_generator.state)
        )

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Back to a `snapshot` (copied again: the snapshot stays as it was)."""
        snapshot = copy.deepcopy(snapshot)
        self.net.load_state_dict(snapshot["net"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.rng.bit_generator.state = snapshot["rng"]

    def frozen_copy(self) -> EngagementModel:
        """A serving copy of the current weights (eval mode, no gradients)."""
        net = copy.deepcopy(self.net).eval()
        return net.requires_grad_(False)
