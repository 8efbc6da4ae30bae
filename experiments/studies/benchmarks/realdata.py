"""Supervised baselines on real ml-100k sequences: ours (sasrec, gru4rec) next to RecBole's, same split.

Leave-one-out (each user's last rating is the test target), full ranking over all 1,682 items,
NDCG@10, Recall@10 and MRR from experiments.core.ranking for both sides. RecBole 1.2.1 runs in its own
venv (it requires ray <= 2.6.3; this project pins ray 2.60): --recbole-venv, created on first use
with the system site packages and recbole's dependencies but ray installed --no-deps. The same
budget on both sides: epochs, batch size, learning rate, history length, embedding size (and for
SASRec the layers, heads and feed-forward width); each side keeps its own dropout and
initialisation. A record per (implementation, model): the metrics, training seconds and, for
RecBole, how many test targets matched ours (all, or the split differs).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from agents.nextitem import NextItemParams
from experiments.studies.benchmarks import realseq


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = NextItemParams()
    p.add_argument("--models", nargs="+", default=["sasrec", "gru4rec"], choices=["sasrec", "gru4rec"])
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs, both sides (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-len", type=int, default=d.max_len, help="history length")
    p.add_argument("--d-model", type=int, default=d.d_model, help="embedding size")
    p.add_argument("--dropout", type=float, default=d.dropout, help="ours (RecBole keeps its defaults)")
    p.add_argument("--max-users", type=int, default=None, help="a slice of the users (default: all 943)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--skip-recbole", action="store_true", help="ours only")
    p.add_argument("--recbole-venv", default=str(realseq.RECBOLE_VENV), help="RecBole's venv (created if missing)")


def run(args: argparse.Namespace) -> list[dict]:
    base = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_len=args.max_len,
        d_model=args.d_model,
        dropout=args.dropout,
        seed=args.seed,
    )
    params = [NextItemParams(kind=k, **base) for k in args.models]  # bad settings: one line, before any work
    split, n_items = realseq.movielens_split(args.max_users)
    python = None
    if not args.skip_recbole:
        realseq.RECBOLE_VENV = Path(args.recbole_venv)
        python = realseq.recbole_python()
    log = lambda line: print(line, flush=True)  # noqa: E731
    records = []
    for p in params:
        records.append(realseq.run_ours(split, n_items, p, log))
        log(format_records(records[-1:]))
        if python is not None:
            records.append(realseq.run_recbole(split, n_items, p, python, log))
            log(format_records(records[-1:]))
    for r in records:
        r.update(users=len(split.users), torch_threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
        r["load_1min"] = os.getloadavg()[0]
        r["time"] = time.strftime("%Y-%m-%d %H:%M")
    return records


def format_records(records: list[dict]) -> str:
    head = f"{'model':8} {'implementation':14} {'NDCG@10':>8} {'Recall@10':>9} {'MRR':>7} {'train s':>8} {'epochs':>6}"
    lines = [head]
    for r in records:
        lines.append(
            f"{r['model']:8} {r['implementation']:14} {r['ndcg@10']:8.4f} {r['recall@10']:9.4f} {r['mrr']:7.4f} "
            f"{r['seconds']:8.0f} {r['epochs']:6d}"
        )
    by = {(r["model"], r["implementation"]): r for r in records}
    for model in dict.fromkeys(r["model"] for r in records):
        ours, theirs = by.get((model, "driftrec")), by.get((model, "recbole"))
        if ours and theirs and theirs["ndcg@10"] > 0:
            lines.append(f"{model}: ours / RecBole NDCG@10 = {ours['ndcg@10'] / theirs['ndcg@10']:.3f}")
    return "\n".join(lines)
