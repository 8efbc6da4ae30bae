"""The history read once per trajectory: a causal Transformer whose state is carried from step to step.

The window encoder (:class:`agents.encoder.HistoryEncoder`) reads each observation's H-entry history
afresh, so a trajectory of T steps costs T passes over H tokens although consecutive windows share
H - 1 of them. :class:`StreamHistoryEncoder` reads each interaction once:

- A token is one interaction, context-free: item-id embedding + proj(item features) + proj(response
  features). The environments append one history entry per step, so step t reads one new token (the
  observation's newest entry); a trajectory's first step reads every real entry of its history (the
  past the user arrived with).
- ``n_layers`` pre-LayerNorm blocks run over the tokens causally with a sliding window: a token attends
  to itself and the ``stream_window - 1`` real tokens before it. Positions are rotary (RoPE), counted
  in tokens since the trajectory began, so cached keys stay valid as the trajectory grows. Token rows
  skip the last block (only its keys and values are read), as in the window encoder.
- At each step a readout row (the CLS token + proj(the step's context)) reads, in every block, the
  last ``memory`` tokens and itself; its output, layer-normed, is the state. Target attention reads
  the same tokens' embeddings.

Three ways to run it give the same numbers (tests/test_stream.py):

- :meth:`StreamHistoryEncoder.read`: one causal pass over a chunk of T steps (observations
  ``[B, T, ...]``) from a :class:`CarriedWindow` (learning, on RLlib's ``max_seq_len`` sequences);
- :meth:`StreamHistoryEncoder.step` with a :class:`StreamCache`: one step, the new token's keys and
  values appended to cached ones (sampling and serving: the feed-forward and projection work per step
  does not grow with the history);
- ``forward(obs)``: each observation read afresh, as the first step of a trajectory (stateless callers:
  offline ranking metrics, the supervised warm start).

What is carried (:class:`CarriedWindow`, the RLlib module state): the last R raw tokens (ids, response
features, mask) and the count of tokens read, R = max(W, M) + (L - 1)(W - 1) for window W, memory M
and L blocks: everything the next step's state depends on, so a chunk read from a carried window
computes exactly what the step-by-step stream computes.

Time on lifetimes: a history entry's "days ago" column moves as days pass, but a token is read once.
A token keeps the value it had when it was first read: the days from the interaction to the step
that read it, i.e. to the next interaction (0 within a session, the gap after a session's last one).
A trajectory's first observation gives that by differencing its entries' days ago.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.encoder import (
    BlockStack,
    EncoderConfig,
    _autocast,
    _ids,
    _init_weights,
    _item_table,
    add_token_parts,
    attention,
    merge_rows,
)
from agents.lora import linear_weights

ROPE_BASE = 10_000.0


class CarriedWindow(NamedTuple):
    """What is carried between steps of one trajectory (leading user axis B).

    items [B, R] long, features [B, R, F_hist] float, mask [B, R] bool (right-aligned, oldest
    first): the last R tokens read; count [B] long: tokens read since the trajectory began
    (0: nothing yet, the next observation opens the trajectory).
    """

    items: Tensor
    features: Tensor
    mask: Tensor
    count: Tensor

    @staticmethod
    def empty(batch: int, length: int, n_features: int, device: torch.device | str = "cpu") -> CarriedWindow:
        return CarriedWindow(
            torch.zeros(batch, length, dtype=torch.long, device=device),
            torch.zeros(batch, length, n_features, device=device),
            torch.zeros(batch, length, dtype=torch.bool, device=device),
            torch.zeros(batch, dtype=torch.long, device=device),
        )

    @staticmethod
    def from_state(state: Mapping[str, Tensor]) -> CarriedWindow:
        """From an RLlib state dict (any dtypes) to typed tensors."""
        return CarriedWindow(
            _ids(state["items"]), state["features"].float(), state["mask"] > 0.5, _ids(state["count"]).reshape(-1)
        )

    def as_state(self) -> dict[str, Tensor]:
        """To an RLlib state dict (float mask, long ids and count)."""
        return {"items": self.items, "features": self.features, "mask": self.mask.float(), "count": self.count}

    def select(self, rows: Tensor) -> CarriedWindow:
        return CarriedWindow(*(t[rows] for t in self))

    def where(self, keep: Tensor, other: CarriedWindow) -> CarriedWindow:
        """Row by row: this window where `keep` [B] bool is True, `other`'s elsewhere (e.g. a fresh one)."""
        return CarriedWindow(*(torch.where(keep.reshape(-1, *[1] * (a.dim() - 1)), a, b) for a, b in zip(self, other)))


