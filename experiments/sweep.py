"""Hyperparameter sweeps on Ray Tune over any scenario:/model:/algo: field of a run config.

  python experiments/sweep.py --agent ppo --space space.yaml                      # ASHA, 8 trials, local Ray
  python experiments/sweep.py --agent ppo --space space.yaml --scheduler fifo --num-samples 16 --steps 100000
  python experiments/sweep.py --agent ppo --space space.yaml --ray-address auto   # on a running Ray cluster
  python experiments/sweep.py --agent ppo --space space.yaml --smoke              # toy sizes, seconds per trial

space.yaml maps dotted fields to Tune domains (loguniform, uniform, randint, choice) or fixed values:

  algo.lr: {loguniform: [1.0e-5, 1.0e-3]}
  model.d_model: {choice: [32, 64]}
  scenario.cognitive.magnitude: {uniform: [0.5, 2.0]}

Writes into --out: results.csv and results.md (one row per trial, best first), best.yaml (the best
trial's config, for `run.py --config best.yaml`), runs/ (each trial's run directory) and tune/
(Ray Tune's records). A thin front end over experiments/studies/sweeps/.
"""

from __future__ import annotations

import sys
import time

from experiments.studies.sweeps.flags import build_parser, settings_from_args
from experiments.studies.sweeps.tune import print_table, sweep


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    try:
        settings = settings_from_args(args)
        out = args.out or f"sweeps/{args.agent}-{time.strftime('%Y%m%d-%H%M%S')}"
        table, best = sweep(settings, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(table)
    print(f"\nresults: {best.parent / 'results.csv'}\nbest config: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
