"""Run one RecBole sequential model on a prepared leave-one-out split; write its scores over all items.

Not part of the project's import graph: `experiments.studies.benchmarks.realseq.run_recbole` runs it with the Python of
a separate venv where recbole 1.2.1 is installed (it cannot be installed beside this project's ray).

  <recbole venv>/bin/python experiments/studies/benchmarks/recbole_runner.py JOB.json

JOB.json: data_path, dataset (RecBole atomic files under data_path/dataset/), model (SASRec or
GRU4Rec), params (agents.nextitem.NextItemParams as a dict: the shared budget), n_items, n_users,
test_target (our test item per user), out.
Writes `out`: float32 [n_users, n_items] scores, row u = our user u, column i = our item i (items
RecBole never saw get -inf), and prints one JSON line: seconds, targets_match (users whose RecBole
test target is ours).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import numpy as np
import torch


def main(job_file: str) -> None:
    # recbole 1.2.1's Config aliases np.float = np.float_ (np.complex_, np.unicode_), names numpy 2 removed:
    # give them back before it runs (they are the same types under their numpy 2 names).
    np.float_ = np.float64
    np.complex_ = np.complex128
    np.unicode_ = np.str_
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    with open(job_file) as f:
        job = json.load(f)
    os.chdir(job["data_path"])  # RecBole writes its logs (log_tensorboard/, log/) under the working directory
    p = job["params"]
    common = dict(
        data_path=job["data_path"],
        use_gpu=False,
        seed=p["seed"],
        reproducibility=True,
        show_progress=False,
        state="ERROR",
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
        USER_ID_FIELD="user_id",
        ITEM_ID_FIELD="item_id",
        TIME_FIELD="timestamp",
        MAX_ITEM_LIST_LENGTH=p["max_len"],
        epochs=p["epochs"],
        train_batch_size=p["batch_size"],
        learning_rate=p["lr"],
        weight_decay=p["weight_decay"],
        train_neg_sample_args=None,
        loss_type="CE",
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        eval_step=0,
        checkpoint_dir=job["data_path"],
    )
    if job["model"] == "SASRec":  # RecBole's defaults but the shared budget's sizes
        common.update(hidden_size=p["d_model"], inner_size=p["d_model"] * p["ff_mult"], n_layers=p["n_layers"])
        common.update(n_heads=p["n_heads"])
    else:
        common.update(embedding_size=p["d_model"])
    config = Config(model=job["model"], dataset=job["dataset"], config_dict=common)
    init_seed(config["seed"], config["reproducibility"])
    logging.disable(logging.CRITICAL)
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.time()
    trainer.fit(train_data, valid_data=None, saved=False, verbose=False)
    seconds = time.time() - start

    # Internal ids -> ours (the tokens are our dense ids as strings).
    item_tokens = dataset.field2id_token["item_id"]  # index = internal id, [0] = '[PAD]'
    user_tokens = dataset.field2id_token["user_id"]
    cols = np.array([int(t) if t != "[PAD]" else -1 for t in item_tokens])
    scores = np.full((job["n_users"], job["n_items"]), -np.inf, np.float32)
    target = np.asarray(job["test_target"])
    targets_match = 0
    model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction, _, _, positive_i = batch
            s = model.full_sort_predict(interaction.to(config["device"])).view(len(interaction), -1).numpy()
            rows = np.array([int(user_tokens[u]) for u in interaction["user_id"].numpy()])
            scores[np.ix_(rows, cols[cols >= 0])] = s[:, cols >= 0]
            targets_match += int((cols[interaction["item_id"].numpy()] == target[rows]).sum())
            del positive_i
    np.save(job["out"], scores)
    print(json.dumps(dict(seconds=seconds, targets_match=targets_match, recbole_items=int(len(item_tokens) - 1))))


if __name__ == "__main__":
    main(sys.argv[1])
