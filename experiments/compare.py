"""Compare agents across seeds: a table per scenario (mean and 95% t interval over
seeds) in markdown and CSV, and a plot of return with intervals.

  python experiments/compare.py runs/ --out reports/compare

Reads every results.csv under the given directories (one run each) and uses each run's
final evaluation. Lifetime scenarios add their calendar-time columns (sessions per user, churn,
retention on days 1, 7 and 30, watch time per active day) and, from each run's eval_by_day.csv,
a plot per scenario of retention and watch time per active user against the day, per agent with
95% t intervals over seeds (by_day_<scenario>.png). With `--from-day T`, from the same curves:
minutes per user watched from day T on (watch_from_d<T>) and retention given day T (among the
users still active on or after day T, the share active on or after day T + D: columns
retention_d<T+D>_given_d<T>, D from `--after-days`), so agents that only serve from day T
(supervised models deployed on a date) are compared on the days and users they served. Regret is
measured against the reference agent (default oracle-lookahead) evaluated on the same users; it is
left out where no reference run exists.

What is averaged is what the table says: a row is one agent in one configuration (where one
agent ran with different scenario overrides, model, algo settings or step budgets, each
non-default configuration carries a label, `ppo [3fa2c1]`, and is never pooled), over distinct
seeds (a seed run twice counts once: its latest finished run). Runs that did not finish
(status.json: running, interrupted, failed) and unreadable results are skipped, each with a
line that names it.
"""

from __future__ import annotations

import sys

from experiments.studies.comparison.analysis import compare
from experiments.studies.comparison.flags import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        text, written = compare(args.roots, args.out, args.reference, args.from_day, args.after_days)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
