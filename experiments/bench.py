"""Benchmarks that print numbers (never timed tests).

python experiments/bench.py sim [--json]       simulator and VectorEnv user-steps/s
python experiments/bench.py encoder [--json]   encoder forward+backward tokens/s vs nn.TransformerEncoder
python experiments/bench.py train [--json]     PPO env-steps/s (RLlib, SB3), sampling and learning apart
python experiments/bench.py realdata [--json]  sasrec/gru4rec on real ml-100k sequences, ours next to RecBole's
"""

from __future__ import annotations

import argparse
import json
import sys

from experiments.studies.benchmarks import encoder, realdata, sim, train
from simulator.realdata import RealDataUnavailable

BENCHMARKS = {"sim": sim, "encoder": encoder, "train": train, "realdata": realdata}


def main(argv: list[str] | None = None) -> list[dict] | None:
    parser = argparse.ArgumentParser(description="driftrec benchmarks (numbers, not tests)")
    sub = parser.add_subparsers(dest="name", required=True)
    for name, module in BENCHMARKS.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print a JSON list of records instead of a table")
    args = parser.parse_args(argv)
    module = BENCHMARKS[args.name]
    try:
        records = module.run(args)
    except (ValueError, RealDataUnavailable) as err:  # bad settings or no data packages: one line, before any work
        print(f"error: {err}", file=sys.stderr)
        return None
    print(json.dumps(records, indent=None) if args.json else module.format_records(records))
    return records


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 2)
