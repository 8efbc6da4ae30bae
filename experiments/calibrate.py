"""Calibrate the `movielens` preset to real data and write the report (simulated against real).

  python experiments/calibrate.py --smoke                    # the whole pipeline at toy sizes (seconds)
  python experiments/calibrate.py --out docs/calibration     # the fit and the report
  python experiments/calibrate.py --out docs/calibration --update-preset   # ... and rewrite envs/movielens.json

Needs the real-data packages (README: Real data):
  pip install --no-deps "recbole==1.2.1"
  pip install --no-deps --ignore-requires-python "obp==0.5.7"
The fitting is experiments/studies/calibration/; this is its command line.
"""

from __future__ import annotations

import shlex
import sys
import time

from experiments.studies.calibration.fit import calibrate
from experiments.studies.calibration.flags import build_parser, settings_from_args
from simulator.realdata import RealDataUnavailable


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    command = "python experiments/calibrate.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    start = time.time()
    try:
        scalars, report, preset = calibrate(settings_from_args(args), args.out, command.strip(), args.update_preset)
    except (ValueError, RealDataUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(scalars.to_string(index=False))
    print(f"report: {report} ({time.time() - start:.0f} s)")
    if preset is not None:
        print(f"preset: {preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
