"""The offline-evaluation study: do the numbers researchers compute on logs tell which policy earns
most online? The simulator knows the answer, so every offline number sits next to the truth.

1. Training logs: the epsilon-popularity logging policy on `log_users` x `log_steps` (seed
   LOG_SEED_OFFSET + train_seed, as the agents' factories log). Every agent is built from the registry
   with those logs in its RunContext (`logs`): popularity, sasrec and gru4rec are fitted on them, the
   LinUCB bandit learns the logged slates; an online learner (its entry's `online`) is then frozen, so
   that offline and online see one policy. The direct method's reward model learns from them too.
2. Per evaluation seed s: held-out logs of the same logging policy on the harness's users of seed
   EVAL_SEED + s (one episode per user: the users `evaluate` shows every agent), and of new users
   (the scenario with `users.past_interactions` 0), for the cold-start split.
3. Offline ranking metrics (experiments/core/ranking.py) of every agent that scores candidates;
   off-policy estimates (experiments/studies/offline/ope.py) of every agent that acts on observations; the true
   return from the harness on the same users. An OPE estimate is per logged step; times the
   logged steps per user it estimates the return (the assumption a one-step estimate makes: the
   target keeps the logging policy's session lengths). The logs also carry the one-step truth
   (each candidate's expected reward under the true state), which splits an estimate's error into
   the estimator's own (against the one-step truth) and what no one-step estimate sees (the
   one-step truth against the online return: longer or shorter sessions, drift).
4. Kendall's tau between the agents' order by each offline number and by their true return.

`logs_scenario` names the world the logs (training and held-out) come from, when it is not the
one the truth is measured in: logs of `stationary` judged against the return under `shock` (every
user's tastes jump at step 10) is offline evaluation with logs from before the drift. The two
must share their catalog (same items, same features).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from agents.baselines import BanditParams, LinUCBPolicy
from agents.logs import LOG_SEED_OFFSET, EpsilonPopularity, collect_logs, load_logs, save_logs
from agents.offline import LoggedSteps, export_minari, logged_steps
from agents.policy import Propensities, Scorer, bind
from agents.registry import get_agent
from envs.config import ScenarioConfig, make_scenario, scenario_label
from envs.vector import RecVectorEnv
from experiments.core import ranking as rk
from experiments.core.commands import repo_relative
from experiments.core.costs import check_evaluation_memory
from experiments.core.harness import EVAL_SEED, evaluate
from experiments.core.records import load_run
from experiments.core.restore import restore_policy
from experiments.core.rundirs import staged
from experiments.core.stats import mean_interval
from experiments.core.tables import frame_markdown
from experiments.studies.offline import ope
from simulator.params import check_int, check_range, merge_overrides
from simulator.world import World

DEFAULT_AGENTS = (
    "random",
    "popularity",
    "item-score",
    "bandit",
    "sasrec",
    "gru4rec",
    "oracle-myopic",
    "oracle-session",
)
LOGGING = "logging"  # the logging policy itself, a target whose IPS estimate must equal its truth
BATCH = 4096  # logged steps per call of a policy


@dataclass(frozen=True)
class OfflineSettings:
    """What the study measures (the `experiments/offline.py` flags)."""

    scenario: str = "mixed"
    agents: tuple[str, ...] = DEFAULT_AGENTS
    seeds: tuple[int, ...] = (0, 1, 2)  # evaluation seeds: users of EVAL_SEED + s
    eval_users: int = 512  # users per evaluation seed (held-out logs and the harness)
    log_users: int = 256  # training logs: parallel sessions
    log_steps: int = 400  # training logs: steps
    epsilon: float = 0.3  # the logging policy's exploration
    cutoffs: tuple[int, ...] = rk.DEFAULT_CUTOFFS
    cold_interactions: int = 5  # fewer interactions than this in the history: a cold-start step
    logs_scenario: str | None = None  # the world the logs come from (None: `scenario`), e.g. before a drift
    train_seed: int = 0
    eval_steps: int | None = None  # steps logged per evaluation seed (None: until every first episode ends)
    scenario_overrides: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)  # EncoderConfig overrides of sasrec / gru4rec
    algo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per agent `algo:` settings
    ppo_run: str | None = None  # a trained PPO run directory to add as agent "ppo"

    def __post_init__(self) -> None:
        o = "offline"
        scenario_label(self.scenario)  # an unknown scenario fails here
        if not self.agents or len(set(self.agents)) != len(self.agents):
            raise ValueError(f"{o}.agents must be distinct agent names, got {list(self.agents)}")
        for name in self.agents:
            if get_agent(name).trains:
                raise ValueError(f"{o}.agents: '{name}' trains in the simulator; pass a trained run (--ppo-run DIR)")
        for agent, algo in self.algo.items():
            get_agent(agent).make_params(algo)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"{o}.seeds must be distinct seeds, got {list(self.seeds)}")
        for s in self.seeds:
            check_int(o, "seeds", s, 0)
        check_int(o, "eval_users", self.eval_users, 2)
        check_int(o, "log_users", self.log_users, 1)
        check_int(o, "log_steps", self.log_steps, 1)
        check_range(o, "epsilon", self.epsilon, 0.0, 1.0)
        if not self.cutoffs:
            raise ValueError(f"{o}.cutoffs must name at least one K")
        for k in self.cutoffs:
            rk.check_cutoff(k)
        check_int(o, "cold_interactions", self.cold_interactions, 1)
        if self.logs_scenario is not None:
            try:
                scenario_label(self.logs_scenario)
            except ValueError as err:
                raise ValueError(f"logs scenario: {err}") from None
        check_int(o, "train_seed", self.train_seed, 0)
        if self.eval_steps is not None:
            check_int(o, "eval_steps", self.eval_steps, 1)
        if self.ppo_run is not None:  # an unreadable run or one of another scenario fails before any work
            run = load_run(self.ppo_run, flag="--ppo-run").settings  # unfinished or inconsistent: refused
            if run.scenario_label != self.label:
                raise ValueError(f"--ppo-run {self.ppo_run} was trained on '{run.scenario_label}', not '{self.label}'")
        truth, logged = self.config(), self.logs_config()  # bad overrides fail here, before any work
        check_evaluation_memory("--eval-users", self.eval_users, truth, dict(self.model))
        if logged.name != truth.name:
            a, b = (World(c.world, 1, 0).catalog.features for c in (truth, logged))
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ValueError(
                    f"logs scenario '{logged.name}' and scenario '{truth.name}' have different catalogs "
                    f"({b.shape[0]} and {a.shape[0]} items): agents trained on one cannot serve the other"
                )

    @property
    def label(self) -> str:
        """The scenario's name in reports and paths: a preset's, or a scenario file's label (by content)."""
        return scenario_label(self.scenario)

    def config(self, extra: Mapping[str, Any] | None = None) -> ScenarioConfig:
        """The scenario the true returns are measured in."""
        return make_scenario(self.scenario, merge_overrides(self.scenario_overrides, extra))

    def logs_config(self, extra: Mapping[str, Any] | None = None) -> ScenarioConfig:
        """The scenario the logs come from."""
        return make_scenario(self.logs_scenario or self.scenario, merge_overrides(self.scenario_overrides, extra))

    def replace(self, **changes: Any) -> OfflineSettings:
        return dataclasses.replace(self, **changes)