STEP_LANES = 8  # steps of one user read out together against one range of its tokens (see StepBlocks)


class StepBlocks(NamedTuple):
    """The steps a chunk reads out, in blocks of up to `lanes` consecutive steps of one user. A block
    shares one contiguous range of L packed tokens (what its first step reads, up to what its last
    reads), so the readouts and the target attention run as [blocks, lanes] against [blocks, L]
    instead of one gather of M keys per step.

    user, step [nb, lanes] long: the (user, step) of each lane (0 where empty); valid [nb, lanes]
    bool; position [nb, lanes] long: the readout's position (after the tokens it reads);
    key_index [nb, L] long into the packed tokens; reads [nb, lanes, L] bool: which of the block's
    keys each lane reads (the last M tokens its user had read by then).
    """

    user: Tensor
    step: Tensor
    valid: Tensor
    position: Tensor
    key_index: Tensor
    reads: Tensor

    def take(self, x: Tensor) -> Tensor:
        """x [S, ...] (per token) -> [nb, L, ...]: each block's keys' rows."""
        return x[self.key_index]


def step_blocks(
    steps: Tensor, read_by: Tensor, start: Tensor, older: Tensor, memory: int, lanes: int, size: int
) -> StepBlocks:
    """Blocks of the steps to read out: steps [B, T] bool; read_by [B, T] tokens each user had read
    by each step; start [B] each user's first packed token; older [B] tokens read before those;
    `size` tokens packed in all."""
    device = steps.device
    per_user = steps.sum(1)
    blocks_of = (per_user + lanes - 1) // lanes
    first_block = blocks_of.cumsum(0) - blocks_of
    n = int(blocks_of.sum())
    user, step = steps.nonzero(as_tuple=True)  # [K], user by user, steps in order
    rank = torch.arange(len(user), device=device) - (per_user.cumsum(0) - per_user)[user]
    block, lane = first_block[user] + rank // lanes, rank % lanes
    grid = lambda value, dtype=torch.long: torch.zeros(n, lanes, dtype=dtype, device=device).index_put_(  # noqa: E731
        (block, lane), value
    )
    slot_user, slot_step, valid = grid(user), grid(step), grid(torch.ones_like(user, dtype=torch.bool), torch.bool)
    end = grid(start[user] + read_by[user, step])  # exclusive end of what each lane reads
    low = end[:, 0] - memory  # lane 0 of a block is always a step
    span = int((end.max(1).values - low).max()) if n else 1
    key_index = low[:, None] + torch.arange(span, device=device)  # [nb, L]
    first = start[slot_user[:, 0]][:, None]
    reads = (
        valid[:, :, None]
        & (key_index[:, None, :] >= torch.maximum(end - memory, first)[:, :, None])
        & (key_index[:, None, :] < end[:, :, None])
    )
    position = grid(older[user] + read_by[user, step])
    return StepBlocks(slot_user, slot_step, valid, position, key_index.clamp(0, size - 1), reads)


