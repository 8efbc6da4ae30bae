"""Train (if the agent trains) and evaluate one agent on one scenario.

  python experiments/run.py --agent ppo                      # PPO on `mixed`, ~10 min on 2 CPU cores
  python experiments/run.py --agent sb3-ppo --scenario cognitive --steps 200000
  python experiments/run.py --agent oracle-session           # evaluate a reference policy
  python experiments/run.py --resume runs/mixed/ppo/0-20261124-101500

Writes runs/<scenario>/<agent>/<seed>-<time>/: TensorBoard events (train/*, eval/*
against environment steps), results.csv, run.json, checkpoint/.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from envs.config import PRESETS, load_overrides, make_scenario
from experiments.harness import EVAL_SEED, evaluate
from experiments.registry import AGENTS, get_agent
from experiments.tracking import RunLogger, new_run_dir

CONFIG_SECTIONS = ("scenario", "model", "algo")
# --smoke: the same pipeline at toy sizes (well under a minute).
SMOKE = dict(steps=512, eval_users=16, final_eval_users=32, checkpoint_every=1,
             scenario={"catalog": {"n_items": 200}, "env": {"history_len": 8, "max_steps": 30}},
             model={"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1},
             algo={"ppo": {"num_envs_per_env_runner": 16, "rollout_fragment_length": 16,
                           "train_batch_size": 256, "minibatch_size": 128, "num_epochs": 1},
                   "sb3-ppo": {"num_envs": 16, "n_steps": 16, "batch_size": 128, "n_epochs": 1}})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="ppo", help=f"what to run: {', '.join(AGENTS)} (default: ppo)")
    p.add_argument("--scenario", default="mixed", help=f"scenario preset: {', '.join(PRESETS)} (default: mixed)")
    p.add_argument("--steps", type=int, default=None,
                   help="training budget in environment (user) steps (default: 250000; ignored by non-training agents)")
    p.add_argument("--seed", type=int, default=0, help="training seed (evaluation users are fixed: seed %d)" % EVAL_SEED)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the learner runs; auto picks cuda when a GPU is visible (env runners stay on CPU)")
    p.add_argument("--logdir", default="runs", help="root of the run directories (default: runs)")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML with optional sections scenario: (env/world overrides), model: (encoder), algo: (hyperparameters)")
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end in under a minute (for tests)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a killed run from its last checkpoint (its saved settings are used; --steps may extend it)")
    p.add_argument("--num-env-runners", type=int, default=None,
                   help="RLlib env-runner processes (default 0: sample in the driver)")
    p.add_argument("--ray-address", default=None, help="join an existing Ray cluster instead of starting a local one")
    p.add_argument("--eval-users", type=int, default=256, help="evaluation users during training (default: 256)")
    p.add_argument("--final-eval-users", type=int, default=1024, help="evaluation users at the end (default: 1024)")
    p.add_argument("--eval-interval", type=int, default=None,
                   help="environment steps between evaluations (default: a tenth of --steps)")
    p.add_argument("--checkpoint-every", type=int, default=5, help="training iterations between checkpoints")
    return p.parse_args(argv)


def resolve_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but no CUDA GPU is visible to torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_run_config(path: str | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    data = load_overrides(path)
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"unknown section '{unknown[0]}' in {path}; allowed: {', '.join(CONFIG_SECTIONS)}")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(f"section '{key}' in {path} must be a mapping, got {type(value).__name__}")
    return data


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Everything a run depends on, resolved once and saved in run.json (resume reads it back)."""
    entry = get_agent(args.agent)
    if args.scenario not in PRESETS:
        raise ValueError(f"unknown scenario '{args.scenario}'; valid scenarios: {', '.join(PRESETS)}")
    cfg = load_run_config(args.config)
    scenario_over, model, algo = cfg.get("scenario", {}), cfg.get("model", {}), cfg.get("algo", {})
    steps = args.steps if args.steps is not None else 250_000
    eval_users, final_users = args.eval_users, args.final_eval_users
    if args.smoke:
        scenario_over = _merge(SMOKE["scenario"], scenario_over)
        model = {**SMOKE["model"], **model}
        algo = {**SMOKE["algo"].get(args.agent, {}), **algo}
        steps = args.steps if args.steps is not None else SMOKE["steps"]
        eval_users, final_users = SMOKE["eval_users"], SMOKE["final_eval_users"]
    if args.num_env_runners is not None:
        if args.agent != "ppo":
            raise ValueError("--num-env-runners applies to --agent ppo only")
        algo = {**algo, "num_env_runners": args.num_env_runners}
    if steps < 1 or eval_users < 2 or final_users < 2:
        raise ValueError("--steps must be >= 1 and --eval-users/--final-eval-users >= 2")
    make_scenario(args.scenario, scenario_over)  # fail fast on bad overrides
    return dict(agent=args.agent, trainable=entry.trainable, scenario=args.scenario, scenario_overrides=scenario_over,
                model=model, algo=algo, steps=steps, seed=args.seed, device=args.device,
                eval_users=eval_users, final_eval_users=final_users,
                eval_interval=args.eval_interval or max(1, steps // 10), checkpoint_every=args.checkpoint_every,
                ray_address=args.ray_address)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Progress:
    """One status line: steps, recent training return, steps/s."""

    def __init__(self, total: int) -> None:
        self.total, self.start, self.tty = total, time.perf_counter(), sys.stderr.isatty()

    def update(self, steps: int, metrics: dict[str, float], note: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        frac = min(1.0, steps / self.total)
        bar = "#" * int(frac * 24)
        line = (f"[{bar:<24}] {steps:>9,d}/{self.total:,d} steps  return {metrics.get('episode_return_mean', float('nan')):6.1f}"
                f"  {metrics.get('env_steps_per_s', float('nan')):6.0f} steps/s  {elapsed:6.0f}s {note}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def train(agent: Any, settings: dict[str, Any], scenario: Any, logger: RunLogger, run_dir: Path,
          state: dict[str, Any]) -> None:
    """The training loop: iterate, log train/*, evaluate on schedule, checkpoint."""
    progress = Progress(settings["steps"])
    ckpt = run_dir / "checkpoint"
    try:
        while agent.env_steps < settings["steps"]:
            metrics = agent.train_iteration()
            state["iteration"] += 1
            steps = agent.env_steps
            logger.scalars("train", metrics, steps)
            note = ""
            if steps >= state["next_eval"]:
                ev = evaluate(agent.policy(), scenario, settings["eval_users"], EVAL_SEED)
                logger.evaluation(ev.metrics, steps, agent=settings["agent"], scenario=settings["scenario"],
                                  seed=settings["seed"], phase="train")
                state["next_eval"] = steps + settings["eval_interval"]
                note = f"eval {ev.metrics['return_mean']:.1f}"
            progress.update(steps, metrics, note)
            if state["iteration"] % settings["checkpoint_every"] == 0:
                save_checkpoint(agent, ckpt, state)
    except KeyboardInterrupt:
        save_checkpoint(agent, ckpt, state)
        progress.close()
        print(f"\ninterrupted: checkpoint saved; continue with --resume {run_dir}", file=sys.stderr)
        raise
    progress.close()
    save_checkpoint(agent, ckpt, state)


def save_checkpoint(agent: Any, path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary directory, then swap it in: a kill mid-save keeps the previous checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    agent.save(tmp)
    (tmp / "state.json").write_text(json.dumps(dict(state, env_steps=agent.env_steps)))
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def print_table(rows: dict[str, dict[str, float]]) -> None:
    keys = ("return_mean", "return_ci95", "ctr", "session_length", "satisfaction_end",
            "consumption_entropy", "slate_diversity", "coverage")
    names = list(rows)
    width = max(12, *(len(n) + 2 for n in names))
    print("\n" + "metric".ljust(22) + "".join(n.rjust(width) for n in names))
    for k in keys:
        print(k.ljust(22) + "".join(f"{rows[n][k]:{width}.3f}" for n in names))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            meta = run_dir / "run.json"
            if not meta.is_file():
                raise ValueError(f"--resume: no run.json in {run_dir} (is it a run directory?)")
            settings = json.loads(meta.read_text())
            if not (run_dir / "checkpoint" / "state.json").is_file():
                raise ValueError(f"--resume: no checkpoint in {run_dir / 'checkpoint'}")
            if args.steps is not None:
                settings["steps"] = args.steps
        else:
            settings = settings_from_args(args)
        device = resolve_device(settings["device"])
        scenario = make_scenario(settings["scenario"], settings["scenario_overrides"])
        entry = get_agent(settings["agent"])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if not args.resume:
        run_dir = new_run_dir(args.logdir, settings["scenario"], settings["agent"], settings["seed"])
        (run_dir / "run.json").write_text(json.dumps(settings, indent=2))
    print(f"run directory: {run_dir}", file=sys.stderr)

    state = dict(iteration=0, next_eval=0)
    agent = None
    if entry.trainable:
        kwargs = dict(seed=settings["seed"], device=device, model=settings["model"], algo=settings["algo"])
        if settings["agent"] == "ppo":
            kwargs["ray_address"] = settings["ray_address"]
        try:
            agent = entry.load()(scenario, **kwargs)
            if args.resume:
                agent.restore(run_dir / "checkpoint")
                state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            if agent is not None:
                agent.close()
            return 2
    logger = RunLogger(run_dir, purge_step=state.get("env_steps") if args.resume else None)
    try:
        if agent is not None:
            train(agent, settings, scenario, logger, run_dir, state)
            policy, steps = agent.policy(), agent.env_steps
        else:
            policy, steps = entry.load()(), 0
        final = evaluate(policy, scenario, settings["final_eval_users"], EVAL_SEED)
        baseline = evaluate(get_agent("random").load()(seed=0), scenario, settings["final_eval_users"], EVAL_SEED)
        common = dict(scenario=settings["scenario"], seed=settings["seed"])
        logger.evaluation(final.metrics, steps, agent=settings["agent"], phase="final", **common)
        # The random policy on the same users, for reference (not under this run's eval/ tags).
        logger.evaluation(baseline.metrics, steps, tensorboard=False, agent="random", phase="baseline", **common)
        final.episodes.to_csv(run_dir / "episodes.csv", index=False)
        hp = dict(agent=settings["agent"], scenario=settings["scenario"], seed=settings["seed"], steps=steps)
        if agent is not None:
            hp.update(agent.hparams())
        logger.hparams(hp, final.metrics)
    finally:
        logger.close()
        if agent is not None:
            agent.close()
    print_table({settings["agent"]: final.metrics, "random": baseline.metrics})
    print(f"\nresults: {run_dir / 'results.csv'}   tensorboard --logdir {args.logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
