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
from agents.policy import RandomPolicy
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
                   "sb3-ppo": {"num_envs": 16, "n_steps": 16, "batch_size": 128, "n_epochs": 1},
                   "popularity": {"log_users": 16, "log_steps": 40},
                   "sasrec": {"log_users": 16, "log_steps": 40, "epochs": 1},
                   "gru4rec": {"log_users": 16, "log_steps": 40, "epochs": 1},
                   "oracle-lookahead": {"top": 2, "rollouts": 2, "horizon": 5}})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="ppo", help=f"what to run: {', '.join(AGENTS)} (default: ppo)")
    p.add_argument("--scenario", default="mixed", help=f"scenario preset: {', '.join(PRESETS)} (default: mixed)")
    p.add_argument("--steps", type=int, default=None,
                   help="training budget in environment (user) steps (default: 250000; ignored by non-training agents)")
    p.add_argument("--seed", type=int, default=0, help="training seed (evaluation users are fixed: seed %d)" % EVAL_SEED)
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="run several seeds (one run directory each); overrides --seed")
    p.add_argument("--parallel", type=int, default=1,
                   help="with --seeds: runs at a time, as Ray tasks (local Ray, or the cluster of --ray-address)")
    p.add_argument("--retrain-every", type=int, default=None, metavar="K",
                   help="sasrec/gru4rec: refit on logs + fresh interactions every K served steps")
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
    if args.retrain_every is not None:
        if args.agent not in ("sasrec", "gru4rec"):
            raise ValueError("--retrain-every applies to --agent sasrec or gru4rec only")
        algo = {**algo, "retrain_every": args.retrain_every}
    if args.parallel < 1:
        raise ValueError("--parallel must be >= 1")
    if steps < 1 or eval_users < 2 or final_users < 2:
        raise ValueError("--steps must be >= 1 and --eval-users/--final-eval-users >= 2")
    make_scenario(args.scenario, scenario_over)  # fail fast on bad overrides
    # The name runs are filed and compared under (a retraining variant is its own agent).
    name = f"{args.agent}-retrain" if args.retrain_every else args.agent
    return dict(agent=args.agent, name=name, trainable=entry.trainable, scenario=args.scenario, scenario_overrides=scenario_over,
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
                logger.evaluation(ev.metrics, steps, agent=settings["name"], scenario=settings["scenario"],
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


def run_one(settings: dict[str, Any], logdir: str, resume: str | None = None) -> tuple[Path, dict[str, float]]:
    """One run: build the agent, train it if it trains, evaluate it and random on the same users.

    Returns (run directory, final metrics). Bad settings raise ValueError before any work is lost.
    """
    settings.setdefault("name", settings["agent"])
    device = resolve_device(settings["device"])
    scenario = make_scenario(settings["scenario"], settings["scenario_overrides"])
    entry = get_agent(settings["agent"])
    if resume:
        run_dir = Path(resume)
    else:
        run_dir = new_run_dir(logdir, settings["scenario"], settings["name"], settings["seed"])
        (run_dir / "run.json").write_text(json.dumps(settings, indent=2))
    print(f"run directory: {run_dir}", file=sys.stderr)

    state = dict(iteration=0, next_eval=0)
    agent = policy = None
    kwargs = dict(seed=settings["seed"], device=device, model=settings["model"], algo=settings["algo"])
    try:
        if entry.trainable:
            if settings["agent"] == "ppo":
                kwargs["ray_address"] = settings["ray_address"]
            agent = entry.load()(scenario, **kwargs)
            if resume:
                agent.restore(run_dir / "checkpoint")
                state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        else:
            policy = entry.load()(scenario, run_dir=run_dir, **kwargs)
    except ValueError:  # bad settings or checkpoint: nothing was run, leave no half-made run behind
        if agent is not None:
            agent.close()
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    logger = RunLogger(run_dir, purge_step=state.get("env_steps") if resume else None)
    try:
        if agent is not None:
            train(agent, settings, scenario, logger, run_dir, state)
            policy, steps = agent.policy(), agent.env_steps
        else:
            steps = 0
        final = evaluate(policy, scenario, settings["final_eval_users"], EVAL_SEED)
        baseline = evaluate(RandomPolicy(seed=settings["seed"]), scenario, settings["final_eval_users"], EVAL_SEED)
        common = dict(scenario=settings["scenario"], seed=settings["seed"])
        logger.evaluation(final.metrics, steps, agent=settings["name"], phase="final", **common)
        # The random policy on the same users, for reference (not under this run's eval/ tags).
        logger.evaluation(baseline.metrics, steps, tensorboard=False, agent="random", phase="baseline", **common)
        final.episodes.to_csv(run_dir / "episodes.csv", index=False)
        final.timeline.to_csv(run_dir / "timeline.csv", index=False)
        hp = dict(agent=settings["name"], scenario=settings["scenario"], seed=settings["seed"], steps=steps)
        if agent is not None:
            hp.update(agent.hparams())
        logger.hparams(hp, final.metrics)
    finally:
        logger.close()
        if agent is not None:
            agent.close()
    print_table({settings["name"]: final.metrics, "random": baseline.metrics})
    print(f"\nresults: {run_dir / 'results.csv'}")
    return run_dir, final.metrics


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The saved settings of a finished (or checkpointed) training run; errors name the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"no run directory at {run_dir}")
    meta = run_dir / "run.json"
    if not meta.is_file():
        raise ValueError(f"no run.json in {run_dir} (is it a run directory?)")
    if not (run_dir / "checkpoint" / "state.json").is_file():
        raise ValueError(f"no checkpoint in {run_dir / 'checkpoint'}")
    settings = json.loads(meta.read_text())
    if not get_agent(settings["agent"]).trainable:
        raise ValueError(f"{run_dir} holds a run of '{settings['agent']}', which has no checkpoint to load")
    return settings


def restore_policy(run_dir: str | Path, device: str = "cpu") -> tuple[dict[str, Any], Any]:
    """(saved settings, greedy policy) of the checkpoint in a run directory, to evaluate elsewhere."""
    settings = load_run(run_dir)
    scenario = make_scenario(settings["scenario"], settings["scenario_overrides"])
    agent = get_agent(settings["agent"]).load()(scenario, seed=settings["seed"], device=resolve_device(device),
                                                model=settings["model"], algo=settings["algo"])
    try:
        agent.restore(Path(run_dir) / "checkpoint")
        return settings, agent.policy()
    finally:
        agent.close()


def run_seeds(settings: dict[str, Any], seeds: list[int], logdir: str, parallel: int) -> list[tuple[Path, dict]]:
    """Several seeds, one after another, or `parallel` at a time as Ray tasks."""
    per_seed = [dict(settings, seed=s) for s in seeds]
    if parallel <= 1:
        return [run_one(s, logdir) for s in per_seed]
    return ray_tasks(run_one, [(s, str(Path(logdir).resolve())) for s in per_seed], parallel, settings["ray_address"])


def ray_tasks(fn: Any, calls: list[tuple], parallel: int, ray_address: str | None = None) -> list[Any]:
    """fn(*args) for every args in `calls`, as one-CPU Ray tasks: on the cluster at `ray_address`,
    or on a local Ray started with `parallel` CPUs. Results come back in the order of `calls`."""
    import ray

    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address)
        else:
            ray.init(num_cpus=parallel, include_dashboard=False, log_to_driver=True)
    task = ray.remote(num_cpus=1)(fn)
    return ray.get([task.remote(*args) for args in calls])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            settings = load_run(args.resume)
            if args.steps is not None:
                settings["steps"] = args.steps
            run_one(settings, args.logdir, resume=args.resume)
        elif args.seeds:
            settings = settings_from_args(args)
            results = run_seeds(settings, args.seeds, args.logdir, args.parallel)
            returns = [m["return_mean"] for _, m in results]
            print(f"\n{settings['name']} on {settings['scenario']}: return_mean per seed "
                  + ", ".join(f"{r:.2f}" for r in returns))
        else:
            run_one(settings_from_args(args), args.logdir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"tensorboard --logdir {args.logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