class StreamRead(NamedTuple):
    """What :meth:`StreamHistoryEncoder.read` returns for a chunk of T steps of B users.

    The users' tokens are packed into one row of S (user by user, each user's in the order they are
    read: no padding is computed). state [B, T, d] (zeros at steps not read out); blocks: the steps
    read out (:class:`StepBlocks`); tokens [S, d] the token embeddings (target attention's keys);
    segment [S] and position [S] long: each token's user and position in its trajectory; keys,
    values: per block of the Transformer, [S, heads, d_head] of the token rows (rotated); start, end
    [B]: each user's tokens are [start, end) of S; window: the CarriedWindow after the chunk's last step.
    """

    state: Tensor
    blocks: StepBlocks
    tokens: Tensor
    segment: Tensor
    position: Tensor
    keys: list[Tensor]
    values: list[Tensor]
    start: Tensor
    end: Tensor
    window: CarriedWindow

    def last(self, x: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """x [S, ...] -> ([B, size, ...] each user's last `size` tokens' rows, right-aligned, zeros where
        the user has fewer; valid [B, size] bool)."""
        index = self.end[:, None] - size + torch.arange(size, device=x.device)
        valid = index >= self.start[:, None]
        index = torch.where(valid, index, 0)
        return x[index].masked_fill(~valid.reshape(*valid.shape, *[1] * (x.dim() - 1)), 0), valid


_ROPE_TABLES: dict[tuple[int, torch.device], Tensor] = {}


def _rope_table(half: int, size: int, device: torch.device) -> Tensor:
    """[>= size, 2, half] float32 cos and sin of position x frequency, computed once (in float64) and
    grown by doubling: every path rotates a position by the same numbers."""
    table = _ROPE_TABLES.get((half, device))
    if table is None or table.shape[0] < size:
        rows = 1 << max(10, int(size - 1).bit_length())
        inv = ROPE_BASE ** (-torch.arange(half, dtype=torch.float64) / half)
        angle = torch.arange(rows, dtype=torch.float64)[:, None] * inv
        table = torch.stack([angle.cos(), angle.sin()], dim=1).float().to(device)
        _ROPE_TABLES[(half, device)] = table
    return table


def rotation(position: Tensor, d_head: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """cos and sin [..., L, 1, d_head // 2] of positions [..., L] (long, >= 0), for :func:`rope`: one
    lookup shared by every block's queries and keys."""
    half = d_head // 2
    size = int(position.max()) + 1 if position.numel() else 1
    cos, sin = _rope_table(half, size, position.device)[position].to(dtype).unbind(-2)
    return cos[..., None, :], sin[..., None, :]


def rope(x: Tensor, turn: tuple[Tensor, Tensor]) -> Tensor:
    """Rotary position embedding: x [..., L, heads, d_head] rotated by `turn` (:func:`rotation` of its
    positions; pairs of the two halves of d_head, frequencies ROPE_BASE^(-2i / d_head)): dot products of
    two rotated vectors depend on their positions' difference only."""
    cos, sin = turn
    half = cos.shape[-1]
    a, b = x[..., :half], x[..., half : 2 * half]
    return torch.cat([a * cos - b * sin, a * sin + b * cos, x[..., 2 * half :]], dim=-1)


def first_seen_days(features: Tensor, mask: Tensor, column: int, days_scale: float) -> Tensor:
    """features [B, H, F] of one observation's history, mask [B, H]: column `column` (days ago, as
    log1p(days) / log1p(days_scale), capped at 1) turned into what each entry showed when first read:
    the days to the next entry; the newest keeps its own. Right-aligned histories (real entries a
    suffix), as the environments build them."""
    unit = math.log1p(days_scale)
    days = torch.expm1(features[..., column].double() * unit)
    following = torch.cat([days[:, 1:], torch.zeros_like(days[:, :1])], dim=1)
    newest = torch.zeros_like(mask)
    newest[:, -1] = True
    gap = torch.where(newest, days, (days - following).clamp(min=0.0))
    seen = (torch.log1p(gap) / unit).clamp(max=1.0).to(features.dtype)
    out = features.clone()
    out[..., column] = torch.where(mask, seen, features[..., column])
    return out


@dataclass
class StreamCache:
    """Sampling and serving state beside the carried window: per block, the rotated keys and values
    of the last `size` token rows (for the readout and the tokens still to come), the target
    attention's keys and values of their embeddings, and the window they were computed from.

    Ring buffers, written in place (a step copies nothing it keeps): the token at position p sits in
    slot p % size. keys, values: per block [B, size + 1, heads, d_head], the extra last slot holding
    the step's readout's own key and value; position [B, size] long; mask [B, size] bool;
    target_keys, target_values [B, size, d]; window: the CarriedWindow these caches belong to (a row
    continues from the cache only when the caller hands that window back).
    """

    keys: list[Tensor]
    values: list[Tensor]
    position: Tensor
    mask: Tensor
    target_keys: Tensor | None
    target_values: Tensor | None
    window: CarriedWindow

    def select(self, rows: Tensor) -> StreamCache:
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return StreamCache(
            [k[rows] for k in self.keys],
            [v[rows] for v in self.values],
            self.position[rows],
            self.mask[rows],
            pick(self.target_keys),
            pick(self.target_values),
            self.window.select(rows),
        )

    def merged(self, theirs_rows: Tensor, theirs: StreamCache) -> StreamCache:
        """A cache of B rows: `theirs` where `theirs_rows` [B] bool is True, this one's elsewhere (each
        holds just its rows, in order)."""
        both = lambda mine, other: None if mine is None else merge_rows(theirs_rows, other, mine)  # noqa: E731
        return StreamCache(
            [both(a, b) for a, b in zip(self.keys, theirs.keys)],
            [both(a, b) for a, b in zip(self.values, theirs.values)],
            both(self.position, theirs.position),
            both(self.mask, theirs.mask),
            both(self.target_keys, theirs.target_keys),
            both(self.target_values, theirs.target_values),
            CarriedWindow(*(both(a, b) for a, b in zip(self.window, theirs.window))),
        )


def same_window(a: CarriedWindow, b: CarriedWindow) -> Tensor:
    """[B] bool: rows where two carried windows are identical (ids, features, mask, count)."""
    if a.items.shape != b.items.shape:
        return torch.zeros(a.count.shape[0], dtype=torch.bool, device=a.count.device)
    return (
        (a.count == b.count)
        & (a.items == b.items).all(1)
        & (a.mask == b.mask).all(1)
        & (a.features == b.features).flatten(1).all(1)
    )


class StreamHistoryEncoder(nn.Module):
    """The history read once per trajectory (module docstring): interactions -> state ``[B, d_model]``
    per step, with a carried window.

    Sizes: W = ``stream_window`` (0: history_len), M = ``memory`` (0: history_len), L = ``n_layers``;
    ``carry_len`` R = max(W, M) + (L - 1)(W - 1) tokens are carried; ``cache_len`` = max(W, M) keys
    and values per block are cached when sampling. Same parameter names as the window encoder but no
    position table (positions are rotary).
    """

    def __init__(
        self,
        config: EncoderConfig,
        item_embedding: nn.Embedding | None = None,
        item_features: Tensor | None = None,
        days_scale: float = 365.0,
    ) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.window = config.stream_window or config.history_len
        self.memory = config.memory or config.history_len
        self.cache_len = max(self.window, self.memory)
        self.carry_len = self.cache_len + (config.n_layers - 1) * (self.window - 1)
        self.days_scale = float(days_scale)
        add_token_parts(self, config, item_features)
        self.cls_token = nn.Parameter(torch.empty(d))
        self.drop = nn.Dropout(config.dropout)
        self.stack = BlockStack(config)
        self.final_norm = nn.LayerNorm(d)
        self.apply(_init_weights)
        nn.init.normal_(self.cls_token, std=0.02)
        self.item_embedding = _item_table(config, item_embedding)

    @property
    def output_dim(self) -> int:
        return self.config.d_model

    # ------------------------------------------------------------------ pieces
    def embed_tokens(self, items: Tensor, features: Tensor, mask: Tensor) -> Tensor:
        """items [..., N], features [..., N, F_hist], mask [..., N] -> token embeddings [..., N, d]
        (zeros where masked: padding cannot leak, even NaN)."""
        dtype = self.cls_token.dtype
        x = self.item_embedding(items)
        if self.item_proj is not None:
            if self.item_features is None:
                raise ValueError("StreamHistoryEncoder needs an item_features table (item_feature_dim > 0)")
            x = x + self.item_proj(self.item_features[items].to(dtype))
        if self.response_proj is not None:
            x = x + self.response_proj(features.to(dtype))
        return self.drop(x.masked_fill(~mask[..., None], 0.0))

    def embed_readout(self, context: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        """context [..., F_ctx] -> readout rows [..., d] (the CLS token + proj(context))."""
        cls = self.cls_token.expand(*shape, -1)
        if self.context_proj is not None:
            cls = cls + self.context_proj(context.to(self.cls_token.dtype))
        return self.drop(cls)

    def fresh_window(self, batch: int, device: torch.device | str) -> CarriedWindow:
        return CarriedWindow.empty(batch, self.carry_len, self.config.history_feature_dim, device)

    def _first_seen(self, features: Tensor, mask: Tensor) -> Tensor:
        column = self.config.days_ago_feature
        return features if column < 0 else first_seen_days(features, mask, column, self.days_scale)

    def _qkv(
        self, block: nn.Module, x: Tensor, turn: tuple[Tensor, Tensor], keys_only: bool = False
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """x [B, L, d] -> q, k and v [B, L, heads, d_head] of `block`'s attention, q and k rotated by
        `turn` (:func:`rotation` of the rows' positions); q None with `keys_only`: rows nothing queries."""
        b, length, d = x.shape
        heads = self.config.n_heads
        proj = block.attn.qkv
        if keys_only:
            weight, bias = linear_weights(proj)
            kv = F.linear(block.ln1(x), weight[d:], bias[d:]).view(b, length, 2, heads, d // heads)
            k, v = kv.unbind(2)
            return None, rope(k, turn), v
        q, k, v = proj(block.ln1(x)).view(b, length, 3, heads, d // heads).unbind(2)
        return rope(q, turn), rope(k, turn), v

    def _finish(self, block: nn.Module, x: Tensor, attended: Tensor) -> Tensor:
        """x [B, L, d] + out(attended [B, L, heads, d_head]), then the feed-forward half of `block`."""
        b, length = attended.shape[:2]
        x = x + block.drop(block.attn.out(attended.reshape(b, length, -1)))
        return x + block.ff(block.ln2(x))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, keep: Tensor) -> Tensor:
        """q [B, Lq, heads, dh], k, v [B, Lk, heads, dh], keep bool [B, Lq, Lk] -> [B, Lq, heads, dh]."""
        drop = self.config.dropout if self.training else 0.0
        y = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), keep[:, None], drop)
        return y.transpose(1, 2)

    # ------------------------------------------------------------------- chunks
    def tokens_of(self, window: CarriedWindow, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The chunk's tokens: the carried ones, then what each of the T steps reads.

        obs: history_items [B, T, H], history_features [B, T, H, F], history_mask [B, T, H].
        Returns items [B, N], features [B, N, F], mask [B, N] bool and first_step [N] long (the
        step that reads each token first; the carried ones 0), N = R + H + T - 1: step 0 reads its
        observation's whole history where the trajectory opens (count 0), else its newest entry;
        each later step its newest entry (padding steps, all-zero observations, read nothing).
        """
        items, features = _ids(obs["history_items"]), obs["history_features"]
        mask = obs["history_mask"] > 0.5
        b, t, h = items.shape
        opens = window.count == 0
        newest = torch.zeros(h, dtype=torch.bool, device=items.device)
        newest[-1] = True
        first_mask = mask[:, 0] & (opens[:, None] | newest)
        first_features = self._first_seen(features[:, 0], mask[:, 0])
        all_items = torch.cat([window.items, items[:, 0], items[:, 1:, -1]], dim=1)
        all_features = torch.cat([window.features, first_features, features[:, 1:, -1]], dim=1)
        all_mask = torch.cat([window.mask, first_mask, mask[:, 1:, -1]], dim=1)
        first_step = torch.cat(
            [
                torch.zeros(window.items.shape[1] + h, dtype=torch.long, device=items.device),
                torch.arange(1, t, device=items.device),
            ]
        )
        return all_items, all_features, all_mask, first_step

    def read(self, window: CarriedWindow, obs: Mapping[str, Tensor], steps: Tensor | None = None) -> StreamRead:
        """One causal pass over a chunk of T steps of B users from their `window` (see :meth:`tokens_of`).

        obs: the history keys [B, T, ...] and context [B, T, F_ctx]. Rows of a trajectory that
        opens in the chunk start from an empty window (count 0). `steps` [B, T] bool: the steps to
        read out (default all): RLlib pads sequences to max_seq_len, and padding is neither read
        nor computed.
        """
        with _autocast(obs["history_items"], self.config.autocast_bf16):
            return self._read(window, obs, steps)

    def _read(self, window: CarriedWindow, obs: Mapping[str, Tensor], steps: Tensor | None) -> StreamRead:
        items, features, mask, first_step = self.tokens_of(window, obs)
        b, t, _ = obs["history_items"].shape
        device = items.device
        # Every user's real tokens packed into one row, user by user, each in read order, and one
        # inert token at the end (so that an empty batch still indexes): positions are contiguous
        # within a user, the sliding window runs in blocks, a step reads a range of the row.
        user, column = mask.nonzero(as_tuple=True)  # [S - 1]
        per_user = mask.sum(1)
        start = per_user.cumsum(0) - per_user
        end = start + per_user
        older = window.count - window.mask.sum(1)  # tokens read before the carried ones
        segment = torch.cat([user, user.new_full((1,), -1)])
        items = torch.cat([items[user, column], items.new_zeros(1)])
        features = torch.cat([features[user, column].float(), features.new_zeros(1, features.shape[-1])])
        position = torch.cat([older[user] + torch.arange(len(user), device=device) - start[user], user.new_zeros(1)])
        counts = torch.zeros(b, t, dtype=torch.long, device=device)
        counts.index_put_((user, first_step[column]), torch.ones_like(user), accumulate=True)
        read_by = counts.cumsum(1)  # [B, T] tokens each user had read by each step
        if steps is None:
            steps = torch.ones(b, t, dtype=torch.bool, device=device)
        lanes = min(STEP_LANES, t)
        slots = step_blocks(steps, read_by, start, older, self.memory, lanes, len(segment))
        own = torch.eye(lanes, dtype=torch.bool, device=device).expand(len(slots.user), lanes, lanes)
        readout_keys = torch.cat([slots.reads, own], dim=2)  # a readout reads its tokens and itself

        x = self.embed_tokens(items[None], features[None], (segment >= 0)[None])  # [1, S, d]
        tokens = x[0]
        context = obs.get("context")
        c = self.embed_readout(None if context is None else context[slots.user, slots.step], slots.user.shape)
        keys, values = [], []
        blocks = self.stack.blocks
        d_head = self.config.d_model // self.config.n_heads
        token_turn, readout_turn = rotation(position[None], d_head, x.dtype), rotation(slots.position, d_head, x.dtype)
        for i, block in enumerate(blocks):
            last = i == len(blocks) - 1
            q, k, v = self._qkv(block, x, token_turn, keys_only=last)
            keys.append(k[0])
            values.append(v[0])
            qc, kc, vc = self._qkv(block, c, readout_turn)
            if not last:  # nothing reads the token rows of the last block
                x = self._finish(block, x, self._sliding(q[0], k[0], v[0], segment)[None])
            block_k = torch.cat([slots.take(k[0]), kc], dim=1)
            block_v = torch.cat([slots.take(v[0]), vc], dim=1)
            c = self._finish(block, c, self._attend(qc, block_k, block_v, readout_keys))
        state = c.new_zeros(b, t, c.shape[-1], dtype=torch.float32)
        state[slots.user[slots.valid], slots.step[slots.valid]] = self.final_norm(c[slots.valid]).float()
        out = StreamRead(state, slots, tokens, segment, position, keys, values, start, end, window)
        carried_items, carried = out.last(items, self.carry_len)
        carried_features, _ = out.last(features, self.carry_len)
        count = window.count + mask[:, window.items.shape[1] :].sum(1)
        return out._replace(window=CarriedWindow(carried_items, carried_features, carried, count))

    def _sliding(self, q: Tensor, k: Tensor, v: Tensor, segment: Tensor) -> Tensor:
        """Causal sliding-window attention over packed tokens: q, k, v [S, heads, d_head], segment [S]
        (the user of each token; -1: inert) -> [S, heads, d_head]. Token i reads tokens i - W + 1 .. i
        of its own user, in blocks of W: each block of queries against its own block and the one
        before (O(S W), not O(S^2))."""
        w = self.window
        s = segment.shape[0]
        pad = -s % w
        m = (s + pad) // w
        blocks = lambda z, fill=0: F.pad(z, (0, 0) * (z.dim() - 1) + (0, pad), value=fill).reshape(m, w, *z.shape[1:])  # noqa: E731
        before = lambda z, fill=0: F.pad(z[:-1], (0, 0) * (z.dim() - 1) + (1, 0), value=fill)  # noqa: E731  block j - 1
        pair = lambda z, fill=0: torch.cat([before(blocks(z, fill), fill), blocks(z, fill)], dim=1)  # noqa: E731
        ago = w + torch.arange(w, device=segment.device)[:, None] - torch.arange(2 * w, device=segment.device)
        same = pair(segment, -1)[:, None, :] == blocks(segment, -1)[:, :, None]  # [m, W, 2W]
        keep = (same & (ago >= 0) & (ago < w)) | (ago == 0)  # inert rows read themselves
        y = self._attend(blocks(q), pair(k), pair(v), keep)
        return y.reshape(m * w, *y.shape[2:])[:s]

    def forward_with_tokens(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Each observation ([B, ...]) read afresh -> (state [B, d], the token embeddings its readout
        may read [B, L, d], which of those it reads, bool [B, L])."""
        one = {k: v[:, None] for k, v in obs.items()}
        out = self.read(self.fresh_window(obs["history_items"].shape[0], obs["history_items"].device), one)
        return out.state[:, 0], out.blocks.take(out.tokens), out.blocks.reads[:, 0]

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        """obs [B, ...] -> state [B, d]: each observation read afresh, as a trajectory's first step."""
        return self.forward_with_tokens(obs)[0]

    # -------------------------------------------------------------------- steps
    def cache_from(self, out: StreamRead, target: nn.Module | None = None) -> StreamCache:
        """The sampling cache after a chunk's last step (`out` from :meth:`read`); with `target` (a
        :class:`~agents.encoder.TargetAttention`) its keys and values of the token embeddings too."""
        size = self.cache_len
        position, valid = out.last(out.position, size)
        slot = torch.where(valid, position % size, torch.arange(size, device=position.device))
        b = torch.arange(len(slot), device=slot.device)[:, None]

        def ring(x: Tensor, extra: int = 0) -> Tensor:
            last, _ = out.last(x, size)
            buffer = last.new_zeros((last.shape[0], size + extra, *last.shape[2:]))
            buffer[b, slot] = last
            return buffer

        target_keys = target_values = None
        if target is not None:
            with _autocast(out.tokens, self.config.autocast_bf16):
                target_keys, target_values = (ring(z) for z in target.key_values(out.tokens))
        mask = torch.zeros_like(valid)
        mask[b, slot] = valid
        return StreamCache(
            [ring(k, 1) for k in out.keys],
            [ring(v, 1) for v in out.values],
            ring(out.position),
            mask,
            target_keys,
            target_values,
            out.window,
        )

    def step(
        self, cache: StreamCache, obs: Mapping[str, Tensor], target: nn.Module | None = None
    ) -> tuple[Tensor, StreamCache, Tensor]:
        """One step of trajectories that continue from `cache` (count > 0): the observation's newest
        entry appended to the cached keys and values (and, with `target`, to the target attention's).

        obs [B, ...] -> (state [B, d], the cache after this step, readable [B, cache_len] bool: the
        cached tokens this step's readout reads).
        """
        with _autocast(obs["history_items"], self.config.autocast_bf16):
            return self._step(cache, obs, target)

    def _step(
        self, cache: StreamCache, obs: Mapping[str, Tensor], target: nn.Module | None
    ) -> tuple[Tensor, StreamCache, Tensor]:
        item = _ids(obs["history_items"][:, -1])
        feature = obs["history_features"][:, -1]
        real = obs["history_mask"][:, -1] > 0.5  # [B]
        window = cache.window
        size = self.cache_len
        position = window.count  # the new token's
        count = window.count + real.long()
        rows = real.nonzero()[:, 0]  # rows whose observation brings a token (all, but for empty histories)
        slot = position[rows] % size
        write = lambda buffer, value: buffer.index_put_((rows, slot), value[rows].to(buffer.dtype))  # noqa: E731
        x = self.embed_tokens(item[:, None], feature[:, None], real[:, None])  # [B, 1, d]
        if target is not None and cache.target_keys is not None:
            new_key, new_value = target.key_values(x)
            write(cache.target_keys, new_key[:, 0])
            write(cache.target_values, new_value[:, 0])
        c = self.embed_readout(obs.get("context"), (item.shape[0],))[:, None]
        write(cache.position, position)
        write(cache.mask, real)
        ago = position[:, None] - cache.position
        token_keys = (cache.mask & (ago >= 0) & (ago < self.window))[:, None]  # [B, 1, size]
        since = count[:, None] - cache.position
        readable = cache.mask & (since > 0) & (since <= self.memory)
        readout_keys = torch.cat([readable, readable.new_ones(readable.shape[0], 1)], dim=1)[:, None]
        blocks = self.stack.blocks
        turn = rotation(torch.stack([position, count], dim=1), self.config.d_model // self.config.n_heads, x.dtype)
        for i, block in enumerate(blocks):
            q, k, v = self._qkv(block, torch.cat([x, c], dim=1), turn)
            keys, values = cache.keys[i], cache.values[i]
            write(keys, k[:, 0])
            write(values, v[:, 0])
            keys[:, size], values[:, size] = k[:, 1], v[:, 1]  # the readout's own key and value
            if i < len(blocks) - 1:
                x = self._finish(block, x, self._attend(q[:, :1], keys[:, :size], values[:, :size], token_keys))
            c = self._finish(block, c, self._attend(q[:, 1:], keys, values, readout_keys))
        state = self.final_norm(c[:, 0]).float()
        carried = CarriedWindow(
            self.append(window.items, item, real),
            self.append(window.features, feature.float(), real),
            self.append(window.mask, real, real),
            count,
        )
        new = StreamCache(
            cache.keys, cache.values, cache.position, cache.mask, cache.target_keys, cache.target_values, carried
        )
        return state, new, readable

    @staticmethod
    def append(buffer: Tensor, new: Tensor, where: Tensor) -> Tensor:
        """buffer [B, S, ...] with new [B, ...] appended as its newest entry (the oldest dropped) on
        rows `where` [B] bool; other rows unchanged."""
        rolled = torch.cat([buffer[:, 1:], new[:, None].to(buffer.dtype)], dim=1)
        return torch.where(where.reshape(-1, *([1] * (buffer.dim() - 1))), rolled, buffer)


__all__ = [
    "CarriedWindow",
    "StreamCache",
    "StreamHistoryEncoder",
    "StreamRead",
    "first_seen_days",
    "rope",
    "rotation",
    "same_window",
]
