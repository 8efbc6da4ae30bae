"""Fast tests of agents.encoder with tiny configs."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.encoder import (
    EncoderConfig,
    EncoderOutput,
    HistoryEncoder,
    ItemTower,
    RecommenderEncoder,
    seen_in_history,
)

N_ITEMS, H, C, F_ITEM, F_HIST, F_CTX, D = 30, 6, 5, 3, 2, 2, 16
# The catalog's item features [n_items, F_item]: the history carries ids only and the
# encoder looks their features up in this table.
ITEM_FEATURES = torch.randn(N_ITEMS, F_ITEM, generator=torch.Generator().manual_seed(123))


def make_config(**overrides) -> EncoderConfig:
    sizes = dict(
        n_items=N_ITEMS,
        history_len=H,
        item_feature_dim=F_ITEM,
        history_feature_dim=F_HIST,
        context_dim=F_CTX,
        d_model=D,
        n_layers=2,
        n_heads=2,
        ff_mult=2,
    )
    return EncoderConfig(**{**sizes, **overrides})


def make_obs(lengths, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random batch whose row b has lengths[b] real, right-aligned interactions."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.zeros(b, H)
    for row, n in enumerate(lengths):
        if n:
            mask[row, H - n :] = 1.0
    pad = mask.unsqueeze(-1)
    return {
        "history_items": torch.randint(0, N_ITEMS, (b, H), generator=g) * mask.long(),
        "history_features": torch.randn(b, H, F_HIST, generator=g) * pad,
        "history_mask": mask,
        "candidate_items": torch.randint(0, N_ITEMS, (b, C), generator=g),
        "candidate_features": torch.randn(b, C, F_ITEM, generator=g),
        "context": torch.randn(b, F_CTX, generator=g),
    }


@pytest.fixture
def model() -> RecommenderEncoder:
    torch.manual_seed(0)
    return RecommenderEncoder(make_config(), item_features=ITEM_FEATURES).eval()


def test_output_shapes(model):
    obs = make_obs([H, 3, 1, 0])
    out = model(obs)
    assert isinstance(out, EncoderOutput)
    assert out.state.shape == (4, D)
    assert out.candidates.shape == (4, C, D)
    assert out.logits.shape == (4, C)
    assert all(t.dtype == torch.float32 for t in out)
    assert out.user.shape == (4, C, D)
    expected = torch.einsum("bcd,bcd->bc", out.user, out.candidates) / D**0.5
    torch.testing.assert_close(out.logits, expected)
    # The action head follows the candidate count: no fixed output layer.
    obs_more = make_obs([H, 3])
    obs_more["candidate_items"] = torch.randint(0, N_ITEMS, (2, 9))
    obs_more["candidate_features"] = torch.randn(2, 9, F_ITEM)
    assert model(obs_more).logits.shape == (2, 9)


def test_target_attention_gives_each_candidate_its_own_view_of_the_user(model):
    obs = make_obs([H, 3, 1, 0])
    with torch.no_grad():
        for layer in (model.target_attention.query, model.target_attention.key_value):  # past the small init
            layer.weight.normal_(0.0, 1.0)
        out = model(obs)
    read = out.user - out.state[:, None, :]
    # Candidates read the history differently; an empty history reads nothing (the null slot).
    assert read[:3].std(dim=1).mean() > 1e-4
    torch.testing.assert_close(read[3], torch.zeros_like(read[3]), rtol=0, atol=1e-6)
    torch.manual_seed(0)
    plain = RecommenderEncoder(make_config().replace(target_attention=False), item_features=ITEM_FEATURES).eval()
    with torch.no_grad():
        out = plain(obs)
    torch.testing.assert_close(out.user, out.state[:, None, :].expand_as(out.user))
    assert plain.target_attention is None


def test_item_table_is_shared(model):
    assert model.item_tower.item_embedding is model.history.item_embedding
    n_tables = sum(isinstance(m, torch.nn.Embedding) for m in model.modules())
    assert n_tables == 1


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(0, H), min_size=1, max_size=4), seed=st.integers(0, 10_000))
def test_padding_does_not_change_state(lengths, seed):
    torch.manual_seed(0)
    model = RecommenderEncoder(make_config(), item_features=ITEM_FEATURES).eval()
    obs = make_obs(lengths, seed)
    noisy = {k: v.clone() for k, v in obs.items()}
    pad = obs["history_mask"] == 0
    g = torch.Generator().manual_seed(seed + 1)
    noisy["history_items"][pad] = torch.randint(0, N_ITEMS, (int(pad.sum()),), generator=g)
    noisy["history_features"][pad] = float("nan")  # not even NaN may leak through
    # Items seen only in padding get garbage features: the same weights, another table.
    garbage = copy.deepcopy(model)
    unused = torch.ones(N_ITEMS, dtype=torch.bool)
    unused[obs["history_items"][~pad]] = False
    table = garbage.history.item_features
    table[unused] = 100.0 * torch.randn(int(unused.sum()), F_ITEM, generator=g)
    with torch.no_grad():
        a, b = model(obs), garbage(noisy)
    torch.testing.assert_close(a.state, b.state, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)


def test_order_matters(model):
    obs = make_obs([4, H])
    permuted = {k: v.clone() for k, v in obs.items()}
    real = torch.arange(H - 4, H)
    perm = real[[1, 3, 0, 2]]
    for key in ("history_items", "history_features"):  # item features follow the ids
        permuted[key][0, real] = obs[key][0, perm]
        permuted[key][1] = obs[key][1].flip(0)
    with torch.no_grad():
        a, b = model(obs).state, model(permuted).state
    assert not torch.allclose(a[0], b[0], atol=1e-4)
    assert not torch.allclose(a[1], b[1], atol=1e-4)


def test_history_item_features_come_from_the_table(model):
    """The history carries ids only: the encoder uses the table rows of the real items."""
    obs = make_obs([H, 3])
    other = copy.deepcopy(model)
    item = int(obs["history_items"][1, -1])  # a real item of row 1
    other.history.item_features[item] += 1.0
    with torch.no_grad():
        a, b = model(obs).state, other(obs).state
    assert not torch.allclose(a[1], b[1], atol=1e-4)
    if item not in obs["history_items"][0].tolist():
        torch.testing.assert_close(a[0], b[0])  # row 0 never saw the item
    # Without a table, item features have nowhere to come from.
    with pytest.raises(ValueError, match="item_features"):
        HistoryEncoder(make_config())(obs)


def test_empty_history_is_finite(model):
    obs = make_obs([0, 0, 0])
    out = model(obs)
    assert all(torch.isfinite(t).all() for t in out)
    # The context still reaches the state through the CLS token.
    assert not torch.allclose(out.state[0], out.state[1])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = RecommenderEncoder(make_config(dropout=0.1), item_features=ITEM_FEATURES).train()
    out = model(make_obs([H, 4, 1, 0]))
    # Random weights: a plain sum of a LayerNorm output has zero gradient.
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in out)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_seen_flag_marks_exactly_the_candidates_in_the_real_history():
    obs = make_obs([H, 2, 0])
    obs["history_items"][1, : H - 2] = 7  # padding slots hold an id that must not count
    obs["candidate_items"][:, 0] = obs["history_items"][:, -1]  # the last entry (row 2: none)
    obs["candidate_items"][:, 1] = 7
    obs["candidate_items"][0, 2] = obs["history_items"][0, 0]  # the oldest entry of a full history
    seen = seen_in_history(obs)
    truth = torch.tensor(
        [
            [
                c in obs["history_items"][b][obs["history_mask"][b] > 0].tolist()
                for c in obs["candidate_items"][b].tolist()
            ]
            for b in range(3)
        ]
    ).float()
    torch.testing.assert_close(seen, truth)
    assert seen[0, 0] == seen[0, 2] == 1 and seen[1, 0] == 1 and seen[2].sum() == 0
    assert seen[1, 1] == float(7 in obs["history_items"][1, H - 2 :].tolist())


def test_seen_flag_moves_only_the_scores_of_seen_candidates():
    """With seen_flag the seen candidates' vectors get a learned offset; the others are untouched."""
    torch.manual_seed(0)
    plain = RecommenderEncoder(make_config(target_attention=False), item_features=ITEM_FEATURES).eval()
    flagged = RecommenderEncoder(make_config(target_attention=False, seen_flag=True), item_features=ITEM_FEATURES)
    flagged.load_state_dict({**plain.state_dict(), "seen": torch.ones(D)})
    obs = make_obs([H, 3])
    obs["candidate_items"][:, 0] = obs["history_items"][:, -1]
    seen = seen_in_history(obs).bool()
    with torch.no_grad():
        a, b = plain(obs).logits, flagged.eval()(obs).logits
    torch.testing.assert_close(a[~seen], b[~seen])
    assert (a[seen] != b[seen]).all()
    assert "seen" not in dict(plain.named_parameters())


