"""The validity report: does who the user is, what they did and how their tastes moved decide what pays?

  python experiments/validity.py --smoke                 # the whole report at toy sizes (seconds)
  python experiments/validity.py --out docs/validity     # every preset, 3 seeds x 1,024 users
  python experiments/validity.py --history-runs runs/validity/*/*/ppo/*   # reuse trained PPO runs
  python experiments/validity.py --presets mixed --update docs/validity   # re-measure what a change moved

Measures, on the same users for every policy (common random numbers): random, the user-blind
policies (highest rating, most popular, the feature model, logged popularity, the linear item
score tuned on a separate seed), the myopic, session, stale-state and lookahead oracles, the
stale-state oracle under each drift preset's magnitudes, and a history ablation (PPO and sasrec
with the full history and with history_len 1). Prints the gates (experiments/studies/validity/gates.py) as
pass/fail with their figures and writes report.md, gates.csv, policies.csv, drift.csv and
history.csv to --out. With --update DIR, the presets measured now replace theirs in the report
already in DIR (the rest is kept, and commands.csv says which command measured what); the gates
are evaluated on the merged tables. Exits 1 when a gate fails. The headroom of long-term reasoning (random,
myopic, session, lookahead) is part of the policy table.
"""

from __future__ import annotations

import sys

from experiments.studies.validity import gates as g
from experiments.studies.validity.flags import build_parser, settings_from_args
from experiments.studies.validity.report import validity_report


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    command = "python experiments/validity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        gates, report = validity_report(settings_from_args(args), args.out, args.update, command.strip())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(g.gates_markdown(gates))
    print(f"\nreport: {report}")
    failed = [x for x in gates if not x.passed]
    print(f"{len(gates) - len(failed)} of {len(gates)} gates pass", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
