"""Drift stress tests: train under one regime, evaluate under each drift family and magnitude.

  python experiments/stress.py                      # ppo, sasrec, sasrec-retrain, bandit; 3 seeds
  python experiments/stress.py --agents sasrec bandit --families cognitive shock --magnitudes 0 1 2
  python experiments/stress.py --load runs/stationary/ppo/0-* --agents sasrec bandit
  python experiments/stress.py --smoke              # the whole pipeline at toy sizes (under 2 minutes)

Every agent is trained (or loaded from a run directory with --load) under --train-scenario
(default stationary: no drift) and then evaluated, on the same users, under the training regime
and under each test regime: the training regime plus one drift family at one magnitude (0 turns
the family off, 1 is its default strength, 2 doubles it). The shock family is a sudden shift of
every user's interests at --shock-step toward another taste community, which also drives the
recovery analysis. Writes to --out: report.md, robustness.{md,csv}, recovery.csv, grid.csv,
timelines.csv, PNG plots and TensorBoard events (tb/).
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from envs.config import PRESETS, ScenarioConfig, make_scenario
from experiments import plots
from experiments import stress_analysis as sa
from experiments.harness import EVAL_SEED, evaluate
from experiments.registry import AGENTS, get_agent
from experiments.run import SMOKE, _merge, load_run, load_run_config, restore_policy, ray_tasks, run_one
from experiments.tracking import RunLogger
from simulator.params import check_int, check_range

FAMILIES = {"seasonal": "seasonal", "social": "social", "cognitive": "cognitive", "shock": "shocks"}
RETRAIN = "-retrain"            # sasrec-retrain: sasrec refitting every --retrain-every served steps
ONLINE_AGENTS = ("bandit",)     # learn online only: they first run on training users of the train regime
DEFAULT_AGENTS = ("ppo", "sasrec", "sasrec-retrain", "bandit")
STRESS_SMOKE = dict(seeds=(0, 1), magnitudes=(0.0, 1.0, 2.0), eval_users=32, shock_step=5, steps=512,
                    algo={"oracle-lookahead": {"top": 2, "rollouts": 2, "horizon": 5},
                          "sasrec": {"refit_batches": 4, "batch_size": 128},
                          "gru4rec": {"refit_batches": 4, "batch_size": 128}})


@dataclass(frozen=True)
class StressSettings:
    """Everything a stress test depends on (saved as settings.json next to the report)."""
    agents: tuple[str, ...] = DEFAULT_AGENTS
    families: tuple[str, ...] = tuple(FAMILIES)
    magnitudes: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    train_scenario: str = "stationary"
    scenario_overrides: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    algo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per agent (sasrec's serve sasrec-retrain)
    steps: int = 250_000              # training budget of trainable agents (env steps)
    eval_users: int = 512             # evaluation users per regime
    reference: str = "oracle-lookahead"
    shock_step: int = 10              # episode step of the shock family's sudden shift
    shock_strength: float = 0.8       # share of the way to the new interests at magnitude 1
    recovery_magnitude: float = 1.0   # shock magnitude the recovery analysis uses
    recovery_level: float = 0.9       # recovered = back to this share of the pre-shock engagement
    retrain_every: int = 10           # for the *-retrain agents
    loads: tuple[str, ...] = ()       # run directories of trained agents to load instead of training
    device: str = "cpu"

    def __post_init__(self) -> None:
        o = "stress"
        for a in self.agents:
            base = _base(a)
            if base not in AGENTS:
                raise ValueError(f"unknown agent '{a}'; valid agents: {', '.join(AGENTS)} "
                                 f"(and sasrec{RETRAIN}, gru4rec{RETRAIN})")
            if a.endswith(RETRAIN) and base not in ("sasrec", "gru4rec"):
                raise ValueError(f"'{a}': only sasrec and gru4rec retrain ({RETRAIN})")
        if not self.agents and not self.loads:
            raise ValueError("no agents to stress: give --agents or --load")
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"an agent is listed twice in {list(self.agents)}")
        for f in self.families:
            if f not in FAMILIES:
                raise ValueError(f"unknown drift family '{f}'; valid families: {', '.join(FAMILIES)}")
        if not self.families:
            raise ValueError("give at least one drift family")
        if not self.magnitudes:
            raise ValueError("give at least one magnitude")
        for m in self.magnitudes:
            check_range(o, "magnitude", m, 0.0, 100.0)
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.train_scenario not in PRESETS:
            raise ValueError(f"unknown scenario '{self.train_scenario}'; valid scenarios: {', '.join(PRESETS)}")
        ref = get_agent(self.reference)
        if ref.trainable:
            raise ValueError(f"the reference must be a policy that needs no training, got '{self.reference}'")
        check_int(o, "steps", self.steps, 1)
        check_int(o, "eval_users", self.eval_users, 2)
        check_int(o, "shock_step", self.shock_step, 1)
        check_range(o, "shock_strength", self.shock_strength, 0.0, 1.0)
        check_range(o, "recovery_level", self.recovery_level, 0.0, 1.0, lo_open=True)
        check_int(o, "retrain_every", self.retrain_every, 1)
        if "shock" in self.families and self.recovery_magnitude not in self.magnitudes:
            raise ValueError(f"--recovery-magnitude {self.recovery_magnitude} is not among the magnitudes "
                             f"{list(self.magnitudes)}")
        unknown = set(self.algo) - {self.reference, *(_base(a) for a in self.agents)}
        if unknown:
            raise ValueError(f"algo settings for '{sorted(unknown)[0]}', which is not stressed "
                             "(settings of NAME apply to NAME-retrain too)")
        self.train_config()  # bad scenario overrides fail here, before any work

    def train_config(self) -> ScenarioConfig:
        return make_scenario(self.train_scenario, self.scenario_overrides)

    def regimes(self) -> list[tuple[str, float, ScenarioConfig]]:
        """(family, magnitude, scenario) of every regime evaluated: the training regime first
        ("none", 0), then each family and magnitude that differs from it."""
        train = self.train_config()
        out = [(sa.NO_DRIFT, 0.0, train)]
        for family in self.families:
            for m in self.magnitudes:
                cfg = make_scenario(self.train_scenario, _merge(self.scenario_overrides, self.drift(family, m)))
                if not _same_regime(cfg, train):  # equal: the no-drift row stands in
                    out.append((family, float(m), cfg))
        return out

    def drift(self, family: str, magnitude: float) -> dict[str, Any]:
        """Scenario overrides that set one drift family to `magnitude` (0: off)."""
        section = FAMILIES[family]
        if magnitude == 0:
            return {section: {"enabled": False}}
        over: dict[str, Any] = {"enabled": True, "magnitude": float(magnitude)}
        if family == "shock":
            over["events"] = [dict(kind="sudden", step=self.shock_step, fraction=1.0, strength=self.shock_strength)]
        return {section: over}


def _same_regime(a: ScenarioConfig, b: ScenarioConfig) -> bool:
    """The same world and env parameters (the preset's name aside)."""
    return (a.world, a.env) == (b.world, b.env)


# ----------------------------------------------------------------------------- jobs
def _base(agent: str) -> str:
    return agent[: -len(RETRAIN)] if agent.endswith(RETRAIN) else agent


def _jobs(settings: StressSettings) -> list[dict[str, Any]]:
    """(agents, seed, load) for every policy to stress. Loaded runs replace training; an agent and
    its -retrain variant share one job (one fit on the logs, then a retraining copy)."""
    jobs, loaded = [], set()
    train = settings.train_config()
    for run_dir in settings.loads:
        saved = load_run(run_dir)
        cfg = make_scenario(saved["scenario"], saved["scenario_overrides"])
        if not _same_regime(cfg, train):
            raise ValueError(f"{run_dir} was trained on '{saved['scenario']}' with overrides "
                             f"{saved['scenario_overrides']}, not on the training regime '{settings.train_scenario}' "
                             f"with {dict(settings.scenario_overrides)}")
        jobs.append(dict(agents=[saved["name"]], seed=int(saved["seed"]), load=str(run_dir)))
        loaded.add(saved["name"])
    groups: dict[str, list[str]] = {}
    for agent in settings.agents:
        if agent not in loaded:
            groups.setdefault(_base(agent), []).append(agent)
    for names in groups.values():
        jobs.extend(dict(agents=names, seed=s, load=None) for s in settings.seeds)
    return jobs


def _build_policies(settings: StressSettings, job: dict[str, Any], out: Path) -> dict[str, Any]:
    """The policies of one job (agent name -> policy), trained, loaded or fitted under the training regime."""
    if job["load"]:
        return {job["agents"][0]: restore_policy(job["load"], settings.device)[1]}
    base = _base(job["agents"][0])
    algo = dict(settings.algo.get(base, {}))
    entry, train = get_agent(base), settings.train_config()
    if entry.trainable:  # the standard training run (TensorBoard, checkpoint), then its greedy policy
        run_dir, _ = run_one(dict(agent=base, name=base, trainable=True, scenario=settings.train_scenario,
                                  scenario_overrides=dict(settings.scenario_overrides), model=dict(settings.model),
                                  algo=algo, steps=settings.steps, seed=job["seed"], device=settings.device,
                                  eval_users=min(256, settings.eval_users), final_eval_users=settings.eval_users,
                                  eval_interval=max(1, settings.steps // 10), checkpoint_every=5, ray_address=None),
                             str(out / "runs"))
        return {base: restore_policy(run_dir, settings.device)[1]}
    job_dir = out / "runs" / settings.train_scenario / base / str(job["seed"])  # logs of log-trained agents
    job_dir.mkdir(parents=True, exist_ok=True)
    policy = entry.load()(train, seed=job["seed"], device=settings.device, model=dict(settings.model), algo=algo,
                          run_dir=job_dir)
    if base in ONLINE_AGENTS:  # its training: one pass over training users (seeded like training runs)
        evaluate(policy, train, settings.eval_users, seed=job["seed"])
    return {name: policy.with_retraining(settings.retrain_every) if name.endswith(RETRAIN) else policy
            for name in job["agents"]}


def run_job(settings: StressSettings, job: dict[str, Any], out: str) -> dict[str, Any]:
    """Train or load one job's agents for one seed, then evaluate a fresh copy of each under every regime.

    Returns rows (one per agent and regime: agent, seed, family, magnitude and the harness's
    metrics) and the timelines of those evaluations.
    """
    started = time.perf_counter()
    rows, timelines = [], []
    regimes = settings.regimes()
    for name, policy in _build_policies(settings, job, Path(out)).items():
        for family, magnitude, cfg in regimes:
            # A copy per regime: online learners must not carry what they learned from one regime to the next.
            ev = evaluate(copy.deepcopy(policy), cfg, settings.eval_users, EVAL_SEED)
            key = dict(agent=name, seed=job["seed"], family=family, magnitude=magnitude)
            rows.append(dict(key, **ev.metrics))
            timelines.append(ev.timeline.assign(**key))
    print(f"stress: {', '.join(job['agents'])} seed {job['seed']} done in {time.perf_counter() - started:.0f}s",
          file=sys.stderr)
    return dict(rows=rows, timelines=pd.concat(timelines, ignore_index=True))


def run_jobs(settings: StressSettings, out: Path, parallel: int = 1, ray_address: str | None = None
             ) -> list[dict[str, Any]]:
    """Every agent job plus the reference's, one after another or as Ray tasks."""
    jobs = _jobs(settings) + [dict(agents=[settings.reference], seed=0, load=None)]
    if parallel <= 1 and ray_address is None:
        return [run_job(settings, j, str(out)) for j in jobs]
    return ray_tasks(run_job, [(settings, j, str(out.resolve())) for j in jobs], parallel, ray_address)


# --------------------------------------------------------------------------- analysis
@dataclass
class StressResult:
    grid: pd.DataFrame          # one row per agent x seed x regime
    table: pd.DataFrame         # robustness: agent x family x magnitude, mean and CI over seeds
    degradation: pd.DataFrame   # per agent x family: slope, relative return at the largest magnitude
    recovery: pd.DataFrame      # per agent x seed
    recovery_summary: pd.DataFrame
    curves: pd.DataFrame        # per agent x seed x step around the shock
    timelines: pd.DataFrame


def analyse(settings: StressSettings, results: list[dict[str, Any]]) -> StressResult:
    grid = pd.DataFrame([r for res in results for r in res["rows"]])
    timelines = pd.concat([res["timelines"] for res in results], ignore_index=True)
    ref_rows = grid[grid.agent == settings.reference]
    grid = sa.add_relative(grid, ref_rows[["family", "magnitude", "return_mean"]])
    table = sa.robustness_table(grid)
    deg = sa.degradation(table)
    n = settings.eval_users
    timelines["homogenisation"] = np.nan
    for _, g in timelines.groupby(["agent", "seed", "family", "magnitude"], sort=False):
        timelines.loc[g.index, "homogenisation"] = sa.homogenisation_curve(g, n)
    recovery, curves = [], []
    if "shock" in settings.families and settings.recovery_magnitude > 0:
        def timeline(agent, seed, family, magnitude):
            return timelines[(timelines.agent == agent) & (timelines.seed == seed) & (timelines.family == family)
                             & (timelines.magnitude == magnitude)].sort_values("step")

        ref_shocked = timeline(settings.reference, 0, "shock", settings.recovery_magnitude)
        for (agent, seed), _ in grid.groupby(["agent", "seed"], sort=False):
            shocked = timeline(agent, seed, "shock", settings.recovery_magnitude)
            calm = timeline(agent, seed, sa.NO_DRIFT, 0.0)
            c = sa.shock_curves(shocked, calm, n)
            metrics = sa.recovery_metrics(c, shocked, ref_shocked, settings.shock_step, n, settings.recovery_level)
            recovery.append(dict(agent=agent, seed=seed, **metrics))
            curves.append(c.assign(agent=agent, seed=seed))
    recovery = pd.DataFrame(recovery)
    return StressResult(grid=grid, table=table, degradation=deg, recovery=recovery,
                        recovery_summary=sa.recovery_table(recovery) if len(recovery) else pd.DataFrame(),
                        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
                        timelines=timelines)


# ----------------------------------------------------------------------------- output
def _cell(row: Any, metric: str, digits: int = 3) -> str:
    mean, lo, hi = getattr(row, metric), getattr(row, f"{metric}_lo"), getattr(row, f"{metric}_hi")
    if not np.isfinite(mean):
        return "-"
    if np.isfinite(lo):
        return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
    return f"{mean:.{digits}g}"


def robustness_markdown(table: pd.DataFrame, metric: str) -> str:
    """One markdown table per family: agents x magnitudes, `metric` mean [95% CI over seeds]."""
    out = []
    for family, g in table.groupby("family", sort=False):
        mags = sorted(g.magnitude.unique())
        out += [f"**{family}**\n", "| agent | " + " | ".join(f"m={m:g}" for m in mags) + " |",
                "|---|" + "---|" * len(mags)]
        for agent, a in g.groupby("agent", sort=False):
            by = {r.magnitude: r for r in a.itertuples()}
            out.append(f"| {agent} | " + " | ".join(_cell(by[m], metric) if m in by else "" for m in mags) + " |")
        out.append("")
    return "\n".join(out)


def recovery_markdown(summary: pd.DataFrame) -> str:
    cols = [("recovery_time", "recovery time (steps)"), ("recovery_time_95", "to 95% (steps)"),
            ("reaction_time", "reaction time (steps)"),
            ("dip", "lowest engagement ratio"), ("post_shock_return", "post-shock return (min)"),
            ("post_shock_regret", "post-shock regret (min)")]
    out = ["| agent | seeds | " + " | ".join(c[1] for c in cols) + " | not recovered |",
           "|---|---|" + "---|" * len(cols) + "---|"]
    for r in summary.itertuples():
        out.append(f"| {r.agent} | {r.seeds} | " + " | ".join(_cell(r, c) for c, _ in cols)
                   + f" | {r.not_recovered} |")
    return "\n".join(out)


def make_plots(settings: StressSettings, res: StressResult, out: Path) -> dict[str, Path]:
    paths = dict(robustness=plots.robustness_curves(res.table, out / "robustness.png", settings.reference))
    if len(res.curves):
        paths["recovery"] = plots.recovery_curves(res.curves, settings.shock_step, settings.recovery_level,
                                                  out / "recovery.png")
    agent = _showcase_agent(settings, res)
    tl = res.timelines[(res.timelines.agent == agent) & (res.timelines.seed == res.timelines.seed.min())]
    panels = {"no drift": tl[tl.family == sa.NO_DRIFT]}
    for family in settings.families:
        f = tl[tl.family == family]
        if len(f):
            panels[f"{family} x{f.magnitude.max():g}"] = f[f.magnitude == f.magnitude.max()]
    paths["topic_shares"] = plots.topic_shares(panels, settings.eval_users, out / "topic_shares.png",
                                               f"population's consumption by topic under {agent} "
                                               f"(seed {int(tl.seed.min())}), largest magnitudes")
    paths["homogenisation"] = plots.homogenisation(res.timelines, out / "homogenisation.png")
    return paths


def _showcase_agent(settings: StressSettings, res: StressResult) -> str:
    """The agent whose topic shares are drawn: the first stressed one."""
    agents = [a for a in dict.fromkeys(res.grid.agent) if a != settings.reference]
    return agents[0] if agents else settings.reference


def log_tensorboard(settings: StressSettings, res: StressResult, out: Path) -> None:
    """The report's curves as TensorBoard scalars, one run per agent under tb/.

    robustness/<family>/<metric> at step = magnitude x 100; recovery/* and homogenisation/<family>
    at the episode step; topic_shares/<regime>/topic_k for the showcased agent.
    """
    for agent, g in res.table.groupby("agent", sort=False):
        logger = RunLogger(out / "tb" / agent)
        for r in g.itertuples():
            logger.scalars(f"robustness/{r.family}", dict(relative_return=r.relative_return, regret=r.regret,
                                                          return_mean=r.return_mean), int(round(r.magnitude * 100)))
        if len(res.curves):
            c = res.curves[res.curves.agent == agent].groupby("step")[["engagement_ratio", "fit_gap"]].mean()
            for step, r in c.iterrows():
                logger.scalars("recovery", dict(engagement_ratio=r.engagement_ratio, fit_gap=r.fit_gap), int(step))
        tl = res.timelines[res.timelines.agent == agent]
        for family, f in tl.groupby("family", sort=False):
            h = f[f.magnitude == f.magnitude.max()].groupby("step").homogenisation.mean()
            for step, v in h.items():
                logger.scalars("homogenisation", {family: v}, int(step))
        if agent == _showcase_agent(settings, res):
            shares = [c for c in tl.columns if c.startswith("share_")]
            first = tl[tl.seed == tl.seed.min()]
            for family, f in first.groupby("family", sort=False):
                f = f[(f.magnitude == f.magnitude.max()) & (f.active_users >= sa.MIN_ACTIVE_SHARE * settings.eval_users)]
                for r in f.itertuples():
                    logger.scalars(f"topic_shares/{family}",
                                   {f"topic_{c[6:]}": getattr(r, c) for c in shares}, int(r.step))
        logger.close()


def write_report(settings: StressSettings, res: StressResult, out: Path, paths: dict[str, Path],
                 command: str, seconds: float) -> Path:
    agents = [a for a in dict.fromkeys(res.grid.agent) if a != settings.reference]
    deg = res.degradation[res.degradation.agent.isin(agents)]
    lines = [f"# Drift stress test: trained on `{settings.train_scenario}`", "",
             f"`{command}`  ({seconds / 60:.1f} min)", "",
             f"Agents: {', '.join(agents)}; seeds {', '.join(map(str, sorted(res.grid.seed.unique())))}; "
             f"{settings.eval_users} evaluation users per regime (the same users and simulator noise for every "
             f"agent and regime); reference for regret: `{settings.reference}` (reads the true user state). "
             f"Magnitude 0 is the training regime; 1 is each family's default strength.", ""]
    lines += ["## Which agent degrades least", ""]
    if len(deg):
        best, score = sa.least_degraded(deg)
        lines.append(f"Averaged over families, **{best}** keeps the most of its own no-drift return at the "
                     f"largest magnitude ({score:.1%}). Per family (relative return at the largest magnitude; "
                     f"slope per unit of magnitude; whether it falls at every step of the sweep):")
        lines += ["", "| family | " + " | ".join(agents) + " | degrades least |", "|---|" + "---|" * (len(agents) + 1)]
        for family, g in deg.groupby("family", sort=False):
            by = {r.agent: r for r in g.itertuples()}
            cells = [f"{by[a].relative_at_max:.3f} ({by[a].slope:+.3f}{', falls' if by[a].monotone_decrease else ''})"
                     for a in agents]
            lines.append(f"| {family} | " + " | ".join(cells) + f" | {sa.least_degraded(g)[0]} |")
        falls = deg.groupby("family", sort=False).monotone_decrease.all()
        lines += ["", "Families in which every agent's relative return falls at each step of the magnitude sweep: "
                  f"{', '.join(falls.index[falls]) or 'none'}; in which it does not: "
                  f"{', '.join(falls.index[~falls]) or 'none'}.", ""]
    lines += ["## Robustness", "", f"![robustness curves]({paths['robustness'].name})", "",
              "Return relative to the agent's own no-drift return, mean [95% bootstrap CI over seeds]:", "",
              robustness_markdown(res.table, "relative_return"),
              f"Regret (minutes per session) against `{settings.reference}` on the same regime:", "",
              robustness_markdown(res.table, "regret")]
    if len(res.recovery_summary):
        lines += ["## Shock recovery", "",
                  f"At episode step {settings.shock_step} every user's interests move "
                  f"{min(1.0, settings.shock_strength * settings.recovery_magnitude):.0%} of the way toward another "
                  f"taste community (shock magnitude {settings.recovery_magnitude:g}). Each policy's engagement is "
                  "divided by its own engagement on the same users without the shock (common random numbers "
                  "make the two runs identical before it), which removes the within-session trend. A reference "
                  "that plans with copies of the true simulator foresees the shock, so its runs can differ "
                  "before it.", "",
                  f"![recovery curves]({paths['recovery'].name})", "",
                  recovery_markdown(res.recovery_summary), "",
                  f"- **recovery time**: steps after the shock until the engagement ratio (3-step trailing mean) "
                  f"is back to {settings.recovery_level:.0%} of its pre-shock level (0: it never fell below; "
                  "a fall counts when it starts within 10 steps of the shock); *to 95%*: the same for 95%.",
                  "- **reaction time**: steps until the true fit of the served items to the users' new interests "
                  "has made up half of its drop (how long the recommender takes to follow the shift).",
                  "- **post-shock regret**: minutes per user watched from the shock on, reference minus agent.", ""]
    lines += ["## Population over time", "", f"![topic shares]({paths['topic_shares'].name})", "",
              "Shares of the population's consumption by topic at each step (steps with at least "
              f"{sa.MIN_ACTIVE_SHARE:.0%} of users still in session).", "",
              f"![homogenisation]({paths['homogenisation'].name})", "",
              "Concentration (Herfindahl index over topics) of what the population watched at each step; "
              "higher means everyone watches the same topics.", "",
              "## Files", "", "grid.csv (every evaluation), robustness.csv, recovery.csv (per seed), "
              "recovery_summary.csv, recovery_curves.csv, timelines.csv, settings.json, jobs.pkl (the raw "
              "evaluations: `--report-only` redoes this report from them); "
              f"TensorBoard: `tensorboard --logdir {out / 'tb'}`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def stress(settings: StressSettings, out: Path, parallel: int = 1, ray_address: str | None = None,
           command: str = "experiments/stress.py") -> StressResult:
    """Run the grid, then analyse it and write every output into `out`."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2, default=list))
    results = run_jobs(settings, out, parallel, ray_address)
    # The raw evaluations: --report-only redoes the analysis, tables and plots from them.
    pd.to_pickle(results, out / "jobs.pkl")
    (out / "command.json").write_text(json.dumps(dict(command=command, seconds=time.perf_counter() - started)))
    return write_outputs(settings, results, out)


def write_outputs(settings: StressSettings, results: list[dict[str, Any]], out: Path) -> StressResult:
    """Tables, plots, TensorBoard events and report.md from the jobs' evaluations."""
    res = analyse(settings, results)
    res.grid.to_csv(out / "grid.csv", index=False)
    res.table.to_csv(out / "robustness.csv", index=False)
    res.timelines.to_csv(out / "timelines.csv", index=False)
    (out / "robustness.md").write_text(robustness_markdown(res.table, "relative_return"))
    if len(res.recovery):
        res.recovery.to_csv(out / "recovery.csv", index=False)
        res.recovery_summary.to_csv(out / "recovery_summary.csv", index=False)
        res.curves.to_csv(out / "recovery_curves.csv", index=False)
    paths = make_plots(settings, res, out)
    shutil.rmtree(out / "tb", ignore_errors=True)  # a redone report replaces the events, not adds to them
    log_tensorboard(settings, res, out)
    meta = json.loads((out / "command.json").read_text()) if (out / "command.json").is_file() else {}
    write_report(settings, res, out, paths, meta.get("command", "experiments/stress.py"), meta.get("seconds", 0.0))
    return res


def load_outputs(out: Path) -> tuple[StressSettings, list[dict[str, Any]]]:
    """The settings and raw evaluations of a finished stress test, for --report-only."""
    settings_path, jobs_path = out / "settings.json", out / "jobs.pkl"
    for path in (settings_path, jobs_path):
        if not path.is_file():
            raise ValueError(f"--report-only: no {path.name} in {out} (is it a finished stress test?)")
    saved = json.loads(settings_path.read_text())
    for key in ("agents", "families", "magnitudes", "seeds", "loads"):
        saved[key] = tuple(saved[key])
    return StressSettings(**saved), pd.read_pickle(jobs_path)


# -------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = StressSettings()
    p.add_argument("--agents", nargs="*", default=None,
                   help=f"agents to stress (default: {' '.join(DEFAULT_AGENTS)}; NAME{RETRAIN} refits sasrec/gru4rec)")
    p.add_argument("--families", nargs="+", default=None, help=f"drift families (default: {' '.join(FAMILIES)})")
    p.add_argument("--magnitudes", nargs="+", type=float, default=None,
                   help="drift magnitudes, >= 0 (default: 0 0.5 1 2)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default: 0 1 2)")
    p.add_argument("--train-scenario", default=d.train_scenario, help=f"training regime (default: {d.train_scenario})")
    p.add_argument("--steps", type=int, default=None, help=f"training budget of PPO agents (default: {d.steps})")
    p.add_argument("--eval-users", type=int, default=None, help=f"evaluation users per regime (default: {d.eval_users})")
    p.add_argument("--reference", default=d.reference, help=f"regret reference (default: {d.reference})")
    p.add_argument("--shock-step", type=int, default=None, help=f"step of the shock (default: {d.shock_step})")
    p.add_argument("--recovery-magnitude", type=float, default=d.recovery_magnitude,
                   help="shock magnitude for the recovery analysis (default: 1)")
    p.add_argument("--retrain-every", type=int, default=d.retrain_every,
                   help=f"served steps between refits of *{RETRAIN} agents (default: {d.retrain_every})")
    p.add_argument("--load", nargs="+", default=(), metavar="RUN_DIR",
                   help="trained run directories (run.py output) to stress instead of training those agents")
    p.add_argument("--out", default=None, help="output directory (default: runs/stress/<time>)")
    p.add_argument("--parallel", type=int, default=1, help="jobs at a time, as Ray tasks (default: 1, in-process)")
    p.add_argument("--ray-address", default=None, help="run the jobs on an existing Ray cluster")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where learners train")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML with optional sections scenario: (training-regime overrides), model:, algo: {AGENT: {...}}")
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end (under two minutes)")
    p.add_argument("--report-only", default=None, metavar="OUT_DIR",
                   help="redo the tables, plots and report of a finished stress test from its saved evaluations")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> StressSettings:
    kw: dict[str, Any] = {}
    algo: dict[str, dict[str, Any]] = {}
    agents = tuple(args.agents) if args.agents is not None else (() if args.load else DEFAULT_AGENTS)
    stressed = {_base(a) for a in agents} | {args.reference}
    if args.smoke:  # toy sizes first: flags and the config file override them
        kw.update({k: v for k, v in STRESS_SMOKE.items() if k != "algo"},
                  scenario_overrides=SMOKE["scenario"], model=SMOKE["model"])
        algo = {k: {**SMOKE["algo"].get(k, {}), **STRESS_SMOKE["algo"].get(k, {})}
                for k in ("ppo", "sasrec", "gru4rec", "oracle-lookahead") if k in stressed}
    kw["agents"] = agents
    for name in ("families", "magnitudes", "seeds"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    if args.config:
        cfg = load_run_config(args.config)
        kw["scenario_overrides"] = _merge(kw.get("scenario_overrides", {}), cfg.get("scenario", {}))
        kw["model"] = {**kw.get("model", {}), **cfg.get("model", {})}
        for agent, settings in cfg.get("algo", {}).items():
            if not isinstance(settings, dict):
                raise ValueError(f"algo.{agent} in {args.config} must map that agent's settings "
                                 "(stress configs key algo: by agent name)")
            algo[agent] = {**algo.get(agent, {}), **settings}
    for name in ("steps", "eval_users", "shock_step"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    kw.update(train_scenario=args.train_scenario, reference=args.reference, loads=tuple(args.load), algo=algo,
              recovery_magnitude=args.recovery_magnitude, retrain_every=args.retrain_every, device=args.device)
    if args.parallel < 1:
        raise ValueError("--parallel must be >= 1")
    return StressSettings(**kw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    print(f"\nreport: {out / 'report.md'}\ntensorboard --logdir {out / 'tb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
