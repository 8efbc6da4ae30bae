"""The supervised sequence models on real sequences: MovieLens-100k, leave-one-out, full ranking.

Each user's ratings in time order are a sequence (`simulator.realdata.sequences`); the last item is
the test target, the one before it the validation target, the rest train (`leave_one_out`). A model
trains on every prefix of the training sequences (`agents.nextitem`), then ranks all items after
each user's test input (training items + validation item); NDCG@10, Recall@10 and MRR come from
`experiments.core.ranking` (full ranking, no item excluded: RecBole ranks sequential models the same way).

RecBole's own SASRec and GRU4Rec run on the very same split (`recbole_atomic`: the sequences written
as RecBole atomic files, their order as the timestamp, so its leave-one-out `LS` split with time
order gives the same targets) and the same budget (epochs, batch size, learning rate, history
length, embedding size), in a separate Python environment (recbole 1.2.1 requires ray <= 2.6.3,
beside this project's ray 2.60), by `experiments/studies/benchmarks/recbole_runner.py`, which writes its
scores over all items; the metrics come from the same functions here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agents.nextitem import NextItemParams, score_all, train_next_item
from experiments.core.ranking import accuracy_metrics
from simulator.realdata import LeaveOneOut, leave_one_out, load_movielens, sequences

CUTOFF = 10
RUNNER = Path(__file__).resolve().with_name("recbole_runner.py")
RECBOLE_VENV = Path(os.environ.get("DRIFTREC_RECBOLE_VENV", "/tmp/driftrec-recbole-venv"))
# What the RecBole venv needs beside the system site packages (recbole's own dependencies but ray,
# which stays at the project's 2.60: recbole imports only ray.tune at module level).
RECBOLE_PACKAGES = (
    "recbole==1.2.1",
    "colorlog==4.7.2",
    "thop",
    "texttable",
    "tabulate",
    "tqdm",
    "scikit-learn",
    "joblib",
    "threadpoolctl",
    "narwhals",
    "psutil",
)


def movielens_split(max_users: int | None = None) -> tuple[LeaveOneOut, int]:
    """(leave-one-out split of ml-100k's users, item count)."""
    ml = load_movielens(max_users)
    return leave_one_out(sequences(ml.interactions)), ml.n_items


def ranking_metrics(scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Means over users of NDCG@10, Recall@10 (= HitRate@10, one relevant item) and MRR (full
    ranking) of scores [U, I] against one target item per user [U]."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(target):
        raise ValueError(f"scores must be [users={len(target)}, items], got {scores.shape}")
    relevant = np.zeros(scores.shape, bool)
    relevant[np.arange(len(target)), target] = True
    m = accuracy_metrics(scores, relevant, cutoffs=(CUTOFF,))
    return {
        f"ndcg@{CUTOFF}": float(np.mean(m[f"ndcg@{CUTOFF}"])),
        f"recall@{CUTOFF}": float(np.mean(m[f"recall@{CUTOFF}"])),
        "mrr": float(np.mean(m["mrr"])),
    }


def test_inputs(split: LeaveOneOut) -> list[np.ndarray]:
    return [split.test_input(u) for u in range(len(split.users))]


def run_ours(split: LeaveOneOut, n_items: int, params: NextItemParams, log=None) -> dict[str, Any]:
    """Train one of our models on the split's training sequences; its test metrics and timing."""
    model, record = train_next_item(split.train, n_items, params, log)
    scores = score_all(model, test_inputs(split))
    return dict(implementation="driftrec", model=params.kind, **ranking_metrics(scores, split.test_target), **record)


# --------------------------------------------------------------------------- RecBole, in its own venv


def recbole_atomic(split: LeaveOneOut, folder: Path, name: str = "ml-loo") -> Path:
    """Write the split's full sequences (train + valid + test) as RecBole atomic files under
    folder/name/name.inter, the position in the sequence as the timestamp (so RecBole's time-ordered
    leave-one-out finds our targets). Item and user tokens are our dense ids."""
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(len(split.users)):
        full = np.append(split.test_input(u), split.test_target[u])
        lines += [f"{u}\t{int(i)}\t{t}" for t, i in enumerate(full)]
    path = out / f"{name}.inter"
    path.write_text("\n".join(lines) + "\n")
    return path


def recbole_python(create: bool = True) -> Path:
    """The RecBole venv's python (created at RECBOLE_VENV with the system site packages and
    RECBOLE_PACKAGES installed --no-deps, if missing and `create`)."""
    python = RECBOLE_VENV / "bin" / "python"
    ok = (
        python.exists()
        and subprocess.run([python, "-c", "import recbole.quick_start"], capture_output=True).returncode == 0
    )
    if ok:
        return python
    if not create:
        raise ValueError(f"no RecBole venv at {RECBOLE_VENV} (run without --no-create-venv to build it)")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(RECBOLE_VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *RECBOLE_PACKAGES], check=True)
    return python


def run_recbole(split: LeaveOneOut, n_items: int, params: NextItemParams, python: Path, log=None) -> dict[str, Any]:
    """RecBole's model of `params.kind` on the same split and budget, in the venv `python`."""
    with tempfile.TemporaryDirectory(prefix="driftrec-recbole-") as tmp:
        folder = Path(tmp)
        recbole_atomic(split, folder)
        job = dict(
            data_path=str(folder),
            dataset="ml-loo",
            model="SASRec" if params.kind == "sasrec" else "GRU4Rec",
            params=dataclasses.asdict(params),
            n_items=n_items,
            n_users=len(split.users),
            test_target=split.test_target.tolist(),
            out=str(folder / "scores.npy"),
        )
        (folder / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        proc = subprocess.run(
            [str(python), str(RUNNER), str(folder / "job.json")], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError("RecBole run failed: " + " | ".join(tail))
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        scores = np.load(folder / "scores.npy")
    if log:
        log(f"recbole {job['model']}: {record['seconds']:.0f} s, targets matching ours: {record['targets_match']}")
    metrics = ranking_metrics(scores, split.test_target)
    return dict(implementation="recbole", model=params.kind, **metrics, epochs=params.epochs, **record)
