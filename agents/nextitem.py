"""Next-item models on plain item sequences (real logs such as MovieLens), ranking the whole catalog.

The same sequence models as `agents.supervised`, without an env around them: ``sasrec`` is the
project's Transformer history encoder (`agents.encoder.HistoryEncoder`), ``gru4rec`` its GRU
variant (`agents.sequence_models.GRUHistoryEncoder`); the item tower (`agents.encoder.ItemTower`,
sharing the id embeddings) gives every catalog item a vector, and the score of item i after a
history is the scaled dot product of the history's state and the item's vector
(`RecommenderEncoder.score`). Training: every prefix of every training sequence predicts its next
item, with softmax cross-entropy over all items (as SASRec and GRU4Rec are trained with a full
softmax on small catalogs). Histories are the last `max_len` items, right-aligned, no other
features (ratings and times are not used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.encoder import EncoderConfig, HistoryEncoder, RecommenderEncoder
from agents.sequence_models import KINDS, GRUHistoryEncoder
from simulator.params import check_int, check_range


@dataclass(frozen=True)
class NextItemParams:
    """Model and training of a next-item model (`kind` sasrec or gru4rec)."""

    kind: str = "sasrec"
    max_len: int = 50  # history tokens (the last max_len items)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ff_mult: int = 4
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        o = "nextitem"
        if self.kind not in KINDS:
            raise ValueError(f"{o}.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        check_int(o, "max_len", self.max_len, 1, 4096)
        check_int(o, "d_model", self.d_model, 1)
        check_int(o, "n_layers", self.n_layers, 1)
        check_int(o, "n_heads", self.n_heads, 1)
        if self.d_model % self.n_heads:
            raise ValueError(f"{o}.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        check_int(o, "ff_mult", self.ff_mult, 1)
        check_range(o, "dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_int(o, "epochs", self.epochs, 1)
        check_int(o, "batch_size", self.batch_size, 1)
        check_range(o, "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range(o, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_int(o, "seed", self.seed, 0)


def pad_histories(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(items [S, max_len] int64, mask [S, max_len] float32): each sequence's last max_len items,
    right-aligned (newest last), zeros and mask 0 before."""
    items = np.zeros((len(seqs), max_len), np.int64)
    mask = np.zeros((len(seqs), max_len), np.float32)
    for r, s in enumerate(seqs):  # one row per sequence; vectorised per row
        tail = np.asarray(s[-max_len:], np.int64)
        if tail.size:
            items[r, -tail.size :] = tail
            mask[r, -tail.size :] = 1.0
    return items, mask


def prefix_examples(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every prefix of every sequence with its next item: (items [M, max_len], mask [M, max_len],
    target [M]), M = sum(len(s) - 1). Built with one sliding window over the concatenated sequences."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    m = int(np.maximum(lengths - 1, 0).sum())
    items = np.zeros((m, max_len), np.int64)
    mask = np.zeros((m, max_len), np.float32)
    target = np.zeros(m, np.int64)
    row = 0
    for s in seqs:  # one pass per user (hundreds), each vectorised over its prefixes
        s = np.asarray(s, np.int64)
        n = s.size - 1
        if n <= 0:
            continue
        padded = np.concatenate([np.zeros(max_len, np.int64), s])
        valid = np.concatenate([np.zeros(max_len, np.float32), np.ones(s.size, np.float32)])
        ends = np.arange(1, n + 1) + max_len  # prefix t (1..n) ends before padded[t + max_len]
        window = ends[:, None] - max_len + np.arange(max_len)[None, :]
        items[row : row + n] = padded[window]
        mask[row : row + n] = valid[window]
        target[row : row + n] = s[1:]
        row += n
    return items, mask, target


class NextItemModel(nn.Module):
    """History encoder + item tower over the whole catalog. forward(items [B, H], mask [B, H]) ->
    logits [B, I] over every item."""

    def __init__(self, n_items: int, params: NextItemParams) -> None:
        super().__init__()
        self.config = EncoderConfig(
            n_items=n_items,
            history_len=params.max_len,
            item_feature_dim=0,
            history_feature_dim=0,
            context_dim=0,
            d_model=params.d_model,
            n_layers=params.n_layers,
            n_heads=params.n_heads,
            ff_mult=params.ff_mult,
            dropout=params.dropout,
            target_attention=False,  # per-candidate reads over every item would cost I x H per user
            attention_window=0,
        )
        self.encoder = RecommenderEncoder(self.config)
        if params.kind == "gru4rec":
            self.encoder.history = GRUHistoryEncoder(self.config, self.encoder.item_tower.item_embedding)
        self.register_buffer("all_items", torch.arange(n_items), persistent=False)

    @property
    def history(self) -> HistoryEncoder:
        return self.encoder.history

    def forward(self, items: Tensor, mask: Tensor) -> Tensor:
        state = self.encoder.history({"history_items": items, "history_mask": mask})  # [B, d]
        vectors = self.encoder.item_tower(self.all_items)  # [I, d]
        return state @ vectors.T / np.sqrt(vectors.shape[-1])


def train_next_item(
    seqs: list[np.ndarray], n_items: int, params: NextItemParams, log=None
) -> tuple[NextItemModel, dict]:
    """Train on every prefix of `seqs` (time-ordered item ids < n_items). Returns the model (eval
    mode) and a record: examples, epochs, seconds, last epoch's mean loss. Same seed, same model."""
    check_int("nextitem", "n_items", n_items, 2)
    if not seqs or max(len(s) for s in seqs) < 2:
        raise ValueError("next-item training needs a sequence of at least 2 items")
    top = max(int(np.max(s)) for s in seqs if len(s))
    if top >= n_items:
        raise ValueError(f"item id {top} is out of range: n_items is {n_items}")
    items, mask, target = prefix_examples(seqs, params.max_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = NextItemModel(n_items, params)
        opt = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        rng = np.random.default_rng(params.seed)
        x, m, y = torch.as_tensor(items), torch.as_tensor(mask), torch.as_tensor(target)
        start, loss_mean = time.time(), float("nan")
        model.train()
        for epoch in range(params.epochs):
            order = torch.as_tensor(rng.permutation(len(y)))
            total = 0.0
            for b in range(0, len(y), params.batch_size):
                idx = order[b : b + params.batch_size]
                loss = F.cross_entropy(model(x[idx], m[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            loss_mean = total / len(y)
            if log:
                took = time.time() - start
                log(f"{params.kind} epoch {epoch + 1}/{params.epochs}: loss {loss_mean:.4f} ({took:.0f} s)")
    model.eval()
    return model, dict(examples=int(len(y)), epochs=params.epochs, seconds=time.time() - start, loss=loss_mean)


@torch.no_grad()
def score_all(model: NextItemModel, seqs: list[np.ndarray], batch_size: int = 512) -> np.ndarray:
    """[U, I] float32 scores of every item after each history in `seqs` (higher ranks first)."""
    items, mask = pad_histories(seqs, model.config.history_len)
    model.eval()
    out = [
        model(torch.as_tensor(items[b : b + batch_size]), torch.as_tensor(mask[b : b + batch_size])).numpy()
        for b in range(0, len(items), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)
