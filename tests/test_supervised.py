"""Supervised baselines (agents.supervised): examples from logs, training, serving, retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.logs import EpsilonPopularity, collect_logs, log_columns
from agents.policy import Policy, RandomPolicy
from agents.supervised import SupervisedParams, SupervisedRecommender, examples_from_logs
from envs import RecVectorEnv, make_scenario
from experiments.harness import evaluate

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 30}}
MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}
KINDS = ("sasrec", "gru4rec")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: intra-op threads only add overhead, and thrash on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    assert sum(len(f) for f in fresh) == slate_size * sum(f.n_steps for f in fresh)
    assert sum(f.n_steps for f in fresh) <= 16 * steps
    assert sum(float(f.click.sum()) for f in fresh) >= evaluation.episodes.clicks.sum()


def _adam_steps(rec) -> int:
    return max(int(state["step"]) for state in rec.optimizer.state.values())


def test_a_refit_is_refit_batches_minibatches_or_a_whole_epoch(logs):
    rec = make_rec("sasrec", epochs=1, retrain_every=4, refit_batches=3, batch_size=64)
    rec.fit(logs[1])
    fitted = _adam_steps(rec)
    evaluate(rec, config(), n_users=16, seed=5)
    assert rec.n_refits >= 2 and _adam_steps(rec) == fitted + 3 * rec.n_refits
    epoch = make_rec("sasrec", epochs=1, retrain_every=4, refit_batches=0, batch_size=64)
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
    rec = SupervisedRecommender.from_env("sasrec", env, SupervisedParams(epochs=3, batch_size=256), model=MODEL)
    losses = rec.fit(collect_logs(cfg, EpsilonPopularity(seed=0), n_users=32, n_steps=200))
    assert losses[-1] < losses[0]
    learned = evaluate(rec, cfg, 64, seed=5).metrics["return_mean"]
    blind = evaluate(RandomPolicy(0), cfg, 64, seed=5).metrics["return_mean"]
    assert learned > blind
