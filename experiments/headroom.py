"""Headroom of long-term reasoning: random vs the myopic oracle vs the session-aware oracle.

  python experiments/headroom.py --scenarios cognitive mixed --seeds 0 1 2

Each (scenario, seed) evaluates every reference policy on the same users
(common random numbers); the table shows the mean episode return over seeds
with a 95% t interval over seeds (experiments/stats.py), and each policy's gain over the myopic oracle.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from agents.oracles import MyopicOracle, SessionOracle
from agents.policy import RandomPolicy
from envs.config import PRESETS, make_scenario
from experiments.harness import evaluate
from experiments.stats import mean_interval


def headroom(scenarios: list[str], seeds: list[int], n_users: int) -> pd.DataFrame:
    rows = []
    for scenario in scenarios:
        config = make_scenario(scenario)
        for seed in seeds:
            for policy in (RandomPolicy(seed), MyopicOracle(), SessionOracle()):
                m = evaluate(policy, config, n_users=n_users, seed=seed).metrics
                rows.append(dict(scenario=scenario, seed=seed, policy=policy.name, **m))
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (scenario, policy), g in runs.groupby(["scenario", "policy"], sort=False):
        r = g.return_mean.to_numpy()
        lo, hi = mean_interval(r)
        out.append(
            dict(
                scenario=scenario,
                policy=policy,
                seeds=len(r),
                return_mean=r.mean(),
                ci_low=lo,
                ci_high=hi,
                ctr=g.ctr.mean(),
                session_length=g.session_length.mean(),
                satisfaction_end=g.satisfaction_end.mean(),
            )
        )
    table = pd.DataFrame(out)
    myopic = table[table.policy == "oracle-myopic"].set_index("scenario").return_mean
    table["vs_myopic"] = table.return_mean / table.scenario.map(myopic) - 1.0
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["cognitive", "mixed"], choices=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=1024, help="evaluation users per seed")
    args = parser.parse_args(argv)
    table = summarise(headroom(args.scenarios, args.seeds, args.users))
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
    sys.exit(0)
