"""Encoder throughput: driftrec HistoryEncoder vs a plain nn.TransformerEncoder.

Measures forward+backward tokens/s (tokens = batch * history_len) on one
random padded batch. The reference is a stock fp32 ``nn.TransformerEncoder``
of the same size (pre-LN, GELU, same d_model/heads/ff, final LayerNorm) fed
the very token tensor the driftrec encoder builds, with a
``src_key_padding_mask``; the driftrec timing also includes building those
tokens (embeddings, item-feature lookups in a random ``[N_ITEMS, F_ITEM]``
catalog table by history id, projections) from the observation, which, as
the envs emit it, carries history item ids only.

With ``--serving``: decisions/s at serving time instead (a decision = one user's state and the
scores of its candidates: the whole ``RecommenderEncoder`` forward under ``torch.inference_mode``),
for each history length in ``--histories`` (default 128 and 512), with the block-local attention
window ``--window`` and with dense attention (window 0): how the cost per decision grows with the
history length.

Called as ``experiments/bench.py encoder [flags]`` or on its own:
``python -m experiments.studies.benchmarks.encoder --batch 64 --history 16 --iters 2``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from agents.encoder import EncoderConfig, HistoryEncoder, RecommenderEncoder

F_ITEM, F_HIST, F_CTX, N_ITEMS = 16, 4, 4, 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--history", type=int, default=64, help="history length H")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ff-mult", type=int, default=4)
    parser.add_argument("--iters", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="driftrec compute dtype; auto = bf16 autocast (and fp32) on cuda, fp32 on cpu. "
        "The reference is always fp32.",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the driftrec block stack")
    parser.add_argument("--no-reference", action="store_true", help="skip nn.TransformerEncoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serving", action="store_true", help="decisions/s at serving time instead (see above)")
    parser.add_argument("--histories", type=int, nargs="+", default=[128, 512], help="--serving: history lengths")
    parser.add_argument(
        "--window",
        type=int,
        default=EncoderConfig.attention_window,
        help="attention window W (0: dense; default: the encoder's); --serving times it and dense",
    )
    parser.add_argument("--candidates", type=int, default=20, help="--serving: candidates per decision")


def make_item_features(seed: int = 0) -> torch.Tensor:
    """A random catalog item-feature table [N_ITEMS, F_ITEM] (the encoder looks history items up in it)."""
    return torch.rand(N_ITEMS, F_ITEM, generator=torch.Generator().manual_seed(seed + 1))


def make_obs(batch: int, history: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch of right-aligned histories with lengths uniform in [0, H] (item ids, no item features)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, history + 1, (batch, 1), generator=g)
    mask = (torch.arange(history) >= history - lengths).float()
    obs = {
        "history_items": torch.randint(0, N_ITEMS, (batch, history), generator=g) * mask.long(),
        "history_features": torch.randn(batch, history, F_HIST, generator=g) * mask[..., None],
        "history_mask": mask,
        "context": torch.randn(batch, F_CTX, generator=g),
    }
    return {k: v.to(device) for k, v in obs.items()}


def _time(step: Callable[[], None], iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` (CUDA work is synchronized before reading the clock)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / max(iters, 1)


def _record(impl: str, dtype: str, seconds: float, model: nn.Module, args, device: torch.device) -> dict:
    tokens = args.batch * args.history
    rec = {
        "impl": impl,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype,
        "batch": args.batch,
        "history_len": args.history,
        "d_model": args.d_model,
        "layers": args.layers,
        "heads": args.heads,
        "params": sum(p.numel() for p in model.parameters()),
        "compiled": bool(getattr(args, "compile", False)) and impl == "driftrec",
        "iters": args.iters,
        "tokens_per_s": tokens / seconds,
        "ms_per_iter": 1e3 * seconds,
    }
    if device.type == "cuda":
        rec["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return rec


def encoder_config(args: argparse.Namespace, history: int, **switches) -> EncoderConfig:
    """The benchmarked encoder's sizes (from the flags) for histories of `history`."""
    return EncoderConfig(
        n_items=N_ITEMS,
        history_len=history,
        item_feature_dim=F_ITEM,
        history_feature_dim=F_HIST,
        context_dim=F_CTX,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        ff_mult=args.ff_mult,
        **switches,
    )


def _device(args: argparse.Namespace) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return torch.device(args.device)


