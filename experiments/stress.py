"""Drift stress tests: train under one regime, evaluate under each drift family and magnitude.

  python experiments/stress.py                      # ppo, sasrec, sasrec-retrain, bandit; 3 seeds
  python experiments/stress.py --agents sasrec bandit --families cognitive shock --magnitudes 0 1 2
  python experiments/stress.py --load runs/stationary/ppo/0-* --agents sasrec bandit
  python experiments/stress.py --smoke              # the whole pipeline at toy sizes (under 2 minutes)
  python experiments/stress.py --train-scenario lifetime --agents sasrec sasrec-retrain-7d bandit popularity
  python experiments/stress.py --smoke --train-scenario lifetime   # temporal mode at toy sizes

Every agent is trained (or loaded from a run directory with --load) under --train-scenario
(default stationary: no drift) and then evaluated, on the same users, under the training regime
and under each test regime: the training regime plus one drift family at one magnitude (0 turns
the family off, 1 is its default strength, 2 doubles it). The shock family is a sudden shift of
every user's interests at --shock-step toward another taste community, which also drives the
recovery analysis. Writes to --out: report.md, robustness.{md,csv}, recovery.csv, grid.csv,
timelines.csv, PNG plots and TensorBoard events (tb/). A thin front end over experiments/studies/stress/.

Temporal mode (a training scenario with a calendar, e.g. lifetime): agents learn from days
[0, --train-days) and serve lives of --serve-days days under each family and magnitude; the shock
is a sudden shift dated --shock-day; NAME-retrain becomes NAME-retrain-<D>d for each cadence of
--retrain-days (or name one: sasrec-retrain-7d); the reference defaults to oracle-lifetime. It
reports the relative watch per active user by week since training (degradation_by_week.csv,
degradation_by_day.png, by_day.csv) and the recovery in days after the shock.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from experiments.studies.stress import load_outputs, stress, write_outputs
from experiments.studies.stress.flags import build_parser, settings_from_args
from experiments.studies.stress.report import recovery_markdown, robustness_markdown


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    try:
        if args.report_only:
            out = Path(args.report_only)
            res = write_outputs(*load_outputs(out), out)
        else:
            settings = settings_from_args(args)
            out = Path(args.out or Path("runs") / "stress" / time.strftime("%Y%m%d-%H%M%S"))
            command = "python experiments/stress.py " + " ".join(argv if argv is not None else sys.argv[1:])
            res = stress(settings, out, args.parallel, args.ray_address, command.strip())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(robustness_markdown(res.table, "relative_return"))
    if len(res.recovery_summary):
        print(recovery_markdown(res.recovery_summary))
    print(f"\nreport: {out / 'report.md'}\ntensorboard --logdir {shlex.quote(str(out / 'tb'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
