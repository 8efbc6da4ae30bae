"""Transformer state encoder and item tower shared by every learning agent.

One module turns a padded interaction history into a state vector and a
candidate set into item vectors; candidate logits are their scaled dot
products. The RLlib RLModule, the SB3 features extractor and the supervised
sequence model all build on :class:`RecommenderEncoder` and add their own heads
on ``state``.

Observation keys (leading batch axis ``B``; ids may arrive as floats because
SB3 casts every Box to float32):

===========================  =========  ====================
key                          dtype      shape
===========================  =========  ====================
``history_items``            int/float  ``[B, H]``
``history_features``         float      ``[B, H, F_hist]``
``history_mask``             float/bool ``[B, H]`` (1 = real, right-aligned)
``candidate_items``          int/float  ``[B, C]``
``candidate_features``       float      ``[B, C, F_item]``
``context``                  float      ``[B, F_ctx]``
===========================  =========  ====================

Keys whose feature size is 0 in the config may be absent. The history carries
item ids only (as driftrec's envs emit it): with ``item_feature_dim > 0`` the
history encoder looks the items' features up by id in its ``item_features``
table (the catalog's ``[n_items, F_item]``, e.g. ``env.core.item_features``).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EncoderConfig",
    "EncoderOutput",
    "HistoryEncoder",
    "ItemTower",
    "RecommenderEncoder",
    "TargetAttention",
]

_INT_FIELDS_MIN = {  # field -> smallest allowed value
    "n_items": 1,
    "history_len": 1,
    "item_feature_dim": 0,
    "history_feature_dim": 0,
    "context_dim": 0,
    "d_model": 1,
    "n_layers": 1,
    "n_heads": 1,
    "ff_mult": 1,
    "attention_window": 0,
}


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes and switches of :class:`RecommenderEncoder`.

    Feature sizes may be 0 (the matching projection is then left out and the
    observation key may be absent). ``autocast_bf16`` only takes effect when
    the inputs are on CUDA. ``compile`` wraps the Transformer block stack with
    ``torch.compile``. ``target_attention`` adds a per-candidate read of the
    history (see :class:`TargetAttention`) to the state each candidate is scored with.
    ``attention_window`` W bounds the cost of long histories: in every layer but the last,
    a history token attends to the CLS token and to the tokens of its own block of W and of
    the block before it, instead of to all H (0: always all). With the last layer computing
    only the CLS row (which reads all H), a decision then costs O(H * W) instead of O(H^2):
    linear in the history length. Histories of at most W tokens are encoded exactly as with 0.
    ``seen_flag`` adds a learned vector to each candidate that is among the history's items (the
    "already watched" feature of deployed recommenders; see :func:`seen_in_history`).
    """

    n_items: int
    history_len: int
    item_feature_dim: int
    history_feature_dim: int
    context_dim: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.0
    compile: bool = False
    autocast_bf16: bool = True
    target_attention: bool = True
    attention_window: int = 128
    seen_flag: bool = False

    def __post_init__(self) -> None:
        for name, low in _INT_FIELDS_MIN.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"EncoderConfig.{name} must be an integer >= {low}, got {value!r}")
            if value < low:
                raise ValueError(f"EncoderConfig.{name} must be >= {low}, got {value}")
            # numpy integers (e.g. read from a space) become plain ints.
            object.__setattr__(self, name, int(value))
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                "EncoderConfig.d_model must be divisible by n_heads, "
                f"got d_model={self.d_model}, n_heads={self.n_heads}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real):
            raise ValueError(f"EncoderConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"EncoderConfig.dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "dropout", float(self.dropout))
        for name in ("compile", "autocast_bf16", "target_attention", "seen_flag"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_observation_space(cls, space: Any, n_items: int | None = None, **overrides: Any) -> EncoderConfig:
        """Read the sizes from a ``gymnasium.spaces.Dict`` observation space.

        Works for single-env and batched (vector-env) spaces: sizes are read
        from the trailing axes; ``item_feature_dim`` is the last axis of
        ``candidate_features`` (0 without it). ``n_items`` defaults to
        ``high + 1`` of the ``history_items``/``candidate_items`` Boxes.
        ``overrides`` set any other field (``d_model=64``, ``n_layers=1``, ...).
        """
        import gymnasium  # local: keep the encoder importable without gym

        if not isinstance(space, gymnasium.spaces.Dict):
            raise ValueError(f"observation space must be a gymnasium.spaces.Dict, got {type(space).__name__}")
        missing = [k for k in ("history_items", "candidate_items") if k not in space.spaces]
        if missing:
            raise ValueError(f"observation space lacks required keys {missing}")

        def last_dim(key: str) -> int:
            return int(space[key].shape[-1]) if key in space.spaces else 0

        id_highs = [
            float(np.max(space[k].high))
            for k in ("history_items", "candidate_items")
            if np.all(np.isfinite(space[k].high))
        ]
        bound = int(max(id_highs)) + 1 if id_highs else None
        if n_items is None:
            if bound is None:
                raise ValueError("n_items not given and the id Boxes have no finite high to read it from")
            n_items = bound
        elif bound is not None and n_items < bound:
            raise ValueError(f"n_items={n_items} is smaller than the id bound {bound} of the observation space")

        sizes = dict(
            n_items=n_items,
            history_len=last_dim("history_items"),
            item_feature_dim=last_dim("candidate_features"),
            history_feature_dim=last_dim("history_features"),
            context_dim=last_dim("context"),
        )
        return cls(**{**sizes, **overrides})

    def replace(self, **changes: Any) -> EncoderConfig:
        """A copy with some fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return EncoderConfig(**{**values, **changes})


class EncoderOutput(NamedTuple):
    """Outputs of :class:`RecommenderEncoder`, all float32.

    state:      [B, d_model]    history summary (the CLS token's output)
    candidates: [B, C, d_model] item-tower vectors of the candidates
    user:       [B, C, d_model] the user as seen by each candidate: state + what the
                                candidate's target attention read in the history
                                (the state itself, broadcast, without target attention)
    logits:     [B, C]          user . candidate / sqrt(d_model)
    """

    state: Tensor
    candidates: Tensor
    user: Tensor
    logits: Tensor


# --------------------------------------------------------------------------- helpers


def _ids(x: Tensor) -> Tensor:
    # SB3 hands ids over as float32; round so 4.9999 does not become 4.
    return x.round().long() if x.is_floating_point() else x.long()


def seen_in_history(obs: Mapping[str, Tensor]) -> Tensor:
    """[B, C] 1.0 where a candidate is one of the history's real entries, else 0.0: what a user
    watched is a plain fact of the log, and a model that must infer it from embeddings recognises
    exact repeats poorly. A history of one entry knows only the last item."""
    mask = obs["history_mask"]
    real = mask if mask.dtype == torch.bool else mask > 0.5
    same = _ids(obs["candidate_items"])[:, :, None] == _ids(obs["history_items"])[:, None, :]
    return (same & real[:, None, :]).any(-1).float()


def _autocast(x: Tensor, enabled: bool):
    if enabled and x.is_cuda:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _item_table(config: EncoderConfig, shared: nn.Embedding | None) -> nn.Embedding:
    if shared is None:
        shared = nn.Embedding(config.n_items, config.d_model)
        _init_weights(shared)
    elif shared.weight.shape != (config.n_items, config.d_model):
        raise ValueError(
            f"shared item embedding has shape {tuple(shared.weight.shape)}, "
            f"expected (n_items, d_model) = ({config.n_items}, {config.d_model})"
        )
    return shared


def _init_weights(module: nn.Module) -> None:
    # GPT-style small init keeps the summed token embedding near unit scale.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


# --------------------------------------------------------------------------- blocks


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``F.scaled_dot_product_attention``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, attn_mask: Tensor, first_query_only: bool = False, window: int = 0) -> Tensor:
        """x: [B, L, d] (CLS first); attn_mask: bool [B, 1, 1, L], True = may be attended.

        Returns [B, L, d], or [B, 1, d] for ``first_query_only``. With ``window`` W > 0 and more
        than W history tokens, history rows attend block-locally (see ``EncoderConfig``).
        """
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).unbind(2)
        if first_query_only:
            q = q[:, :1]
        elif window and length - 1 > window:
            return self.out(self._block_local(q, k, v, attn_mask.view(b, length), window).reshape(b, length, d))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, L, d_head]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, q.shape[2], d))

    def _block_local(self, q: Tensor, k: Tensor, v: Tensor, keep: Tensor, window: int) -> Tensor:
        """q, k, v [B, L, heads, d_head] (CLS first), keep bool [B, L] -> [B, L, heads, d_head].

        The CLS row attends to everything (one row: O(L)); history rows in blocks of `window`,
        each block to the CLS and to itself and the block before: O(L * window) in all.
        """
        b, length, heads, dh = q.shape
        drop = self.dropout if self.training else 0.0
        full = lambda t: t.transpose(1, 2)  # noqa: E731  [B, heads, L, d_head]
        cls = F.scaled_dot_product_attention(
            full(q[:, :1]), full(k), full(v), attn_mask=keep[:, None, None, :], dropout_p=drop
        )  # [B, heads, 1, d_head]
        n = length - 1
        pad = -n % window
        m = (n + pad) // window

        def blocks(t: Tensor) -> Tensor:  # [B, 1 + n, ...] history rows -> [B, m, window, ...], padded at the end
            t = t[:, 1:]
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
            return t.reshape(b, m, window, *t.shape[2:])

        qb, kb, vb, okb = blocks(q), blocks(k), blocks(v), blocks(keep)
        before = lambda t: F.pad(t[:, :-1], (0, 0) * (t.dim() - 2) + (1, 0))  # noqa: E731  block j-1 (none for 0)
        ctx = lambda t, c: torch.cat([c.unsqueeze(1).expand(b, m, *c.shape[1:]), before(t), t], dim=2)  # noqa: E731
        keys, values = ctx(kb, k[:, :1]), ctx(vb, v[:, :1])  # [B, m, 1 + 2 window, heads, d_head]
        ok = ctx(okb, keep[:, :1])  # [B, m, 1 + 2 window]: the CLS is always there, so no row is empty
        rows = lambda t: t.reshape(b * m, t.shape[2], heads, dh).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(
            rows(qb), rows(keys), rows(values), attn_mask=ok.reshape(b * m, 1, 1, -1), dropout_p=drop
        )  # [B m, heads, window, d_head]
        y = y.transpose(1, 2).reshape(b, m * window, heads, dh)[:, :n]
        return torch.cat([cls.transpose(1, 2), y], dim=1)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + ff(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor, first_query_only: bool = False, window: int = 0) -> Tensor:
        """x: [B, L, d] -> [B, L, d] (or [B, 1, d] for ``first_query_only``)."""
        h = self.attn(self.ln1(x), attn_mask, first_query_only, window)
        x = (x[:, :1] if first_query_only else x) + self.drop(h)
        return x + self.ff(self.ln2(x))


class BlockStack(nn.Module):
    """The Transformer layers; only the CLS row of the last layer is computed."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.window = config.attention_window
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.ff_mult, config.dropout) for _ in range(config.n_layers)
        )

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """x: [B, 1 + H, d] with CLS first -> CLS output [B, d]."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Nothing reads the other rows of the last layer: skip their query/FF work.
            x = block(x, attn_mask, first_query_only=i == last, window=self.window)
        return x[:, 0]


# --------------------------------------------------------------------------- public modules


class HistoryEncoder(nn.Module):
    """Padded interaction history (+ context) -> state vector ``[B, d_model]``.

    Token t = item-id embedding + proj(item features) + proj(history features)
    + position embedding; the item features are looked up by id in the
    ``item_features`` table (required when ``item_feature_dim > 0``). Positions count back from the newest interaction
    (the history is right-aligned), so a shorter ``H`` than ``history_len``
    reuses the most-recent positions. A learned CLS token, plus proj(context),
    is prepended and never masked: an all-padding history still yields a
    finite state. Padding is excluded from attention as keys, so changing
    padded ids/features does not change the state.
    """

    def __init__(
        self,
        config: EncoderConfig,
        item_embedding: nn.Embedding | None = None,
        item_features: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_proj = nn.Linear(config.item_feature_dim, d) if config.item_feature_dim else None
        # The catalog's static item features [n_items, F_item], looked up by history item id
        # (the observation carries ids only); required when item_feature_dim > 0.
        table = None if item_features is None else torch.as_tensor(np.asarray(item_features), dtype=torch.float32)
        if table is not None and tuple(table.shape) != (config.n_items, config.item_feature_dim):
            raise ValueError(
                f"item_features must have shape (n_items={config.n_items}, "
                f"item_feature_dim={config.item_feature_dim}), got {tuple(table.shape)}"
            )
        self.register_buffer("item_features", table, persistent=False)
        self.response_proj = nn.Linear(config.history_feature_dim, d) if config.history_feature_dim else None
        self.context_proj = nn.Linear(config.context_dim, d) if config.context_dim else None
        self.position = nn.Parameter(torch.empty(config.history_len, d))
        self.cls_token = nn.Parameter(torch.empty(d))
        self.drop = nn.Dropout(config.dropout)
        self.stack = BlockStack(config)
        self.final_norm = nn.LayerNorm(d)

        self.apply(_init_weights)
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        # Assigned after init so a table shared in from elsewhere is left as is.
        self.item_embedding = _item_table(config, item_embedding)
        if config.compile:
            self.stack.compile()  # in place: state_dict keys stay the same

    @property
    def output_dim(self) -> int:
        return self.config.d_model

    def embed(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Build the token sequence.

        Returns tokens [B, 1 + H, d] (CLS first) and a bool key mask
        [B, 1 + H] (True = real token; the CLS is always True).
        """
        cfg = self.config
        items = _ids(obs["history_items"])
        b, h = items.shape
        if h > cfg.history_len:
            raise ValueError(f"history length {h} exceeds EncoderConfig.history_len={cfg.history_len}")
        dtype = self.cls_token.dtype
        mask = obs["history_mask"] > 0

        tokens = self.item_embedding(items) + self.position[cfg.history_len - h :]
        if self.item_proj is not None:
            if self.item_features is None:
                raise ValueError(
                    "HistoryEncoder needs an item_features table [n_items, F_item] "
                    "(EncoderConfig.item_feature_dim > 0): pass item_features="
                )
            tokens = tokens + self.item_proj(self.item_features[items].to(dtype))
        if self.response_proj is not None:
            tokens = tokens + self.response_proj(obs["history_features"].to(dtype))
        # Zero padded rows so garbage (even NaN) there cannot leak into any row.
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)

        cls = self.cls_token.expand(b, -1)
        if self.context_proj is not None:
            cls = cls + self.context_proj(obs["context"].to(dtype))
        tokens = torch.cat([cls.unsqueeze(1).to(tokens.dtype), tokens], dim=1)
        key_mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        return self.drop(tokens), key_mask

    def encode_tokens(self, tokens: Tensor, key_mask: Tensor) -> Tensor:
        """tokens [B, L, d] (CLS first), key_mask bool [B, L] -> state [B, d]."""
        attn_mask = key_mask[:, None, None, :]  # broadcast over heads and queries
        return self.final_norm(self.stack(tokens, attn_mask))

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        """obs (see module docstring) -> state [B, d_model], float32."""
        return self.forward_with_tokens(obs)[0]

    def forward_with_tokens(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(state [B, d], history tokens [B, H, d] as embedded (CLS left out), their mask bool [B, H])."""
        with _autocast(obs["history_items"], self.config.autocast_bf16):
            tokens, key_mask = self.embed(obs)
            state = self.encode_tokens(tokens, key_mask)
        return state.float(), tokens[:, 1:], key_mask[:, 1:]


class ItemTower(nn.Module):
    """Item ids + features -> item vectors ``[..., d_model]`` (e.g. [B, C, d]).

    Shares the id-embedding table with the history encoder, so an item has one
    identity whether it was consumed or is on offer. A residual MLP lets
    features interact with the id before the final LayerNorm.
    """

    def __init__(self, config: EncoderConfig, item_embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_proj = nn.Linear(config.item_feature_dim, d) if config.item_feature_dim else None
        self.mlp = nn.Sequential(
            nn.LayerNorm(d),
            nn.Linear(d, config.ff_mult * d),
            nn.GELU(),
            nn.Linear(config.ff_mult * d, d),
        )
        self.norm = nn.LayerNorm(d)
        self.apply(_init_weights)
        self.item_embedding = _item_table(config, item_embedding)

    def forward(self, items: Tensor, features: Tensor | None = None) -> Tensor:
        """items [...] (int or float ids), features [..., F_item] -> [..., d_model], float32."""
        with _autocast(items, self.config.autocast_bf16):
            x = self.item_embedding(_ids(items))
            if self.item_proj is not None:
                if features is None:
                    raise ValueError("ItemTower needs features: EncoderConfig.item_feature_dim > 0")
                x = x + self.item_proj(features.to(self.item_proj.weight.dtype))
            x = self.norm(x + self.mlp(x))
        return x.float()


class TargetAttention(nn.Module):
    """Each candidate reads the history for itself (target attention, as in DIN, Zhou et al. 2018).

    The pooled state summarises the whole history the same way for every candidate; a user
    with several interests is better described, for a given candidate, by the past
    interactions that resemble it (and how they went). Candidates are the queries, the
    history tokens (item, features, response, recency) keys and values; a learned null slot
    takes the attention when nothing resembles the candidate, or the history is empty.
    Cost per decision: C x H dot products, linear in the history length.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.null_key = nn.Parameter(torch.zeros(d))
        self.out = nn.Linear(d, d)
        self.apply(_init_weights)

    def forward(self, candidates: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """candidates [B, C, d], tokens [B, H, d], mask bool [B, H] -> [B, C, d]."""
        b, c, d = candidates.shape
        heads, dh = self.n_heads, d // self.n_heads
        k, v = self.key_value(tokens).chunk(2, dim=-1)
        k = torch.cat([self.null_key.to(k.dtype).expand(b, 1, d), k], dim=1)
        v = torch.cat([v.new_zeros(b, 1, d), v], dim=1)  # the null slot reads nothing
        keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)[:, None, None, :]  # [B, 1, 1, 1 + H]
        split = lambda x: x.view(b, x.shape[1], heads, dh).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.query(candidates)), split(k), split(v), attn_mask=keep)
        return self.out(y.transpose(1, 2).reshape(b, c, d))