def run_serving(args: argparse.Namespace) -> list[dict]:
    """Decisions/s of the full encoder forward (state, target attention, candidate scores) under
    inference mode, per history length and attention window; one record each."""
    device = _device(args)
    if args.window < 0 or min(args.histories) < 1 or args.candidates < 1 or args.batch < 1:
        raise SystemExit("--histories, --candidates and --batch must be >= 1, --window >= 0")
    records = []
    for history in args.histories:
        obs = make_obs(args.batch, history, device, args.seed)
        g = torch.Generator().manual_seed(args.seed + 2)
        obs["candidate_items"] = torch.randint(0, N_ITEMS, (args.batch, args.candidates), generator=g).to(device)
        obs["candidate_features"] = torch.rand(args.batch, args.candidates, F_ITEM, generator=g).to(device)
        for window in dict.fromkeys((args.window, 0)):  # the window, then dense (once if the window is 0)
            torch.manual_seed(args.seed)
            cfg = encoder_config(args, history, attention_window=window)
            model = RecommenderEncoder(cfg, item_features=make_item_features(args.seed)).to(device).eval()

            def step(model=model, obs=obs) -> None:  # bound now: the loops rebind both
                with torch.inference_mode():
                    model(obs)

            seconds = _time(step, args.iters, args.warmup, device)
            records.append(
                dict(
                    impl="driftrec-serving",
                    device=device.type,
                    device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    threads=torch.get_num_threads(),
                    batch=args.batch,
                    history_len=history,
                    window=window,
                    candidates=args.candidates,
                    d_model=args.d_model,
                    layers=args.layers,
                    decisions_per_s=args.batch / seconds,
                    ms_per_batch=1e3 * seconds,
                )
            )
    return records


def run(args: argparse.Namespace) -> list[dict]:
    """Run the benchmark; returns one record per (impl, dtype), or per (history, window) with --serving."""
    if getattr(args, "serving", False):
        return run_serving(args)
    device = _device(args)
    if args.dtype == "auto":
        dtypes = ["bf16", "fp32"] if device.type == "cuda" else ["fp32"]
    else:
        dtypes = [args.dtype]

    torch.manual_seed(args.seed)
    cfg = encoder_config(args, args.history, compile=args.compile, attention_window=args.window)
    obs = make_obs(args.batch, args.history, device, args.seed)
    item_features = make_item_features(args.seed)
    records = []

    for dtype in dtypes:
        bf16 = dtype == "bf16"
        torch.manual_seed(args.seed)
        encoder = HistoryEncoder(cfg.replace(autocast_bf16=bf16), item_features=item_features).to(device).train()
        # The config flag only acts on CUDA; bf16 on CPU needs an explicit autocast.
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and device.type == "cpu")

        def step(encoder=encoder, autocast=autocast) -> None:  # bound now: the loop rebinds both
            encoder.zero_grad(set_to_none=True)
            with autocast:
                state = encoder(obs)
            state.square().mean().backward()

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        records.append(_record("driftrec", dtype, _time(step, args.iters, args.warmup, device), encoder, args, device))

    if not args.no_reference:
        with torch.no_grad():
            tokens, key_mask = encoder.embed(obs)
        tokens, padding_mask = tokens.float().contiguous(), ~key_mask
        layer = nn.TransformerEncoderLayer(
            args.d_model,
            args.heads,
            dim_feedforward=args.ff_mult * args.d_model,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        reference = (
            nn.TransformerEncoder(layer, args.layers, norm=nn.LayerNorm(args.d_model), enable_nested_tensor=False)
            .to(device)
            .train()
        )

        def ref_step() -> None:
            reference.zero_grad(set_to_none=True)
            out = reference(tokens, src_key_padding_mask=padding_mask)
            out[:, 0].square().mean().backward()

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        timing = _time(ref_step, args.iters, args.warmup, device)
        records.append(_record("reference", "fp32", timing, reference, args, device))

    ref = next((r for r in records if r["impl"] == "reference"), None)
    for rec in records:
        rec["speedup_vs_reference"] = rec["tokens_per_s"] / ref["tokens_per_s"] if ref else None
    return records


def format_records(records: list[dict]) -> str:
    if records and records[0]["impl"] == "driftrec-serving":
        cols = ("device", "threads", "batch", "history_len", "window", "candidates", "decisions_per_s", "ms_per_batch")
        rows = [cols] + [
            tuple(
                f"{r[c]:,.0f}" if c == "decisions_per_s" else f"{r[c]:.1f}" if c == "ms_per_batch" else str(r[c])
                for c in cols
            )
            for r in records
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
        return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)
    cols = (
        "impl",
        "device",
        "dtype",
        "batch",
        "history_len",
        "d_model",
        "tokens_per_s",
        "ms_per_iter",
        "speedup_vs_reference",
    )
    rows = [cols] + [
        tuple(
            f"{r[c]:,.0f}" if c == "tokens_per_s" else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])
            for c in cols
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    records = run(parser.parse_args(argv))
    print(format_records(records))
    return records


if __name__ == "__main__":
    main()