@dataclass
class StudyResult:
    """The study's measurements, one row per (agent, seed[, ...]).

    online: agent, seed, return_mean (true return, minutes per episode), session_length.
    ranking: agent, seed, segment ("all": the scenario's users; "cold" / "warm": the steps of the
      scenario's and of new users split by `cold_start`), metric, value, steps (of the segment).
    ope: agent, seed, estimator, estimate (return units), truth (online return), one_step
      (the one-step truth in return units), reason (why an estimate is NaN).
    notes: agent -> why it has no ranking metrics or no OPE estimate.
    """

    online: pd.DataFrame
    ranking: pd.DataFrame
    ope: pd.DataFrame
    notes: dict[str, str]


# ----------------------------------------------------------------------------- logs and agents
class Frozen:
    """A policy served as it is: everything but observe(), so it stops learning (an online learner
    fitted on logs is then the same policy offline and online)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def __getattr__(self, name: str) -> Any:
        if name == "observe":
            raise AttributeError(name)
        return getattr(self.policy, name)


def batched(fn: Callable[[dict[str, np.ndarray]], np.ndarray], obs: dict[str, np.ndarray]) -> np.ndarray:
    """fn over the observation BATCH steps at a time, concatenated along the step axis."""
    n = len(obs["context"])
    return np.concatenate([np.asarray(fn({k: v[i : i + BATCH] for k, v in obs.items()})) for i in range(0, n, BATCH)])


def build_agents(settings: OfflineSettings, config: ScenarioConfig, logs: pd.DataFrame) -> dict[str, Any]:
    """Every agent of the study by name, from the registry, given the training `logs` to learn from and
    bound to an env of `config`; an online learner frozen at what the logs taught it."""
    probe = RecVectorEnv(num_envs=1, scenario=config, seed=0)
    agents: dict[str, Any] = {}
    for name in settings.agents:
        spec = get_agent(name)
        policy = spec.build(
            config,
            settings.algo.get(name, {}),
            seed=settings.train_seed,
            model=dict(settings.model),
            logs=logs,
            logs_scenario=settings.logs_config(),
        )
        agents[name] = Frozen(policy) if spec.online else policy
    if settings.ppo_run is not None:
        agents["ppo"] = restore_policy(settings.ppo_run, flag="--ppo-run")[1]
    for policy in agents.values():
        bind(policy, probe)
    return agents


def reward_model(config: ScenarioConfig, steps: LoggedSteps) -> LinUCBPolicy:
    """The direct method's reward model: ridge regression of the slot reward on LinUCB's features of
    (observation, candidate) (a LinUCB without exploration: its scores are the predictions)."""
    model = LinUCBPolicy(BanditParams(alpha=0.0, ridge=1.0))
    model.bind(RecVectorEnv(num_envs=1, scenario=config, seed=0))
    return model.fit_steps(steps, BATCH)


def held_out(settings: OfflineSettings, config: ScenarioConfig, seed: int) -> LoggedSteps:
    """The logging policy's steps in `config` on the harness's users of seed EVAL_SEED + seed (one
    episode each: the first of each slot)."""
    n_steps = settings.eval_steps or config.env.max_steps + 1
    logs = collect_logs(
        config, EpsilonPopularity(settings.epsilon, seed), settings.eval_users, n_steps, EVAL_SEED + seed
    )
    return logged_steps(logs[logs["user"] < settings.eval_users], config)


def training_logs(settings: OfflineSettings) -> pd.DataFrame:
    """The logging policy's logs the agents learn from, in the logs' scenario (seed LOG_SEED_OFFSET +
    train_seed, as the agents' factories log)."""
    return collect_logs(
        settings.logs_config(),
        EpsilonPopularity(settings.epsilon, settings.train_seed),
        settings.log_users,
        settings.log_steps,
        seed=LOG_SEED_OFFSET + settings.train_seed,
    )


def export_logs(
    settings: OfflineSettings, root: Path, dataset_id: str, logs_file: str | Path | None = None
) -> tuple[LoggedSteps, Path]:
    """The training logs (also saved as root/<scenario>-logs.parquet), or the Parquet logs at
    `logs_file`, as the Minari dataset `dataset_id` under `root`: (the steps, the dataset's directory)."""
    config = settings.logs_config()
    if logs_file is not None:
        logs = load_logs(logs_file)
    else:
        logs = training_logs(settings)
        save_logs(logs, Path(root) / f"{settings.label}-logs.parquet")
    steps = logged_steps(logs, config)
    return steps, export_minari(steps, config, dataset_id, root)


# ----------------------------------------------------------------------------- measuring
def relevance(steps: LoggedSteps, n_candidates: int) -> np.ndarray:
    """[S, C] bool: the logged candidates the user clicked and watched (watch time > 0)."""
    rel = np.zeros((len(steps), n_candidates), bool)
    rows = np.arange(len(steps))[:, None]
    rel[rows, steps.slate] = steps.click & (steps.slot_reward > 0)
    return rel


def ranking_rows(
    name: str,
    policy: Any,
    data: dict[str, LoggedSteps],
    settings: OfflineSettings,
    topics: np.ndarray,
    information: np.ndarray,
) -> list[dict[str, Any]]:
    """Accuracy per segment of `data` (segment -> steps), and beyond accuracy on "all", of the policy
    `name`: rows of StudyResult.ranking without agent and seed. topics [I, T] the catalog's topic
    mixtures, information [I] each item's self-information. A policy without scores(obs) is a
    ValueError: there is nothing to rank by."""
    if not isinstance(policy, Scorer):
        raise ValueError(f"{name} has no scores(obs) to rank candidates by, so no ranking metrics")
    scorer = policy.scores
    rows = []
    for segment, steps in data.items():
        if len(steps) == 0:
            continue
        scores = batched(scorer, steps.obs)
        rel = relevance(steps, scores.shape[1])
        for metric, values in rk.accuracy_metrics(scores, rel, settings.cutoffs).items():
            counted = np.isfinite(values)
            value = float(values[counted].mean()) if counted.any() else float("nan")
            rows.append(dict(segment=segment, metric=metric, value=value, steps=int(counted.sum())))
        if segment != "all":
            continue
        for k in settings.cutoffs:
            lists = rk.top_items(scores, steps.obs["candidate_items"], k)
            beyond = {
                f"coverage@{k}": rk.coverage(lists, len(topics)),
                f"diversity@{k}": rk.intra_list_diversity(lists, topics),
                f"novelty@{k}": rk.novelty(lists, information),
            }
            rows += [dict(segment=segment, metric=m, value=v, steps=len(steps)) for m, v in beyond.items()]
    return rows


def target_distribution(policy: Any, steps: LoggedSteps) -> np.ndarray:
    """[S, K, C] the policy's position-wise distribution on the logged observations: its own when it
    reports one (a stochastic policy: the logging policy, random), else one-hot on its slates."""
    c = steps.obs["candidate_items"].shape[1]
    if isinstance(policy, Propensities):
        return batched(policy.position_probabilities, steps.obs)
    slates = batched(policy.act, steps.obs).reshape(len(steps), -1)
    return ope.one_hot(slates, c)


def ope_rows(target: np.ndarray, steps: LoggedSteps, q_model: LinUCBPolicy, n_users: int) -> list[dict[str, Any]]:
    """IPS, SNIPS, DM, DR of a target [S, K, C] in return units (x logged steps per user), with the
    one-step truth (K = 1: the expected reward of the target's choices under the true state; NaN for
    slates, whose expected reward the logs do not hold)."""
    k = steps.slate.shape[1]
    q_hat = np.broadcast_to(batched(q_model.scores, steps.obs)[:, None, :], target.shape)
    per_user = len(steps) / n_users
    if k == 1:
        one_step = float((target[:, 0] * steps.true_expected_reward).sum(axis=1).mean()) * per_user
    else:
        one_step = float("nan")
    estimates = ope.estimate_all(steps.slot_reward, steps.slate, steps.position_propensities, target, q_hat)
    return [
        dict(estimator=name, estimate=value * per_user, one_step=one_step, reason=reason)
        for name, (value, reason) in estimates.items()
    ]


def run_study(settings: OfflineSettings, progress: Callable[[str], None] = print) -> StudyResult:
    """Measure everything (see the module docstring); `progress` gets one line per stage."""
    config, logged = settings.config(), settings.logs_config()
    new_users = settings.logs_config({"users": {"past_interactions": 0}})
    train_logs = training_logs(settings)
    train_steps = logged_steps(train_logs, logged)
    progress(f"training logs: {len(train_steps):,} steps of {train_steps.n_episodes:,} episodes")
    agents = build_agents(settings, config, train_logs)
    q_model = reward_model(config, train_steps)
    catalog = RecVectorEnv(num_envs=1, scenario=config, seed=0).world.catalog
    clicks = np.bincount(train_logs["item"][train_logs["click"] > 0], minlength=catalog.n_items)
    information = rk.self_information(clicks)
    notes = {  # the oracles: they act on the true user state, which logs do not hold
        name: "no scores(obs): nothing to rank or to estimate offline (a policy that scores no candidates may "
        "read the true user state, as the oracles do, which logs do not hold)"
        for name, policy in agents.items()
        if not isinstance(policy, Scorer)
    }
    online, ranking, estimates = [], [], []
    for seed in settings.seeds:
        steps = held_out(settings, logged, seed)
        fresh = held_out(settings, new_users, seed)
        merged_cold = [
            rk.cold_start(
                s.obs["history_features"], s.obs["history_mask"], s.session, s.new_user, settings.cold_interactions
            )
            for s in (steps, fresh)
        ]
        data = {
            "all": steps,
            "cold": LoggedSteps.concat([steps.select(merged_cold[0]), fresh.select(merged_cold[1])]),
            "warm": LoggedSteps.concat([steps.select(~merged_cold[0]), fresh.select(~merged_cold[1])]),
        }
        progress(f"seed {seed}: {len(steps):,} held-out steps, {len(data['cold']):,} cold-start steps")
        targets = {LOGGING: EpsilonPopularity(settings.epsilon, seed), **agents}
        for name, policy in targets.items():
            if name != LOGGING and isinstance(policy, Scorer):
                rows = ranking_rows(name, policy, data, settings, catalog.topics, information)
                ranking += [dict(agent=name, seed=seed, **row) for row in rows]
            if name not in notes:  # acts on observations alone: an OPE target
                bind(policy, RecVectorEnv(num_envs=1, scenario=config, seed=0))
                for row in ope_rows(target_distribution(policy, steps), steps, q_model, settings.eval_users):
                    estimates.append(dict(agent=name, seed=seed, **row))
            truth_policy = EpsilonPopularity(settings.epsilon, seed) if name == LOGGING else policy
            metrics = evaluate(truth_policy, config, settings.eval_users, EVAL_SEED + seed).metrics
            online.append(
                dict(
                    agent=name, seed=seed, return_mean=metrics["return_mean"], session_length=metrics["session_length"]
                )
            )
        progress(f"seed {seed}: measured {len(targets)} policies")
    online_frame = pd.DataFrame(online)
    ope_frame = pd.DataFrame(estimates)
    if len(ope_frame):
        truth = online_frame.set_index(["agent", "seed"]).return_mean
        ope_frame["truth"] = [truth[(a, s)] for a, s in zip(ope_frame.agent, ope_frame.seed)]
    return StudyResult(online=online_frame, ranking=pd.DataFrame(ranking), ope=ope_frame, notes=notes)


# ----------------------------------------------------------------------------- tables
ESTIMATOR_LABELS = {"ips": "IPS", "snips": "SNIPS", "dm": "DM", "dr": "DR"}


def agent_table(result: StudyResult) -> pd.DataFrame:
    """Per agent (rows, by true return): the true return with its 95% t interval over seeds, the
    ranking metrics on the scenario's users ("all"), NDCG at the largest cutoff on cold and warm
    steps, and the OPE return estimates (means over seeds)."""
    table = {}
    for agent, g in result.online.groupby("agent", sort=False):
        lo, hi = mean_interval(g.return_mean.to_numpy())
        table[agent] = {"true return": g.return_mean.mean(), "ci low": lo, "ci high": hi}
    if len(result.ranking):
        r = result.ranking
        means = r[r.segment == "all"].groupby(["agent", "metric"], sort=False).value.mean().unstack()
        for agent, row in means.iterrows():
            table[agent].update(row.to_dict())
        ndcg = [m for m in r.metric.unique() if m.startswith("ndcg@")][-1:]
        for segment in ("cold", "warm"):
            seg = r[(r.segment == segment) & r.metric.isin(ndcg)].groupby("agent").value.mean()
            for agent, value in seg.items():
                table[agent][f"{ndcg[0]} {segment}"] = value
    if len(result.ope):
        est = result.ope.groupby(["agent", "estimator"], sort=False).estimate.mean().unstack()
        for agent, row in est.iterrows():
            table[agent].update({f"{ESTIMATOR_LABELS[e]} return": v for e, v in row.items()})
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "agent"
    return frame.sort_values("true return", ascending=False)


def offline_measures(table: pd.DataFrame) -> list[str]:
    """The columns of an agent table that are offline numbers (everything but the truth)."""
    return [c for c in table.columns if c not in ("true return", "ci low", "ci high")]


def kendall_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per offline measure: Kendall's tau (scipy.stats.kendalltau, tau-b) between the agents' order by
    it and by their true return, its p-value, and the agents compared (those with a finite value;
    the logging policy is a reference, not one of them). NaN with fewer than 3 agents."""
    rows = {}
    agents = table.drop(index=LOGGING, errors="ignore")
    for measure in offline_measures(agents):
        have = agents[measure].notna()
        n = int(have.sum())
        if n >= 3:
            tau, p = sps.kendalltau(agents.loc[have, measure], agents.loc[have, "true return"])
        else:
            tau, p = float("nan"), float("nan")
        rows[measure] = {"kendall tau": float(tau), "p-value": float(p), "agents": n}
    frame = pd.DataFrame.from_dict(rows, orient="index").astype({"agents": int})
    frame.index.name = "offline measure"
    return frame


def ope_error_table(result: StudyResult) -> pd.DataFrame:
    """Per (agent, estimator): mean estimate and truth over seeds (return units), bias and RMSE
    against the online truth, bias against the one-step truth (the estimator's own error), and
    the one-step truth's gap to the online truth (what a one-step estimate cannot see); the reason
    where the estimate is NaN."""
    rows = []
    for (agent, estimator), g in result.ope.groupby(["agent", "estimator"], sort=False):
        error = g.estimate - g.truth
        reasons = [r for r in g.reason if r]
        rows.append(
            {
                "agent": agent,
                "estimator": ESTIMATOR_LABELS[estimator],
                "estimate": g.estimate.mean(),
                "truth": g.truth.mean(),
                "bias": error.mean(),
                "rmse": float(np.sqrt((error**2).mean())),
                "bias vs one-step truth": (g.estimate - g.one_step).mean(),
                "one-step truth - truth": (g.one_step - g.truth).mean(),
                "why NaN": reasons[0] if reasons else "",
            }
        )
    return pd.DataFrame(rows).set_index(["agent", "estimator"]) if rows else pd.DataFrame()


def estimator_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """Per estimator, over the agents it could estimate (the logging policy left out): mean absolute
    bias and root mean squared error against the online truth, and mean absolute bias against the
    one-step truth."""
    e = errors.drop(index=LOGGING, level="agent", errors="ignore").reset_index()
    frame = e.groupby("estimator", sort=False).agg(
        agents=("bias", lambda b: int(b.notna().sum())),
        mean_abs_bias=("bias", lambda b: b.abs().mean()),
        rmse=("rmse", lambda r: float(np.sqrt((r**2).mean()))),
        mean_abs_bias_one_step=("bias vs one-step truth", lambda b: b.abs().mean()),
    )
    return frame


# ----------------------------------------------------------------------------- report
def plot(table: pd.DataFrame, errors: pd.DataFrame, taus: pd.DataFrame, out: Path) -> list[Path]:
    """offline_vs_online.png (each accuracy metric at the largest cutoff, and MRR, against the true
    return), ope_vs_truth.png (estimated against true return) and kendall_tau.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    agents = table.drop(index=LOGGING, errors="ignore")
    overall = [m for m in offline_measures(agents) if " " not in m]  # not the cold / warm or OPE columns
    metrics = [m for m in overall if m.split("@")[0] in rk.ACCURACY or m == "mrr"]
    largest = {m.split("@")[0]: m for m in metrics}  # the largest cutoff of each metric (cutoffs ascend)
    if largest:
        fig, axes = plt.subplots(1, len(largest), figsize=(4 * len(largest), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], largest.values()):
            have = agents[metric].notna()
            ax.scatter(agents.loc[have, metric], agents.loc[have, "true return"])
            for agent, row in agents[have].iterrows():
                ax.annotate(agent, (row[metric], row["true return"]), fontsize=7)
            ax.set_xlabel(f"{metric} (held-out logs)")
            ax.set_ylabel("true return (min / episode)")
            ax.set_title(f"tau = {taus.loc[metric, 'kendall tau']:.2f}", fontsize=9)
        fig.tight_layout()
        paths.append(out / "offline_vs_online.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if len(errors):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        e = errors.reset_index()
        for estimator, g in e.groupby("estimator", sort=False):
            ax.scatter(g.truth, g.estimate, label=estimator, alpha=0.8)
        lims = [np.nanmin([e.truth.min(), e.estimate.min()]), np.nanmax([e.truth.max(), e.estimate.max()])]
        ax.plot(lims, lims, color="grey", lw=1, ls="--")
        ax.set_xlabel("true return (harness, same users)")
        ax.set_ylabel("off-policy estimate (return units)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "ope_vs_truth.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    finite = taus[taus["kendall tau"].notna()]
    if len(finite):
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(finite) + 1.2))
        ax.barh(finite.index[::-1], finite["kendall tau"][::-1])
        ax.axvline(0, color="grey", lw=1)
        ax.set_xlim(-1, 1)
        ax.set_xlabel("Kendall's tau with the true ranking")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        paths.append(out / "kendall_tau.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(settings: OfflineSettings, result: StudyResult, out: Path, command: str, seconds: float) -> Path:
    """report.md, agents.csv, kendall.csv, ope_errors.csv, the raw online/ranking/ope CSVs and the plots
    into `out`: all of them or none (a failure on the way leaves `out` as it was)."""
    with staged(out) as stage:
        _write_report(settings, result, stage, command, seconds)
    return out / "report.md"


def _write_report(settings: OfflineSettings, result: StudyResult, out: Path, command: str, seconds: float) -> Path:
    table = agent_table(result)
    taus = kendall_table(table)
    errors = ope_error_table(result)
    summary = estimator_summary(errors) if len(errors) else pd.DataFrame()
    for name, frame in dict(online=result.online, ranking=result.ranking, ope=result.ope).items():
        frame.to_csv(out / f"{name}.csv", index=False)
    table.to_csv(out / "agents.csv")
    taus.to_csv(out / "kendall.csv")
    errors.to_csv(out / "ope_errors.csv")
    plots = plot(table, errors, taus, out)
    fitted = {k: get_agent(k).make_params(settings.algo.get(k, {})) for k in settings.agents}  # fitted by epochs:
    fitted = {k: p for k, p in fitted.items() if all(hasattr(p, f) for f in ("epochs", "batch_size", "lr"))}
    budget = "; ".join(f"{k}: {p.epochs} epochs, batch {p.batch_size}, lr {p.lr}" for k, p in fitted.items())
    logs_from = settings.logs_config().name
    cutoff = "" if logs_from == settings.label else f", logs from `{logs_from}` (before the drift)"
    main_cols = ["true return"] + [c for c in table.columns if c.startswith(("ndcg@", "hit_rate@", "mrr", "IPS", "DR"))]
    lines = [
        f"# Offline evaluation against the truth: `{settings.label}`{cutoff}",
        "",
        f"`{repo_relative(command)}` ({seconds / 60:.1f} min on this machine)",
        "",
        f"Training logs: epsilon-popularity (epsilon {settings.epsilon}) on {settings.log_users} x "
        f"{settings.log_steps} steps (seed {LOG_SEED_OFFSET + settings.train_seed}); "
        f"{budget or 'no supervised agents'}. "
        f"Held-out logs and the truth: seeds {', '.join(str(EVAL_SEED + s) for s in settings.seeds)} x "
        f"{settings.eval_users} users (one episode each, the users the harness shows every agent). "
        "True return: minutes watched per episode, mean over seeds [95% t interval]. Ranking metrics: "
        "relevant = the logged candidate clicked and watched; cold-start = the steps of users in their first "
        f"session (new users, no past visits) or with fewer than {settings.cold_interactions} interactions "
        "in their history. OPE estimates: per logged step, times the logged steps per user.",
        "",
        "## Offline numbers next to the true return",
        "",
        frame_markdown(table[[c for c in main_cols if c in table.columns]], ".3f"),
        "",
    ]
    if result.notes:
        lines += ["Not measured offline: " + "; ".join(f"`{a}`: {why}" for a, why in result.notes.items()) + ".", ""]
    lines += [
        f"`{LOGGING}` is the logging policy as a target: its IPS estimate must equal its truth (a check of the "
        "propensities and of the return units). Every column: `agents.csv`.",
        "",
        "## Does the offline order match the true order?",
        "",
        frame_markdown(taus.astype({"agents": str}), ".3f"),  # counts as counts, not floats
        "",
        "## Off-policy estimates against the truth",
        "",
    ]
    if len(summary):
        lines += [frame_markdown(summary.astype({"agents": str}), ".2f"), "", frame_markdown(errors, ".2f"), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
