"""Calibrate the `movielens` preset to real data and write the report (simulated against real).

  python experiments/calibrate.py --smoke                    # the whole pipeline at toy sizes (seconds)
  python experiments/calibrate.py --out docs/calibration     # the fit and the report
  python experiments/calibrate.py --out docs/calibration --update-preset   # ... and rewrite envs/movielens.json

Needs the real-data packages (README: Real data):
  pip install --no-deps "recbole==1.2.1"
  pip install --no-deps --ignore-requires-python "obp==0.5.7"
The fitting is experiments/calibration.py; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from experiments.studies.calibration import fit as cal
from simulator.realdata import RealDataUnavailable, load_movielens, load_obd

PRESET_FILE = Path(__file__).resolve().parents[1] / "envs" / "movielens.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = cal.CalibrationSettings()
    p.add_argument("--out", default=None, help="report folder (default: runs/calibration/<time>)")
    p.add_argument("--smoke", action="store_true", help="toy sizes: few simulated users and bisection steps")
    p.add_argument("--sim-users", type=int, default=None, help=f"simulated users per run (default {d.sim_users})")
    p.add_argument("--rounds", type=int, default=None, help=f"passes over the simulated moments (default {d.rounds})")
    p.add_argument("--seed", type=int, default=None, help=f"simulation seed (default {d.seed})")
    p.add_argument("--update-preset", action="store_true", help=f"rewrite {PRESET_FILE.name} with the fit")
    args = p.parse_args(argv)
    base = cal.SMOKE if args.smoke else d
    given = {
        k: v for k, v in dict(sim_users=args.sim_users, rounds=args.rounds, seed=args.seed).items() if v is not None
    }
    command = "python experiments/calibrate.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        settings = cal.CalibrationSettings(**{**cal.summary_settings(base), **given})
        if args.smoke and args.update_preset:
            raise ValueError("--update-preset with --smoke would write a toy fit into the preset; drop one")
        ml, obd = load_movielens(), load_obd("random")
    except (ValueError, RealDataUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / "calibration" / time.strftime("%Y%m%d-%H%M%S")
    start = time.time()
    result = cal.fit(ml, obd, settings, progress=lambda line: print(line, flush=True))
    scalars, genres, slots = cal.compare(result["overrides"], ml, obd, settings, result["real"])
    cal.write_report(out, result, scalars, genres, slots, settings, command.strip())
    print(scalars.to_string(index=False))
    print(f"report: {out / 'report.md'} ({time.time() - start:.0f} s)")
    if args.update_preset:
        PRESET_FILE.write_text(json.dumps(cal.preset_document(result["overrides"], command.strip()), indent=2) + "\n")
        print(f"preset: {PRESET_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