def test_float_ids_accepted(model):
    obs = make_obs([H, 2])
    as_float = dict(obs)
    # SB3 casts Boxes to float32; rounding must recover the ids.
    as_float["history_items"] = obs["history_items"].float() - 1e-4
    as_float["candidate_items"] = obs["candidate_items"].float() + 1e-4
    as_float["history_mask"] = obs["history_mask"].bool()
    with torch.no_grad():
        a, b = model(obs), model(as_float)
    torch.testing.assert_close(a.logits, b.logits)


def test_standalone_parts_and_zero_feature_dims():
    torch.manual_seed(0)
    cfg = make_config(item_feature_dim=0, history_feature_dim=0, context_dim=0, n_layers=1)
    obs = {
        "history_items": torch.randint(0, N_ITEMS, (2, 4)),  # shorter than history_len
        "history_mask": torch.ones(2, 4),
        "candidate_items": torch.randint(0, N_ITEMS, (2, C)),
    }
    out = RecommenderEncoder(cfg)(obs)
    assert out.logits.shape == (2, C)
    assert HistoryEncoder(cfg)(obs).shape == (2, D)
    catalog = ItemTower(make_config())(torch.arange(N_ITEMS), torch.randn(N_ITEMS, F_ITEM))
    assert catalog.shape == (N_ITEMS, D)
    with pytest.raises(ValueError, match="history_len"):
        HistoryEncoder(cfg)({**obs, "history_items": torch.zeros(2, H + 1), "history_mask": torch.ones(2, H + 1)})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_items", 0),
        ("history_len", -1),
        ("item_feature_dim", -2),
        ("d_model", 0),
        ("n_layers", 0),
        ("n_heads", 0),
        ("ff_mult", 0),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("n_items", 2.5),
        ("n_layers", True),
        ("compile", "yes"),
        ("autocast_bf16", 1),
        ("attention_window", -1),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=rf"EncoderConfig\.{field}"):
        make_config(**{field: value})


