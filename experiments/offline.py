"""Offline evaluation against the simulator's truth, and offline-RL datasets.

  python experiments/offline.py --smoke                           # the whole study at toy sizes (seconds)
  python experiments/offline.py --out docs/offline/mixed          # mixed: 3 seeds x 512 users
  python experiments/offline.py --scenario stationary --out docs/offline/stationary
  python experiments/offline.py --scenario shock --logs-scenario stationary --out docs/offline/shock-from-stationary
  python experiments/offline.py --export-minari DIR [--logs FILE]  # the logs as a Minari dataset, nothing else

The study (experiments/studies/offline/): per agent, offline ranking metrics on held-out logs and
off-policy estimates (IPS, SNIPS, DM, DR) next to its true return on the same users; Kendall's tau
between each offline order and the true one; the estimators' bias and RMSE over seeds. Writes
report.md, CSVs and plots to --out. `--export-minari DIR` writes the training logs (or --logs FILE)
as the Minari dataset --dataset-id under DIR; load it with MINARI_DATASETS_PATH=DIR and
minari.load_dataset(ID).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from experiments.core.rundirs import writable_dir
from experiments.studies.offline import study as oe
from experiments.studies.offline.flags import build_parser, settings_from_args


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    try:
        settings = settings_from_args(args)
        if args.logs is not None and args.export_minari is None:
            raise ValueError("--logs is read by --export-minari only")
        if args.export_minari is not None:
            root = writable_dir(args.export_minari, "--export-minari")
            dataset_id = args.dataset_id or f"driftrec/{settings.label}/logs-v0"
            steps, path = oe.export_logs(settings, root, dataset_id, args.logs)
            print(f"{steps.n_episodes:,} episodes, {len(steps):,} steps -> Minari dataset {dataset_id} at {path}")
            print(f"load: MINARI_DATASETS_PATH={root} python -c \"import minari; minari.load_dataset('{dataset_id}')\"")
            return 0
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = writable_dir(args.out or Path("runs") / "offline" / f"{settings.label}-{stamp}", "--out")
        started = time.perf_counter()
        result = oe.run_study(settings, progress=lambda line: print(line, file=sys.stderr))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python experiments/offline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = oe.write_report(settings, result, out, command.strip(), time.perf_counter() - started)
    print(report.read_text())
    print(f"report: {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
