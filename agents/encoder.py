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

from agents.lora import linear_weights

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
    "stream_window": 0,
    "memory": 0,
    "days_ago_feature": -1,
}
HISTORY_MODES = ("window", "stream")
MAX_STREAM_TOKENS = 65_536  # stream_window and memory: a carried window is this many tokens per user at most


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

    ``history_mode`` chooses how the history is read: "window" (:class:`HistoryEncoder`, each
    observation's H entries afresh) or "stream" (:class:`agents.stream.StreamHistoryEncoder`, each
    interaction once per trajectory, with a carried state). In "stream" mode ``stream_window`` W is how
    many tokens (itself included) a history token attends to and ``memory`` M how many of the latest
    tokens each step's readout and target attention read (0: history_len, for both);
    ``days_ago_feature`` is the column of ``history_features`` holding days ago (-1: none), which a
    token keeps as it was when first read. ``static_items``: the candidates' features are the catalog's
    ``item_features`` rows (no column moves), so the item tower runs once per distinct item instead of
    once per candidate slot.
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
    history_mode: str = "window"
    stream_window: int = 0
    memory: int = 0
    days_ago_feature: int = -1
    static_items: bool = False

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
        for name in ("compile", "autocast_bf16", "target_attention", "seen_flag", "static_items"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.history_mode not in HISTORY_MODES:
            raise ValueError(
                f"EncoderConfig.history_mode must be one of {', '.join(HISTORY_MODES)}, got {self.history_mode!r}"
            )
        if self.days_ago_feature >= self.history_feature_dim:
            raise ValueError(
                f"EncoderConfig.days_ago_feature must be -1 (none) or a column of history_features "
                f"(< {self.history_feature_dim}), got {self.days_ago_feature}"
            )
        for name in ("stream_window", "memory"):
            if getattr(self, name) > MAX_STREAM_TOKENS:
                raise ValueError(
                    f"EncoderConfig.{name} must be at most {MAX_STREAM_TOKENS:,} tokens (0: history_len), "
                    f"got {getattr(self, name):,}"
                )
        if self.history_mode == "stream" and self.compile:
            raise ValueError(
                "EncoderConfig.compile applies to the window encoder's block stack only (history_mode window)"
            )

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
                                (the state itself, broadcast, without target attention);
                                None from a "stream" encoder whose keep_user is False
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


class _MaskedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d_head) + bias) v with its gradient written out. On the CPU, for the stream
    encoder's short query blocks (8 to 32 readouts or candidates against 33 to 150 keys), 1.5 to 3 times
    faster than torch's flash kernel forward and 1.3 to 2 times forward + backward; at the window
    encoder's square [33 x 33] blocks, no faster (docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        scale = q.shape[-1] ** -0.5
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).add_(bias)
        p = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(q, k, v, p)
        return torch.matmul(p, v)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, v, p = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        dy = dy.contiguous()
        dv = torch.matmul(p.transpose(-1, -2), dy)
        dp = torch.matmul(dy, v.transpose(-1, -2))
        ds = dp.sub_((dp * p).sum(-1, keepdim=True)).mul_(p).mul_(scale)
        return torch.matmul(ds, k), torch.matmul(ds.transpose(-1, -2), q), dv, None


def attention(q: Tensor, k: Tensor, v: Tensor, keep: Tensor, dropout: float = 0.0, fused: bool = False) -> Tensor:
    """Multi-head attention: q [B, heads, Lq, dh], k, v [B, heads, Lk, dh], keep bool broadcastable to
    [B, heads, Lq, Lk] (True: may be attended; every query keeps at least one key) -> [B, heads, Lq, dh].

    With `fused`, on CUDA, with dropout or for large blocks (Lq x Lk above 16,384, where the scores it
    keeps for the backward pass cost more than the fused kernel saves) torch's fused kernels; else
    :class:`_MaskedAttention`. The "window" encoder keeps torch's kernels (`fused`): the figures
    measured on it reproduce bit for bit; the "stream" encoder reads short blocks and takes the faster
    path."""
    if fused or q.is_cuda or dropout or q.shape[-2] * k.shape[-2] > 16_384:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
    bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill_(~keep, float("-inf"))
    return _MaskedAttention.apply(q, k, v, bias)


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


