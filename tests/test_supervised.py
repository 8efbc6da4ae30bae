"""Supervised baselines (agents.supervised, agents.training_examples, agents.sequence_models,
agents.deployment): examples from logs, training, serving, retraining, dated deployment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.deployment import serving_versions
from agents.logs import EpsilonPopularity, collect_logs, log_columns
from agents.policy import Policy, RandomPolicy
from agents.supervised import SupervisedParams, SupervisedRecommender
from agents.training_examples import ExampleChain, Examples, ReplayBuffer, examples_from_logs
from envs import RecVectorEnv, make_scenario
from experiments.core.harness import evaluate

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 30}}
MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}
KINDS = ("sasrec", "gru4rec")


def config(slate_size: int = 1):
    return make_scenario("cognitive", {**TINY, "env": {**TINY["env"], "slate_size": slate_size}})


LIFE = {
    "catalog": {"n_items": 150},
    "env": {"num_candidates": 8, "history_len": 12, "max_steps": 400},
    "lifetime": {"horizon_days": 4.0},
    "users": {"past_interactions": 3},
}


def make_rec(kind: str, slate_size: int = 1, **kwargs) -> SupervisedRecommender:
    """A recommender on the tiny env; SupervisedParams fields go to its params (epochs 2 unless given)."""
    env = RecVectorEnv(num_envs=1, scenario=config(slate_size), seed=0)
    fields = set(SupervisedParams.__dataclass_fields__)
    params = SupervisedParams(**{"epochs": 2, "batch_size": 256, **{k: v for k, v in kwargs.items() if k in fields}})
    rest = {k: v for k, v in kwargs.items() if k not in fields}
    return SupervisedRecommender.from_env(kind, env, params, **{"model": MODEL, **rest})


@pytest.fixture(scope="module")
def logs():
    return {k: collect_logs(config(k), EpsilonPopularity(seed=0), n_users=32, n_steps=60) for k in (1, 2)}


class Recorder:
    """Wraps a logging policy; records each observation under (log user id, world step).

    User ids follow collect_logs: slots start as users 0..N-1, and a slot whose step
    count goes back (an autoreset) gets the next id, in slot order.
    """

    name = "recorder"

    def __init__(self, policy) -> None:
        self.policy, self.seen = policy, {}

    def bind(self, env) -> None:
        self.env = env
        self.policy.bind(env)
        self.user, self.prev_step, self.next_user = np.arange(env.num_envs), None, env.num_envs

    def act(self, obs):
        step = self.env.world.state.episode_step.copy()  # the session step in session worlds
        if self.prev_step is not None:
            for slot in np.flatnonzero(step < self.prev_step):
                self.user[slot], self.next_user = self.next_user, self.next_user + 1
        self.prev_step = step
        for slot in range(len(step)):
            self.seen[(int(self.user[slot]), int(step[slot]))] = {k: v[slot] for k, v in obs.items()}
        return self.policy.act(obs)


def assert_examples_match(logs, ex, recorder) -> int:
    """Every served row's example holds the observation the env showed at that step (bit for bit);
    returns how many rows were checked (rows of the past a user arrived with aside)."""
    checked = 0
    for i, (user, step) in enumerate(zip(logs.user.to_numpy(), logs.step.to_numpy())):
        if step < 0:
            continue
        obs = recorder.seen[(int(user), int(step))]
        for key in ("history_items", "history_features", "history_mask", "context"):
            np.testing.assert_array_equal(ex[key][i], obs[key], err_msg=f"{key} of row {i}")
        assert ex["target_item"][i] in obs["candidate_items"]
        checked += 1
    return checked


@pytest.mark.parametrize("slate_size", [1, 2])
def test_examples_match_env_observations(slate_size):
    cfg = config(slate_size)
    recorder = Recorder(EpsilonPopularity(seed=0))
    logs = collect_logs(cfg, recorder, n_users=8, n_steps=70)
    assert logs.user.nunique() > 8 and logs.groupby("user").step.max().max() > 8  # resets, long histories
    assert logs.click.sum() > 0
    ex = examples_from_logs(logs, history_len=8, length_mean=cfg.world.catalog.length_mean)
    m = len(logs)
    assert ex["history_items"].shape == (m, 8) and ex["history_features"].shape == (m, 8, 5)
    assert ex["history_mask"].shape == (m, 8) and ex["context"].shape == (m, 3)
    for key in ("target_item", "target_position", "click", "watch_time"):
        assert ex[key].shape == (m,)
    np.testing.assert_array_equal(ex["target_item"], logs.item)
    np.testing.assert_array_equal(ex["click"], logs.click)
    assert (logs.step < 0).any()  # the interactions users arrived with are logged before step 0
    assert assert_examples_match(logs, ex, recorder) > 0


def test_examples_ignore_row_order(logs):
    shuffled = logs[1].sample(frac=1.0, random_state=0)
    a = examples_from_logs(logs[1], 8, 4.0)
    b = examples_from_logs(shuffled, 8, 4.0)
    index = shuffled.index.to_numpy()
    for key in a:
        np.testing.assert_array_equal(a[key][index], b[key])


@pytest.mark.parametrize("slate_size", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_fit_and_act(logs, kind, slate_size):
    rec = make_rec(kind, slate_size, epochs=3)
    assert isinstance(rec, Policy) and rec.name == kind
    losses = rec.fit(logs[slate_size])
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    env = RecVectorEnv(num_envs=6, scenario=config(slate_size), seed=3)
    rec.bind(env)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        scores = rec.scores(obs)
        assert scores.shape == (6, 8) and np.all(np.isfinite(scores)) and np.all(scores >= 0)
        actions = rec.act(obs)
        assert actions.shape == ((6,) if slate_size == 1 else (6, slate_size))
        assert actions.dtype.kind in "iu" and actions.min() >= 0 and actions.max() < 8
        if slate_size > 1:
            assert all(len(set(row)) == slate_size for row in actions.tolist())
        obs, *_ = env.step(actions)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_scores(logs, kind):
    env = RecVectorEnv(num_envs=5, scenario=config(), seed=2)
    obs, _ = env.reset(seed=2)
    a, b, c = (make_rec(kind, seed=s, epochs=1) for s in (0, 0, 1))
    for rec in (a, b, c):
        rec.fit(logs[1])
    np.testing.assert_array_equal(a.scores(obs), b.scores(obs))
    assert not np.array_equal(a.scores(obs), c.scores(obs))
    a.fit(logs[1])  # refitting starts over from the seed
    np.testing.assert_array_equal(a.scores(obs), b.scores(obs))


def test_bad_logs_are_value_errors(logs):
    rec = make_rec("sasrec", epochs=1)
    with pytest.raises(ValueError, match="empty"):
        rec.fit(logs[1].iloc[:0])
    with pytest.raises(ValueError, match="missing columns"):
        rec.fit(logs[1].drop(columns=["watch_time"]))
    bad = logs[1].copy()
    bad.loc[bad.index[3], "item"] = 100
    with pytest.raises(ValueError, match="catalog has 100 items"):
        rec.fit(bad)
    assert list(logs[1].columns) == log_columns(lifetime=False)  # fit left the caller's logs alone


@pytest.mark.parametrize(
    "field, value",
    [
        ("kind", "bert4rec"),
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("retrain_every", -1),
        ("seed", 1.5),
        ("model", {"depth": 2}),
        ("length_mean", -1.0),
    ],
)
def test_bad_construction_names_the_field(field, value):
    kwargs = {"kind": "sasrec", field: value}
    with pytest.raises(ValueError, match=field if field != "model" else "depth"):
        make_rec(**kwargs)


def test_item_features_shape_checked():
    env = RecVectorEnv(num_envs=1, scenario=config(), seed=0)
    core = env.core
    with pytest.raises(ValueError, match="item_features"):
        SupervisedRecommender("sasrec", core.single_observation_space, core.item_features[:50], core.n_items)


def test_bind_checks_length_mean():
    rec = make_rec("sasrec")
    other = make_scenario("cognitive", {**TINY, "catalog": {"n_items": 100, "length_mean": 6.0}})
    with pytest.raises(ValueError, match="length_mean"):
        rec.bind(RecVectorEnv(num_envs=1, scenario=other, seed=0))


@pytest.mark.parametrize("slate_size", [1, 2])
def test_retraining_refits_during_evaluation(logs, slate_size):
    rec = make_rec("sasrec", slate_size, epochs=1, retrain_every=5)
    assert rec.name == "sasrec-retrain"
    rec.fit(logs[slate_size])
    before = {k: v.clone() for k, v in rec.net.state_dict().items()}
    evaluation = evaluate(rec, config(slate_size), n_users=16, seed=5)
    steps = int(evaluation.episodes.session_length.max())
    assert rec.n_observed == steps and rec.n_refits == steps // 5 >= 2
    assert len(rec.refit_losses) == rec.n_refits
    after = rec.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    fresh = rec._fresh  # served impressions: K per live slot and step, clicks match the episodes
    assert len(fresh) == slate_size * fresh.n_steps and 0 < fresh.n_steps <= 16 * steps
    assert float(fresh.rows(slice(None))["click"].sum()) >= evaluation.episodes.clicks.sum()


def _adam_steps(rec) -> int:
    return max(int(state["step"]) for state in rec.learner.optimizer.state.values())


def test_a_refit_is_refit_batches_minibatches_or_a_whole_epoch(logs):
    rec = make_rec("sasrec", epochs=1, retrain_every=4, refit_batches=3, batch_size=64)
    rec.fit(logs[1])
    fitted = _adam_steps(rec)
    evaluate(rec, config(), n_users=16, seed=5)
    assert rec.n_refits >= 2 and _adam_steps(rec) == fitted + 3 * rec.n_refits
    epoch = make_rec("sasrec", epochs=1, retrain_every=8, refit_batches=0, batch_size=64)  # fewer, whole-epoch refits
    epoch.fit(logs[1])
    evaluate(epoch, config(), n_users=16, seed=5)
    assert _adam_steps(epoch) - fitted >= epoch.n_refits * (fitted - 1)  # an epoch per refit


def test_with_retraining_copies_a_fitted_model(logs):
    rec = make_rec("sasrec", epochs=1)
    rec.fit(logs[1])
    before = {k: v.clone() for k, v in rec.net.state_dict().items()}
    retraining = rec.with_retraining(4)
    assert retraining.name == "sasrec-retrain" and rec.name == "sasrec"
    evaluate(retraining, config(), n_users=16, seed=5)
    assert retraining.n_refits >= 2 and rec.n_refits == 0
    assert all(torch.equal(before[k], v) for k, v in rec.net.state_dict().items())  # the original is untouched
    with pytest.raises(ValueError, match="retrain_every"):
        rec.with_retraining(0)


def test_no_retraining_by_default(logs):
    rec = make_rec("gru4rec", epochs=1)
    rec.fit(logs[1])
    before = {k: v.clone() for k, v in rec.net.state_dict().items()}
    evaluate(rec, config(), n_users=8, seed=5)
    assert rec.n_refits == 0
    assert all(torch.equal(before[k], v) for k, v in rec.net.state_dict().items())


def test_sasrec_beats_random():
    """A learning check: trained on epsilon-popularity logs, greedy sasrec beats random play."""
    cfg = config()
    logs = collect_logs(cfg, EpsilonPopularity(seed=0), n_users=64, n_steps=200)
    rec = make_rec("sasrec", epochs=3)
    rec.fit(logs)
    ours = evaluate(rec, cfg, n_users=64).metrics
    random = evaluate(RandomPolicy(seed=0), cfg, n_users=64).metrics
    assert ours["return_mean"] - ours["return_ci95"] > random["return_mean"] + random["return_ci95"], (ours, random)


def test_lifetime_examples_match_the_lifetime_env_bit_for_bit():
    """Logs of a lifetime scenario rebuild the env's histories: days ago, session starts, the
    7-column context, across sessions and return visits."""
    cfg = make_scenario("lifetime", LIFE)
    recorder = Recorder(EpsilonPopularity(seed=0))
    logs = collect_logs(cfg, recorder, n_users=6, n_steps=150)
    assert logs.session_start.sum() > logs.user.nunique()  # return visits were logged
    ex = examples_from_logs(logs, history_len=12, length_mean=cfg.world.catalog.length_mean, lifetime=True)
    assert ex["history_features"].shape[-1] == 7 and ex["context"].shape[-1] == 7
    assert assert_examples_match(logs, ex, recorder) > 300


def test_a_lifetime_model_refuses_session_logs():
    life_env = RecVectorEnv(num_envs=1, scenario=make_scenario("lifetime", LIFE), seed=0)
    rec = SupervisedRecommender.from_env("sasrec", life_env, SupervisedParams(epochs=1), model=MODEL)
    session_logs = collect_logs(config(), EpsilonPopularity(seed=0), n_users=4, n_steps=10)
    with pytest.raises(ValueError, match="missing columns .*'day'.*session scenario"):
        rec.fit(session_logs)


def test_sasrec_learns_on_lifetimes():
    cfg = make_scenario("lifetime", LIFE)
    env = RecVectorEnv(num_envs=1, scenario=cfg, seed=0)
    params = SupervisedParams(epochs=3, batch_size=256, train_days=0)  # served from day 0, as the logs' lives
    rec = SupervisedRecommender.from_env("sasrec", env, params, model=MODEL)
    losses = rec.fit(collect_logs(cfg, EpsilonPopularity(seed=0), n_users=32, n_steps=200))
    assert losses[-1] < losses[0]
    learned = evaluate(rec, cfg, 64, seed=5).metrics["return_mean"]
    blind = evaluate(RandomPolicy(0), cfg, 64, seed=5).metrics["return_mean"]
    assert learned > blind


# --------------------------------------------------------------------------- deployed on a calendar

DEPLOY = {"log_users": 32, "epochs": 1, "batch_size": 128, "refit_batches": 4, "train_days": 1.0}


def deployed(retrain_every_days: float, **algo):
    """sasrec as run.py builds it on the tiny lifetime world (horizon 4 days): trained on the logs of
    days [0, 1), served from day 1, refitted every `retrain_every_days` days."""
    from agents.factory import build_sasrec
    from agents.registry import RunContext

    params = SupervisedParams(**{**DEPLOY, "retrain_every_days": retrain_every_days, **algo})
    return build_sasrec(make_scenario("lifetime", LIFE), params, RunContext(seed=0, model=MODEL))


class TrainingSpy:
    """Records, for every refit, the latest day among the steps it trained on (from their context's
    progress = day / horizon: the data itself, not the refit's own record)."""

    def __init__(self, rec: SupervisedRecommender) -> None:
        self.latest: list[float] = []
        train_on = rec.learner.train_on

        def spy(data, batches):
            rows = np.unique(np.concatenate(batches))
            self.latest.append(float(data.rows(rows)["context"][:, 2].max()) * rec.horizon_days)
            return train_on(data, batches)

        rec.learner.train_on = spy


def test_logs_of_the_first_days_stop_at_that_day():
    cfg = make_scenario("lifetime", LIFE)
    logs = collect_logs(cfg, EpsilonPopularity(seed=0), n_users=16, n_steps=400, until_day=1.0)
    served = logs[logs.step >= 0]
    assert served.day.max() < 1.0 and len(served) > 100
    whole = collect_logs(cfg, EpsilonPopularity(seed=0), n_users=16, n_steps=400)
    assert (whole.day >= 1.0).any()  # the same collection, not cut, goes past it
    with pytest.raises(ValueError, match="until_day is for lifetime scenarios"):
        collect_logs(config(), EpsilonPopularity(seed=0), n_users=4, n_steps=5, until_day=1.0)


class Deployment:
    """Wraps a deployed recommender in an evaluation and checks it from outside, step by step:
    records (the user's true day from the env, the cutoff of the version that served them) for every
    step the model served, the versions available then (fitted at or before that step), and after
    every step that no kept version could be dropped and no needed one was."""

    def __init__(self, rec: SupervisedRecommender) -> None:
        self.rec, self.name, self.warmup, self.serves_from_day = rec, rec.name, rec.warmup, rec.serves_from_day
        self.days: list[np.ndarray] = []
        self.cutoffs: list[np.ndarray] = []
        self.newest: list[np.ndarray] = []  # the newest version fitted by then with cutoff <= the day
        self.pruned = False
        self.step = 0

    def bind(self, env) -> None:
        self.env = env
        self.rec.bind(env)

    def act(self, obs):
        actions = self.rec.act(obs)
        self.day_now = self.env.world.state.day.copy()  # the truth, not the recommender's clocks
        self.served_cutoff = self.rec.deployment.serving[1].copy()
        return actions

    def observe(self, obs, actions, rewards, info) -> None:
        own = info["evaluated"]
        if own.any():
            day = self.day_now[own]
            fitted = np.array([r["cutoff"] for r in self.rec.versions if r["at_step"] <= self.step])
            self.days.append(day)
            self.cutoffs.append(self.served_cutoff[own])
            self.newest.append(fitted[np.searchsorted(fitted, day, side="right") - 1])
        self.rec.observe(obs, actions, rewards, info)
        self.step += 1
        kept, live = [v.cutoff for v in self.rec.deployment.kept], self.rec.deployment.live
        assert kept[-1] == self.rec.versions[-1]["cutoff"]  # the newest is always kept
        if live.any() and len(kept) > 1:  # the oldest kept is still needed by the slowest live user
            assert kept[1] > self.rec.deployment.clock[live].min()
        self.pruned |= len(kept) < len(self.rec.versions)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user day, cutoff of the version that served them, newest version they could have had) [S]."""
        return np.concatenate(self.days), np.concatenate(self.cutoffs), np.concatenate(self.newest)


def test_each_version_trains_on_rows_dated_before_its_cutoff():
    rec = deployed(1.0)
    assert rec.name == "sasrec-retrain-1d" and rec.serves_from_day == 1.0
    spy = TrainingSpy(rec)
    ev = evaluate(rec, make_scenario("lifetime", LIFE), n_users=32, seed=5)
    # Versions for days 2, 3, ... (as far as the fastest live user gets before the 4-day horizon):
    # each once the fastest live user reached it, on data from before it.
    cutoffs = [r["cutoff"] for r in rec.refits]
    assert rec.n_refits == len(rec.refits) == len(spy.latest) >= 2
    assert rec.versions[0]["cutoff"] == 1.0 and rec.versions[0]["fresh_steps"] == 0
    np.testing.assert_allclose(cutoffs, 1.0 + np.arange(1, len(cutoffs) + 1))
    for record, latest in zip(rec.refits, spy.latest):
        assert latest < record["cutoff"] + 1e-4, (record, latest)  # the data trained on (float32 progress)
        assert not record["fresh_max_day"] >= record["cutoff"]  # the served rows: all before it (or none)
        assert record["cutoff"] <= record["fastest_day"] and 0 < record["past_cutoff"] <= 1
    assert max(r["fresh_steps"] for r in rec.refits) > 0  # it did learn from its own serving
    stats = rec.serving_stats()
    assert stats["refits"] == rec.n_refits and stats["refit_seconds"] > 0 and 0 <= stats["serving_lag_days"] < 1
    assert sum(r["served_steps"] for r in rec.versions) > 0
    assert 0 < ev.metrics["return_served_mean"] < ev.metrics["return_mean"] and ev.metrics["served_users"] > 0


def test_with_retraining_in_days_is_the_deployment_built_with_that_cadence():
    """The stress test fits once and copies: the copy refitting every day serves exactly as the
    recommender built to refit every day (same seed, same logs), and the original stays put."""
    cfg = make_scenario("lifetime", LIFE)
    plain = deployed(0.0)
    copy_ = plain.with_retraining(days=1.0)
    assert copy_.name == "sasrec-retrain-1d" and plain.name == "sasrec"
    built = deployed(1.0)
    a, b = evaluate(copy_, cfg, n_users=16, seed=5), evaluate(built, cfg, n_users=16, seed=5)
    assert copy_.n_refits == built.n_refits >= 1 and plain.n_refits == 0
    assert a.metrics["return_mean"] == b.metrics["return_mean"]
    with pytest.raises(ValueError, match="one cadence"):
        plain.with_retraining(3, days=1.0)


def test_a_user_is_served_the_newest_version_from_before_their_day_and_never_one_after_it():
    rec = deployed(0.25)
    watch = Deployment(rec)
    evaluate(watch, make_scenario("lifetime", LIFE), n_users=32, seed=5)
    day, cutoff, newest = watch.pairs()
    assert len(day) > 50 and len(np.unique(cutoff)) >= 3  # several versions served
    assert (cutoff <= day).all()  # causal: no version from a user's future
    np.testing.assert_array_equal(cutoff, newest)  # and the newest one that is not
    assert watch.pruned  # versions the slowest live user had passed were dropped
    assert rec.serving_stats()["serving_lag_days"] == pytest.approx(float((day - cutoff).mean()), abs=1e-4)


def test_serving_versions_picks_the_newest_cutoff_at_or_before_each_day():
    got = serving_versions(np.array([1.0, 1.5, 2.0]), np.array([0.5, 1.0, 1.49, 1.5, 7.0]))
    np.testing.assert_array_equal(got, [-1, 0, 0, 1, 2])


def test_a_faster_cadence_fits_more_versions_and_serves_fresher_ones():
    # The tiny world lives 4 days: cadences of 1 and 1/4 day stand for the preset's 7 and 1.
    cfg = make_scenario("lifetime", LIFE)
    stats = {}
    for days in (0.0, 1.0, 0.25):
        rec = deployed(days)
        evaluate(rec, cfg, n_users=32, seed=5)
        stats[days] = rec.serving_stats()
        assert stats[days]["refits"] == len(rec.refits) == len(rec.versions) - 1
        assert days == 0 or stats[days]["serving_lag_days"] < days  # a user is never a whole cadence behind
    assert stats[0.0]["refits"] == 0 and stats[0.0]["versions_kept_max"] == 1
    assert stats[0.25]["refits"] > stats[1.0]["refits"] > 0
    lags = [stats[d]["serving_lag_days"] for d in (0.25, 1.0, 0.0)]
    assert lags == sorted(lags) and lags[0] < lags[1] < lags[2]


def test_never_refits_and_the_warm_up_is_the_logging_policys_for_every_cadence():
    cfg = make_scenario("lifetime", LIFE)
    never, weekly = deployed(0.0), deployed(0.5)
    assert never.name == "sasrec" and isinstance(never.warmup, EpsilonPopularity)
    a, b = evaluate(never, cfg, n_users=32, seed=5).metrics, evaluate(weekly, cfg, n_users=32, seed=5).metrics
    assert never.n_refits == 0 and never.refits == [] and not never._fresh and len(never.versions) == 1
    assert weekly.n_refits > 0 and isinstance(weekly.warmup, EpsilonPopularity)
    # Before day 1 both users' lives are the logging policy's: the same minutes, up to the shared world
    # (popularity follows what everyone watches, and the users ahead are served other versions).
    warm_up = a["return_mean"] - a["return_served_mean"]
    assert warm_up > 0 and warm_up == pytest.approx(b["return_mean"] - b["return_served_mean"], rel=1e-3)


def test_a_deployed_model_gives_the_same_numbers_for_the_same_seed_and_each_evaluation_starts_afresh():
    cfg = make_scenario("lifetime", LIFE)
    untimed = lambda records: [{k: v for k, v in r.items() if k != "fit_seconds"} for r in records]  # noqa: E731
    runs = []
    for rec in (deployed(0.5), deployed(0.5)):
        runs.append((evaluate(rec, cfg, n_users=32, seed=5).metrics, untimed(rec.versions), list(rec.refit_losses)))
    again = evaluate(rec, cfg, n_users=32, seed=5).metrics  # the same deployment from version 0 once more
    np.testing.assert_equal(untimed(rec.versions), runs[1][1])  # NaN where a record has no value
    assert rec.refit_losses[len(runs[1][2]) :] == runs[1][2]
    np.testing.assert_equal(runs[0][1:], runs[1][1:])
    assert runs[0][0] == pytest.approx(runs[1][0], nan_ok=True) and again == pytest.approx(runs[1][0], nan_ok=True)


@pytest.mark.parametrize(
    "algo, match",
    [
        ({"retrain_every_days": -1}, r"algo.retrain_every_days must be in \[0, 3650\]"),
        ({"retrain_every_days": "7"}, "algo.retrain_every_days must be a number"),
        ({"train_days": -2}, r"algo.train_days must be in \[0, 3650\]"),
        ({"retrain_every": 5, "retrain_every_days": 7}, "two cadences: set one"),
    ],
)
def test_bad_cadences_in_days_name_the_field(algo, match):
    with pytest.raises(ValueError, match=match):
        SupervisedParams(**algo)


def test_days_are_refused_without_a_calendar_and_past_the_horizon():
    from experiments.core.settings import RunSettings

    with pytest.raises(ValueError, match="algo.retrain_every_days is for lifetime scenarios: 'mixed' has no calendar"):
        RunSettings(agent="sasrec", scenario="mixed", algo={"retrain_every_days": 7})
    with pytest.raises(ValueError, match="algo.train_days is for lifetime scenarios"):
        RunSettings(agent="gru4rec", scenario="cognitive", algo={"train_days": 10})
    with pytest.raises(ValueError, match=r"algo.train_days must be in \[0, 60\) \(lifetime.horizon_days\), got 60"):
        RunSettings(agent="sasrec", scenario="lifetime", algo={"train_days": 60})
    assert RunSettings(agent="sasrec", scenario="lifetime", algo={"retrain_every_days": 7}).name == "sasrec-retrain-7d"


def test_run_py_refuses_bad_days_in_one_line_before_any_work(cli, tmp_path, capsys):

    for argv, match in (
        (["--agent", "sasrec", "--scenario", "mixed", "--retrain-every-days", "7"], "has no calendar"),
        (["--agent", "sasrec", "--scenario", "lifetime", "--retrain-every-days", "-1"], "algo.retrain_every_days"),
        (["--agent", "bandit", "--scenario", "lifetime", "--retrain-every-days", "7"], "applies to --agent sasrec"),
    ):
        assert cli("run", [*argv, "--smoke", "--logdir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert not list(tmp_path.rglob("run.json"))  # nothing was started


def test_results_rows_with_different_columns_line_up(tmp_path):
    """A final row with a policy's serving stats, then a baseline row without them (and back)."""
    import pandas as pd

    from experiments.core.tracking import RunLogger

    logger = RunLogger(tmp_path)
    logger.evaluation({"return_mean": 1.0}, 0, tensorboard=False, agent="a", phase="train")
    logger.evaluation({"return_mean": 2.0, "refits": 3.0}, 5, tensorboard=False, agent="a", phase="final")
    logger.evaluation({"return_mean": 4.0, "churn_rate": 0.5}, 5, tensorboard=False, agent="r", phase="baseline")
    logger.close()
    rows = pd.read_csv(tmp_path / "results.csv")
    assert rows.return_mean.tolist() == [1.0, 2.0, 4.0]
    assert rows.refits.tolist()[1] == 3.0 and rows.refits.isna().tolist() == [True, False, True]
    assert rows.churn_rate.tolist()[2] == 0.5 and rows.churn_rate.isna().sum() == 2