def test_config_rejects_heads_not_dividing_d_model():
    with pytest.raises(ValueError, match=r"d_model.*n_heads"):
        make_config(d_model=18, n_heads=4)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_config().d_model = 8  # type: ignore[misc]


def _space() -> gym.spaces.Dict:
    box = lambda shape, low=-np.inf, high=np.inf: gym.spaces.Box(low, high, shape, np.float32)  # noqa: E731
    return gym.spaces.Dict(
        {
            "history_items": gym.spaces.Box(0, N_ITEMS - 1, (H,), np.int64),
            "history_features": box((H, F_HIST)),
            "history_mask": box((H,), 0.0, 1.0),
            "candidate_items": gym.spaces.Box(0, N_ITEMS - 1, (C,), np.int64),
            "candidate_features": box((C, F_ITEM)),
            "context": box((F_CTX,)),
        }
    )


def test_from_observation_space():
    space = _space()
    cfg = EncoderConfig.from_observation_space(space, d_model=D, n_heads=2)
    assert cfg == make_config(n_layers=2, ff_mult=4)
    assert EncoderConfig.from_observation_space(space, n_items=100).n_items == 100
    with pytest.raises(ValueError, match="n_items"):
        EncoderConfig.from_observation_space(space, n_items=N_ITEMS - 1)

    # A sample from the space runs through a model built from it (and the item table).
    model = RecommenderEncoder(cfg, item_features=ITEM_FEATURES)
    sample = {k: torch.as_tensor(v).unsqueeze(0) for k, v in space.sample().items()}
    assert model(sample).logits.shape == (1, C)

    # Batched (vector-env) spaces give the same sizes.
    batched = gym.vector.utils.batch_space(space, 3)
    assert EncoderConfig.from_observation_space(batched, d_model=D, n_heads=2) == cfg


def test_from_observation_space_rejects_non_dict():
    with pytest.raises(ValueError, match="Dict"):
        EncoderConfig.from_observation_space(gym.spaces.Box(0, 1, (3,)))