class RecommenderEncoder(nn.Module):
    """History encoder + item tower with one shared id-embedding table.

    ``forward(obs)`` returns :class:`EncoderOutput`; ``logits[b, c]`` is the
    score of candidate ``c`` for user ``b``, so the action head grows with the
    candidate set instead of being a fixed output layer. Value/policy heads
    belong to the consumers and go on ``state``.
    """

    def __init__(self, config: EncoderConfig, item_features: Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.history = HistoryEncoder(config, item_features=item_features)
        self.item_tower = ItemTower(config, item_embedding=self.history.item_embedding)
        self.target_attention = TargetAttention(config) if config.target_attention else None
        self.seen = nn.Parameter(torch.zeros(config.d_model)) if config.seen_flag else None

    @property
    def output_dim(self) -> int:
        return self.config.d_model

    def encode_state(self, obs: Mapping[str, Tensor]) -> Tensor:
        """State only ([B, d_model]), e.g. for a value function."""
        return self.history(obs)

    def encode_candidates(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Candidate vectors [B, C, d_model]."""
        vectors = self.item_tower(obs["candidate_items"], obs.get("candidate_features"))
        if self.seen is not None:
            vectors = vectors + seen_in_history(obs)[..., None] * self.seen
        return vectors

    @staticmethod
    def score(user: Tensor, candidates: Tensor) -> Tensor:
        """user [B, d] or [B, C, d], candidates [B, C, d] -> logits [B, C] (scaled dot product)."""
        if user.dim() == 2:
            user = user[:, None, :]
        return (user * candidates).sum(-1) / math.sqrt(candidates.shape[-1])

    def forward(self, obs: Mapping[str, Tensor]) -> EncoderOutput:
        """obs (see module docstring) -> EncoderOutput(state, candidates, user, logits)."""
        state, tokens, mask = self.history.forward_with_tokens(obs)
        candidates = self.encode_candidates(obs)
        user = state[:, None, :].expand_as(candidates)
        if self.target_attention is not None:
            with _autocast(candidates, self.config.autocast_bf16):
                read = self.target_attention(candidates, tokens, mask)
            user = user + read.float()
        # Logits in float32: bf16 dot products over d_model lose ranking precision.
        return EncoderOutput(state, candidates, user, self.score(user, candidates))