def _served_chunk(first_step: int, n: int, k: int, history: int = 3) -> Examples:
    """n user-steps of k impressions each, every field numbered by its global step (and slot)."""
    steps = np.arange(first_step, first_step + n)
    rows = (steps[:, None] * 10 + np.arange(k)).ravel()
    return Examples(
        history_items=np.repeat(steps[:, None], history, axis=1).astype(np.int32),
        history_features=np.repeat(steps[:, None, None], 5, axis=2).repeat(history, axis=1).astype(np.float32),
        history_mask=np.ones((n, history), np.float32),
        context=np.repeat(steps[:, None], 3, axis=1).astype(np.float32),
        step_index=np.repeat(np.arange(n), k),
        target_item=rows,
        target_position=np.tile(np.arange(k), n),
        click=(rows % 2).astype(np.float32),
        watch_time=rows.astype(np.float32),
        day=steps / 10.0,
    )


@pytest.mark.parametrize("k", [1, 3])
def test_replay_buffer_holds_the_newest_steps_in_order_and_chains_with_the_logs(k):
    """The ring buffer keeps exactly the newest `capacity` served steps, oldest first, whatever the
    chunk sizes (one larger than the capacity among them), and a chain of logs + buffer reads the
    same rows as their concatenation would."""
    buffer = ReplayBuffer(capacity=7)
    assert len(buffer) == 0 and np.isnan(buffer.max_day())
    sizes, first = [2, 4, 3, 9, 1, 5], 0
    for n in sizes:
        buffer.push(_served_chunk(first, n, k))
        first += n
        held = np.arange(max(first - 7, 0), first)  # the newest steps so far
        assert buffer.n_steps == len(held) and len(buffer) == k * len(held)
        got = buffer.rows(slice(None))
        np.testing.assert_array_equal(got["target_item"], (held[:, None] * 10 + np.arange(k)).ravel())
        np.testing.assert_array_equal(got["history_items"][:, 0], np.repeat(held, k))
        assert buffer.max_day() == pytest.approx(held[-1] / 10.0)
    logs = _served_chunk(100, 4, k)
    chain = ExampleChain([logs, buffer])
    assert len(chain) == len(logs) + len(buffer) and chain.n_steps == 4 + 7
    rows = np.random.default_rng(0).permutation(len(chain))
    whole = {
        key: np.concatenate([logs.rows(slice(None))[key], buffer.rows(slice(None))[key]]) for key in logs.rows([0])
    }
    for key, value in chain.rows(rows).items():
        np.testing.assert_array_equal(value, whole[key][rows])


def test_the_ppo_warm_start_is_the_encoder_of_sasrec_fitted_on_the_same_logs():
    """agents.warm_start.pretrain_encoder (both PPO agents' warm start) fits no recommender, yet gives the
    encoder weights of the sasrec agent fitted on the same logs with the same seed, weight for weight."""
    from agents.logs import logged_data
    from agents.warm_start import WarmStartParams, pretrain_encoder

    params = WarmStartParams(log_users=16, log_steps=40, pretrain_epochs=1)
    state = pretrain_encoder(config(), params, MODEL, seed=2)
    rec = SupervisedRecommender.for_scenario(
        "sasrec", config(), SupervisedParams(epochs=1, log_users=16, log_steps=40), model=MODEL, seed=2
    )
    rec.fit(logged_data(config(), rec.params, 2, None))
    for key, value in rec.net.encoder.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    other = pretrain_encoder(config(), params, MODEL, seed=3)  # control: another seed, other weights
    assert any(not torch.equal(other[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="algo.pretrain_epochs"):
        WarmStartParams(pretrain_epochs=-1)