def add_token_parts(module: nn.Module, config: EncoderConfig, item_features: Tensor | np.ndarray | None) -> None:
    """Register on `module`, in this order, what every history encoder builds its tokens and CLS from:
    item_proj (item features -> d), the `item_features` buffer (the catalog's static features
    [n_items, F_item], looked up by history item id: the observation carries ids only; required when
    item_feature_dim > 0), response_proj (history features -> d) and context_proj (context -> d)."""
    d = config.d_model
    module.item_proj = nn.Linear(config.item_feature_dim, d) if config.item_feature_dim else None
    table = None if item_features is None else torch.as_tensor(np.asarray(item_features), dtype=torch.float32)
    if table is not None and tuple(table.shape) != (config.n_items, config.item_feature_dim):
        raise ValueError(
            f"item_features must have shape (n_items={config.n_items}, "
            f"item_feature_dim={config.item_feature_dim}), got {tuple(table.shape)}"
        )
    module.register_buffer("item_features", table, persistent=False)
    module.response_proj = nn.Linear(config.history_feature_dim, d) if config.history_feature_dim else None
    module.context_proj = nn.Linear(config.context_dim, d) if config.context_dim else None


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
        add_token_parts(self, config, item_features)
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
        self.fused = config.history_mode != "stream"  # see attention()
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.null_key = nn.Parameter(torch.zeros(d))
        self.out = nn.Linear(d, d)
        self.apply(_init_weights)

    def key_values(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, N, d] -> their keys and values [B, N, d] each (per token: cacheable)."""
        k, v = self.key_value(tokens).chunk(2, dim=-1)
        return k, v

    def attend(
        self,
        candidates: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor,
        queries: Tensor | None = None,
        project: bool = True,
    ) -> Tensor:
        """candidates [B, Q, d], keys and values [B, N, d], mask bool [B, N] (or [B, Q, N]: which tokens
        each candidate may read) -> [B, Q, d]. `queries`: query(candidates), when the caller has them
        (computed once per distinct item). `project` False: the heads' read before the output
        projection (see :meth:`folded`)."""
        b, c, d = candidates.shape
        heads, dh = self.n_heads, d // self.n_heads
        k = torch.cat([self.null_key.to(keys.dtype).expand(b, 1, d), keys], dim=1)
        v = torch.cat([values.new_zeros(b, 1, d), values], dim=1)  # the null slot reads nothing
        if mask.dim() == 2:
            keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)[:, None, None, :]  # [B, 1, 1, 1 + N]
        else:
            keep = torch.cat([mask.new_ones(b, c, 1), mask], dim=2)[:, None]  # [B, 1, Q, 1 + N]
        split = lambda x: x.view(b, x.shape[1], heads, dh).transpose(1, 2)  # noqa: E731
        queries = self.query(candidates) if queries is None else queries.to(k.dtype)
        y = attention(split(queries), split(k), split(v), keep, fused=self.fused)
        y = y.transpose(1, 2).reshape(b, c, d)
        return self.out(y) if project else y

    def folded(self, candidates: Tensor) -> Tensor:
        """candidates [..., d] -> [..., d + 1]: the output projection folded into the candidate, so
        that out(read) . c = read . f[:d] + f[d] (f = c W_out, c . b_out): per item, not per slot."""
        weight, bias = linear_weights(self.out)
        return torch.cat([candidates @ weight, (candidates @ bias)[..., None]], dim=-1)

    def forward(self, candidates: Tensor, tokens: Tensor, mask: Tensor, queries: Tensor | None = None) -> Tensor:
        """candidates [B, C, d], tokens [B, H, d], mask bool [B, H] (or [B, C, H]) -> [B, C, d]."""
        return self.attend(candidates, *self.key_values(tokens), mask, queries)


class RecommenderEncoder(nn.Module):
    """History encoder + item tower with one shared id-embedding table.

    ``forward(obs)`` returns :class:`EncoderOutput`; ``logits[b, c]`` is the
    score of candidate ``c`` for user ``b``, so the action head grows with the
    candidate set instead of being a fixed output layer. Value/policy heads
    belong to the consumers and go on ``state``.
    """

    def __init__(
        self, config: EncoderConfig, item_features: Tensor | np.ndarray | None = None, days_scale: float = 365.0
    ) -> None:
        super().__init__()
        self.config = config
        if config.history_mode == "stream":
            from agents.stream import StreamHistoryEncoder  # the stream module builds on this one's blocks

            table = None if item_features is None else torch.as_tensor(np.asarray(item_features), dtype=torch.float32)
            self.history = StreamHistoryEncoder(config, item_features=table, days_scale=days_scale)
        else:
            self.history = HistoryEncoder(config, item_features=item_features)
        self.item_tower = ItemTower(config, item_embedding=self.history.item_embedding)
        self.target_attention = TargetAttention(config) if config.target_attention else None
        self.seen = nn.Parameter(torch.zeros(config.d_model)) if config.seen_flag else None
        # EncoderOutput.user is needed by slate heads and the supervised watch head; a "stream" encoder
        # scoring single items (keep_user False, set by ActorCritic) folds the target attention's
        # output projection into the candidates instead (see _scored).
        self.keep_user = True
        if config.static_items and self.history.item_features is None and config.item_feature_dim:
            raise ValueError("EncoderConfig.static_items needs the catalog's item_features table")

    @property
    def output_dim(self) -> int:
        return self.config.d_model

    @property
    def streams(self) -> bool:
        """True when the history is read once per trajectory (history_mode "stream")."""
        return self.config.history_mode == "stream"

    def encode_state(self, obs: Mapping[str, Tensor]) -> Tensor:
        """State only ([B, d_model]), e.g. for a value function."""
        return self.history(obs)

    def encode_candidates(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Candidate vectors [B, C, d_model]. With ``static_items`` the item tower runs once per item
        of the catalog when the batch holds more candidate slots than the catalog has items."""
        return self._candidates(obs)[0]

    def _candidates(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(candidate vectors [..., C, d], their target-attention queries [..., C, d] and folded output
        projections [..., C, d + 1] where those are computed once per catalog item with the vectors,
        else None)."""
        table = self.history.item_features if self.config.static_items else None
        queries = folds = None
        if table is not None:
            ids = _ids(obs["candidate_items"])
            if ids.numel() > table.shape[0]:
                catalog, catalog_queries, catalog_folds = self._catalog(table)
                vectors = catalog[ids]
                queries = None if catalog_queries is None else catalog_queries[ids]
                folds = None if catalog_folds is None else catalog_folds[ids]
            else:
                vectors = self.item_tower(ids, table[ids])
        else:
            vectors = self.item_tower(obs["candidate_items"], obs.get("candidate_features"))
        if self.seen is not None:
            vectors = vectors + seen_in_history(obs)[..., None] * self.seen
        return vectors, queries, folds

    def _catalog(self, table: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The item tower over the whole catalog [I, d], with the target attention's queries and folded
        output projections per item. Without autograd (sampling, serving) the result is kept until a
        weight changes (torch's version counters move with every in-place update: optimizer steps,
        load_state_dict)."""
        modules = [self.item_tower] + ([self.target_attention] if self.target_attention is not None else [])
        version = tuple(p._version for m in modules for p in m.parameters())
        cached = getattr(self, "_catalog_cache", None)
        if not torch.is_grad_enabled() and cached is not None and cached[0] == version:
            return cached[1]
        catalog = self.item_tower(torch.arange(table.shape[0], device=table.device), table)
        queries = folds = None
        if self.target_attention is not None and self.seen is None:
            with _autocast(catalog, self.config.autocast_bf16):
                queries = self.target_attention.query(catalog)
            if not self.keep_user:
                folds = self.target_attention.folded(catalog)
        if not torch.is_grad_enabled():
            self._catalog_cache = (version, (catalog, queries, folds))
        return catalog, queries, folds

    @staticmethod
    def score(user: Tensor, candidates: Tensor) -> Tensor:
        """user [B, d] or [..., C, d], candidates [..., C, d] -> logits [..., C] (scaled dot product)."""
        if user.dim() == 2:
            user = user[:, None, :]
        return (user * candidates).sum(-1) / math.sqrt(candidates.shape[-1])

    def _output(self, state: Tensor, candidates: Tensor, read: Tensor | None) -> EncoderOutput:
        user = state[..., None, :].expand_as(candidates)
        if read is not None:
            user = user + read.float()
        # Logits in float32: bf16 dot products over d_model lose ranking precision.
        return EncoderOutput(state, candidates, user, self.score(user, candidates))

    def _scored(
        self,
        state: Tensor,
        candidates: Tensor,
        queries: Tensor | None,
        folds: Tensor | None,
        keys: Tensor,
        values: Tensor,
        mask: Tensor,
    ) -> tuple[Tensor | None, Tensor]:
        """ "stream" mode: candidates [B', Q, d] (state [B', Q, d] broadcast to each) read the history
        (keys, values [B', N, d], mask [B', Q, N]) -> (user [B', Q, d], or None without keep_user;
        logits [B', Q]). Without keep_user the target attention's output projection is folded into
        the candidates (TargetAttention.folded): the same logits without a d x d product per slot."""
        if self.target_attention is None:
            user = state
        else:
            with _autocast(candidates, self.config.autocast_bf16):
                read = self.target_attention.attend(candidates, keys, values, mask, queries, project=self.keep_user)
            if not self.keep_user:
                if folds is None:
                    folds = self.target_attention.folded(candidates)
                d = candidates.shape[-1]
                logits = (state * candidates).sum(-1) + (read.float() * folds[..., :d]).sum(-1) + folds[..., d]
                return None, logits / math.sqrt(d)
            user = state + read.float()
        return user, (user * candidates).sum(-1) / math.sqrt(candidates.shape[-1])

    def forward(self, obs: Mapping[str, Tensor]) -> EncoderOutput:
        """obs (see module docstring) -> EncoderOutput(state, candidates, user, logits). In "stream" mode
        each observation is read afresh, as the first step of a trajectory."""
        state, tokens, mask = self.history.forward_with_tokens(obs)
        candidates, queries, folds = self._candidates(obs)
        if self.streams:
            keys = values = tokens
            if self.target_attention is not None:
                with _autocast(tokens, self.config.autocast_bf16):
                    keys, values = self.target_attention.key_values(tokens)
            user, logits = self._scored(
                state[:, None].expand_as(candidates),
                candidates,
                queries,
                folds,
                keys,
                values,
                mask[:, None].expand(-1, candidates.shape[1], -1),
            )
            return EncoderOutput(state, candidates, user, logits)
        read = None
        if self.target_attention is not None:
            with _autocast(candidates, self.config.autocast_bf16):
                read = self.target_attention(candidates, tokens, mask, queries)
        return self._output(state, candidates, read)

    # ------------------------------------------------------------------ "stream" mode
    def forward_sequence(
        self, window: Any, obs: Mapping[str, Tensor], steps: Tensor | None = None
    ) -> tuple[EncoderOutput, Any]:
        """A chunk of T steps from a carried window (:class:`agents.stream.CarriedWindow`) in one causal
        pass: obs [B, T, ...] -> (EncoderOutput with leading [B, T], the :class:`agents.stream.StreamRead`).
        `steps` [B, T] bool: the steps to score (default all); the others' outputs are zeros."""
        out = self.history.read(window, obs, steps)
        blocks = out.blocks
        n, lanes = blocks.user.shape
        at = (blocks.user, blocks.step)
        c = obs["candidate_items"].shape[2]
        candidates, queries, folds = self._candidates({key: value[at].flatten(0, 1) for key, value in obs.items()})
        flat = lambda x: None if x is None else x.reshape(n, lanes * c, -1)  # noqa: E731
        keys = values = None
        if self.target_attention is not None:
            # A block's candidates read the block's token range, each as its lane's readout does.
            with _autocast(candidates, self.config.autocast_bf16):
                keys, values = (blocks.take(x) for x in self.target_attention.key_values(out.tokens))
        state = out.state[at]  # [n, lanes, d]
        user, logits = self._scored(
            state.repeat_interleave(c, dim=1),
            flat(candidates),
            flat(queries),
            flat(folds),
            keys,
            values,
            blocks.reads.repeat_interleave(c, dim=1),
        )
        b, t = obs["candidate_items"].shape[:2]
        keep = blocks.valid
        spread = lambda x: x.new_zeros((b, t, *x.shape[2:])).index_put_((at[0][keep], at[1][keep]), x[keep])  # noqa: E731
        unflat = lambda x: None if x is None else spread(x.reshape(n, lanes, c, *x.shape[2:]))  # noqa: E731
        return EncoderOutput(out.state, unflat(flat(candidates)), unflat(user), unflat(logits)), out

    def stream(self, window: Any, obs: Mapping[str, Tensor], cache: Any = None) -> tuple[EncoderOutput, Any]:
        """One step of B trajectories, obs [B, ...], from their carried windows -> (EncoderOutput, the
        :class:`agents.stream.StreamCache` after the step; its ``window`` is what to carry).

        Rows whose `window` is the one `cache` was left with continue from the cache (the new token's
        keys and values appended); the others are read from their window in one pass (a trajectory's
        first step, or a cache from other weights or other users). Same numbers either way."""
        from agents.stream import same_window

        go_on = torch.zeros(obs["history_items"].shape[0], dtype=torch.bool, device=obs["history_items"].device)
        if cache is not None:
            go_on = same_window(window, cache.window) & (window.count > 0)
        if bool(go_on.all()):
            return self._step(cache, obs)
        if not bool(go_on.any()):
            return self._start(window, obs)
        rows = lambda mapping, keep: {k: v[keep] for k, v in mapping.items()}  # noqa: E731
        kept, kept_cache = self._step(cache.select(go_on), rows(obs, go_on))
        fresh, fresh_cache = self._start(window.select(~go_on), rows(obs, ~go_on))
        merged = EncoderOutput(*(None if a is None else merge_rows(go_on, a, b) for a, b in zip(kept, fresh)))
        return merged, fresh_cache.merged(go_on, kept_cache)

    def _start(self, window: Any, obs: Mapping[str, Tensor]) -> tuple[EncoderOutput, Any]:
        out, read = self.forward_sequence(window, {k: v[:, None] for k, v in obs.items()})
        cache = self.history.cache_from(read, self.target_attention)
        return EncoderOutput(*(None if x is None else x[:, 0] for x in out)), cache

    def _step(self, cache: Any, obs: Mapping[str, Tensor]) -> tuple[EncoderOutput, Any]:
        state, cache, readable = self.history.step(cache, obs, self.target_attention)
        candidates, queries, folds = self._candidates(obs)
        user, logits = self._scored(
            state[:, None].expand_as(candidates),
            candidates,
            queries,
            folds,
            cache.target_keys,
            cache.target_values,
            readable[:, None].expand(-1, candidates.shape[1], -1),
        )
        return EncoderOutput(state, candidates, user, logits), cache


def merge_rows(first: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Rows of `a` where `first` [B] is True and of `b` elsewhere, in order (a, b hold just those rows)."""
    out = a.new_empty((first.shape[0], *a.shape[1:]))
    out[first], out[~first] = a, b
    return out