def test_blocks_match_torch_transformer_encoder():
    """Same weights in a stock pre-LN nn.TransformerEncoder give the same CLS output."""
    torch.manual_seed(0)
    encoder = HistoryEncoder(make_config(), item_features=ITEM_FEATURES).eval()
    layer = torch.nn.TransformerEncoderLayer(
        D, 2, dim_feedforward=2 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    reference = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(D), enable_nested_tensor=False).eval()
    with torch.no_grad():
        for ours, ref in zip(encoder.stack.blocks, reference.layers):
            ref.self_attn.in_proj_weight.copy_(ours.attn.qkv.weight)
            ref.self_attn.in_proj_bias.copy_(ours.attn.qkv.bias)
            ref.self_attn.out_proj.load_state_dict(ours.attn.out.state_dict())
            ref.linear1.load_state_dict(ours.ff[0].state_dict())
            ref.linear2.load_state_dict(ours.ff[2].state_dict())
            ref.norm1.load_state_dict(ours.ln1.state_dict())
            ref.norm2.load_state_dict(ours.ln2.state_dict())
        reference.norm.load_state_dict(encoder.final_norm.state_dict())
        tokens, key_mask = encoder.embed(make_obs([H, 3, 0]))
        expected = reference(tokens, src_key_padding_mask=~key_mask)[:, 0]
        torch.testing.assert_close(encoder.encode_tokens(tokens, key_mask), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window, length", [(2, 7), (3, 9), (4, 5), (5, 5)])
def test_block_local_attention_is_dense_attention_under_the_block_mask(window, length):
    """The O(L * W) path equals dense attention restricted to the CLS plus the own and previous
    block of W history tokens (padding masked), including a ragged last block."""
    torch.manual_seed(0)
    attn = HistoryEncoder(make_config(), item_features=ITEM_FEATURES).stack.blocks[0].attn.eval()
    b, total = 3, 1 + length
    x = torch.randn(b, total, D)
    keep = torch.ones(b, total, dtype=torch.bool)
    keep[1, 1:4] = False  # a left-padded (right-aligned) history
    keep[2, 1:] = False  # an empty one
    block = (torch.arange(length) // window)[None]
    local = (block.T - block >= 0) & (block.T - block <= 1)  # query block i sees key blocks i-1, i
    allowed = torch.ones(total, total, dtype=torch.bool)
    allowed[1:, 1:] = local
    with torch.no_grad():
        ours = attn(x, keep[:, None, None, :], window=window)
        dense = attn(x, (keep[:, None, :] & allowed[None])[:, None], window=0)
    if length <= window:  # short histories take the dense path unchanged
        torch.testing.assert_close(ours, attn(x, keep[:, None, None, :]))
    torch.testing.assert_close(ours, dense, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(ours).all()


def test_a_long_history_is_read_whole_by_the_state_with_a_window():
    """With a window far shorter than the history, the oldest interaction still moves the state
    (the CLS reads every token), and the window changes nothing for histories that fit in it."""
    torch.manual_seed(0)
    windowed = HistoryEncoder(make_config(attention_window=2), item_features=ITEM_FEATURES).eval()
    dense = HistoryEncoder(make_config(attention_window=0), item_features=ITEM_FEATURES).eval()
    dense.load_state_dict(windowed.state_dict())
    obs = make_obs([H, 2])
    changed = {k: v.clone() for k, v in obs.items()}
    changed["history_items"][0, 0] = (obs["history_items"][0, 0] + 1) % N_ITEMS  # the oldest of row 0
    with torch.no_grad():
        assert not torch.allclose(windowed(obs)[0], windowed(changed)[0])
        torch.testing.assert_close(windowed(obs)[1], dense(obs)[1])  # 2 interactions fit in the window
        assert not torch.allclose(windowed(obs)[0], dense(obs)[0])  # 6 do not: block-local reading


def test_serving_benchmark_reports_decisions_per_second_per_history_and_window(cli):
    argv = ["encoder", "--serving", "--batch", "4", "--histories", "8", "12", "--window", "4", "--iters", "1"]
    records = cli("bench", [*argv, "--warmup", "0", "--d-model", "16", "--heads", "2", "--json"])
    assert [(r["history_len"], r["window"]) for r in records] == [(8, 4), (8, 0), (12, 4), (12, 0)]
    assert all(r["decisions_per_s"] > 0 and r["impl"] == "driftrec-serving" for r in records)


@pytest.mark.parametrize(
    "q_len, k_len, keep_shape",
    [(8, 40, "per query"), (20, 33, "per query"), (1, 129, "per key"), (32, 64, "per query")],
)
def test_cpu_attention_equals_torchs_kernel_with_its_gradients(q_len, k_len, keep_shape):
    """The stream encoder's CPU attention (its own backward pass) against torch's fused kernel on the same
    inputs: outputs and the gradients of q, k and v agree; a masked key gets no weight and no gradient."""
    from agents.encoder import attention

    torch.manual_seed(0)
    b, heads, dh = 5, 4, 16
    q, k, v = (torch.randn(b, heads, n, dh, dtype=torch.float64) for n in (q_len, k_len, k_len))
    shape = (b, 1, q_len, k_len) if keep_shape == "per query" else (b, 1, 1, k_len)
    keep = torch.rand(shape) > 0.4
    keep[..., 0] = True  # every query keeps a key
    keep[..., -1] = False  # and no query reads the last one
    upstream = torch.randn(b, heads, q_len, dh, dtype=torch.float64)

    def run(fused: bool) -> tuple[torch.Tensor, ...]:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        y = attention(*leaves, keep, fused=fused)
        y.backward(upstream)
        return (y.detach(), *(t.grad for t in leaves))

    treated, control = run(False), run(True)
    for a, c in zip(treated, control):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-9)
    never_read = ~keep.expand(b, heads, q_len, k_len).any(dim=2)  # [B, heads, Lk]: keys no query reads
    assert never_read.any()
    assert torch.equal(treated[2][never_read], torch.zeros_like(treated[2][never_read]))
    assert torch.equal(treated[3][never_read], torch.zeros_like(treated[3][never_read]))
