"""Real data: loaders and their validation, the calibration's fits, the `movielens` preset, and the
next-item models on real sequences. Tests on the data itself use small slices and skip, with the
install command as the reason, when the data packages are absent."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from agents.nextitem import NextItemParams, pad_histories, prefix_examples, score_all, train_next_item
from envs import PRESETS, RecVectorEnv, make_scenario
from experiments.studies.benchmarks import realseq
from experiments.studies.calibration import fit as cal
from simulator import CatalogParams, World
from simulator import realdata as rd
from simulator.params import merge_overrides

NO_MOVIELENS = rd.unavailable_reason("recbole")
NO_OBD = rd.unavailable_reason("obp")
needs_movielens = pytest.mark.skipif(NO_MOVIELENS is not None, reason=str(NO_MOVIELENS))
needs_obd = pytest.mark.skipif(NO_OBD is not None, reason=str(NO_OBD))


@pytest.fixture(scope="module")
def ml_slice():
    if NO_MOVIELENS:
        pytest.skip(NO_MOVIELENS)
    return rd.load_movielens(max_users=40)


# --------------------------------------------------------------------------- loaders


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(rd.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(rd.RealDataUnavailable, match=r"pip install --no-deps \"recbole==1.2.1\""):
        rd.package_dir("recbole")
    assert "ignore-requires-python" in rd.unavailable_reason("obp")
    with pytest.raises(ValueError, match="unknown data package"):
        rd.package_dir("numpy")


def _write_movielens(root, inter: str, item: str | None):
    base = root.joinpath(*rd.MOVIELENS_DIR)
    base.mkdir(parents=True)
    (base / "ml-100k.inter").write_text(inter)
    if item is not None:
        (base / "ml-100k.item").write_text(item)


ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tA\t1995\tComedy Drama\n2\tB\t1990\tHorror\n"
)
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t1\t4\t100\n7\t2\t2\t50\n3\t2\t5\t10\n"


def test_movielens_loader_on_a_toy_copy(tmp_path):
    _write_movielens(tmp_path, INTER, ITEMS)
    ml = rd.load_movielens(root=tmp_path)
    assert (ml.n_users, ml.n_items) == (2, 2)
    assert ml.genres.shape == (2, len(rd.GENRES))
    assert ml.genres[0, rd.GENRES.index("Comedy")] and ml.genres[0, rd.GENRES.index("Drama")]
    assert ml.interactions["user"].tolist() == [1, 1, 0]  # raw ids 7, 7, 3 -> dense
    seqs = rd.sequences(ml.interactions)
    assert [s.tolist() for s in seqs] == [[1], [1, 0]]  # user 7: item 2 (t=50) before item 1 (t=100)


@pytest.mark.parametrize(
    "inter, item, message",
    [
        (INTER, None, "data file missing: .*ml-100k.item"),
        ("user_id:token\tfoo:token\n1\t2\n", ITEMS, "ml-100k.inter lacks columns"),
        (INTER.replace("\t4\t", "\t9\t"), ITEMS, r"ratings must be in \[1, 5\]"),
        (INTER.replace("7\t1\t4", "7\tx\t4"), ITEMS, "non-numeric"),
        (INTER.replace("7\t1\t4", "7\t99\t4"), ITEMS, "rates item 99"),
        ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n", ITEMS, "holds no rows"),
    ],
)
def test_movielens_loader_rejects_broken_files(tmp_path, inter, item, message):
    _write_movielens(tmp_path, inter, item)
    with pytest.raises(ValueError, match=message):
        rd.load_movielens(root=tmp_path)


def test_loader_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="max_users"):
        rd.load_movielens(max_users=0, root=tmp_path)
    with pytest.raises(ValueError, match="campaign"):
        rd.load_obd("men", root=tmp_path)
    with pytest.raises(ValueError, match="data file missing"):
        rd.load_obd("random", root=tmp_path)


@needs_movielens
def test_movielens_slice_shapes(ml_slice):
    d = ml_slice.interactions
    assert ml_slice.n_users == 40 and d["user"].max() == 39
    assert ml_slice.n_items == 1682 and ml_slice.genres.shape == (1682, 18)
    assert d["rating"].between(1, 5).all() and d["item"].max() < 1682
    seqs = rd.sequences(d)
    assert sum(len(s) for s in seqs) == len(d)
    times = d.sort_values(["user", "timestamp"], kind="stable").groupby("user")["timestamp"]
    assert all(np.all(np.diff(t.to_numpy()) >= 0) for _, t in times)


@needs_obd
def test_obd_random_campaign():
    obd = rd.load_obd("random")
    assert len(obd) == 10_000
    assert set(obd["position"]) == {0, 1, 2}
    assert np.allclose(obd["propensity"], 1 / 80)  # 80 items, uniformly at random
    assert 0 < obd["click"].mean() < 0.01


def test_leave_one_out_split():
    seqs = [np.array([5, 6, 7, 8]), np.array([1, 2]), np.array([3, 4, 9])]
    split = rd.leave_one_out(seqs)
    assert split.users.tolist() == [0, 2]  # fewer than 3 items: left out
    assert [s.tolist() for s in split.train] == [[5, 6], [3]]
    assert split.valid_target.tolist() == [7, 4] and split.test_target.tolist() == [8, 9]
    assert split.test_input(0).tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="at least 3"):
        rd.leave_one_out([np.array([1, 2])])


# --------------------------------------------------------------------------- fitting


def test_statistics_helpers():
    assert cal.gini(np.ones(10)) == pytest.approx(0.0)
    assert cal.gini(np.r_[np.zeros(99), 1.0]) == pytest.approx(0.99)
    assert cal.head_share(np.r_[np.full(9, 1.0), 91.0]) == pytest.approx(0.91)
    events = pd.DataFrame(dict(user=[0, 0, 0, 1, 1], item=[1, 2, 3, 1, 1], day=[0.0, 0.01, 2.0, 5.0, 5.001]))
    session, gap = cal.sessions(events)
    assert session.tolist() == [0, 0, 1, 2, 2]
    assert np.isnan(gap[0]) and np.isnan(gap[3]) and gap[2] == pytest.approx(1.99)


def test_closed_forms_recover_known_parameters():
    rng = np.random.default_rng(0)
    w = np.array([0.5, 0.3, 0.15, 0.05])
    c = cal.topic_concentration_for(w, 0.6)
    p = rng.dirichlet(len(w) * c * w, size=200_000)
    assert (p**2).sum(axis=1).mean() == pytest.approx(0.6, abs=0.01)
    shape, mean = cal.weibull_fit(rng.weibull(0.7, size=20_000) * 3.0)
    assert shape == pytest.approx(0.7, rel=0.03) and mean == pytest.approx(3.0 * math.gamma(1 + 1 / 0.7), rel=0.05)
    q = rng.beta(6.0, 4.0, size=200_000)
    bait = rng.random(q.size) < 0.1
    a, b = cal.quality_beta(np.where(bait, q / 2, q), 0.1)
    assert a == pytest.approx(6.0, rel=0.05) and b == pytest.approx(4.0, rel=0.05)
    shows = np.full(3, 300_000)
    clicks = rng.binomial(shows, 0.01 * (1.0 + np.arange(3)) ** -0.8)  # decay 0.8
    click = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for k, n in zip(clicks, shows)])
    obd = pd.DataFrame(dict(position=np.repeat(np.arange(3), shows), click=click))
    fit = cal.position_decay(obd)
    assert fit["decay_mle"] == pytest.approx(0.8, abs=0.05)
    assert fit["decay_ci"][0] < 0.8 < fit["decay_ci"][1]


@needs_movielens
@needs_obd
def test_fitted_statistics_on_a_slice(ml_slice):
    over, notes = cal.closed_form(ml_slice, rd.load_obd("random"))
    assert over["catalog"]["n_items"] == 1682 and over["catalog"]["n_topics"] == 18
    assert sum(over["catalog"]["topic_weights"]) == pytest.approx(1.0, abs=1e-3)
    assert 0 < over["lifetime"]["churn_base"] < 1 and over["lifetime"]["gap_shape"] > 0
    assert over["response"]["position_decay"] >= 0
    # The fitted catalog's items are as concentrated on their genres as the real ones.
    cat = make_scenario("stationary", {"catalog": over["catalog"]}).world.catalog
    p = np.random.default_rng(0).dirichlet(cat.topic_alpha(), size=50_000)
    assert (p**2).sum(axis=1).mean() == pytest.approx(notes["item_genre_hhi"], abs=0.02)
    real = cal.statistics(cal.real_events(ml_slice), cal.genre_topics(ml_slice.genres), 3)
    assert real["users"] == 40 and real["repeat_rate"] == 0.0 and 0 < real["head_share"] < 1


def test_simulated_statistics_and_bad_settings():
    fitted = make_scenario("movielens")  # the committed fit; a tiny population of it
    assert fitted.world.lifetime.enabled and fitted.world.catalog.n_items == 1682
    over = merge_overrides(PRESETS["movielens"], {"lifetime": {"horizon_days": 20.0, "first_visit_days": 5.0}})
    events, slots, catalog = cal.simulate(over, n_users=24, seed=3, max_steps=300, slate_size=3)
    assert list(events.columns) == ["user", "item", "day"] and len(slots) == 3 and slots.sum() == len(events)
    assert events["item"].max() < catalog.n_items
    again, _, _ = cal.simulate(over, n_users=24, seed=3, max_steps=300, slate_size=3)
    pd.testing.assert_frame_equal(events, again)  # same seed, same numbers
    with pytest.raises(ValueError, match="calibration.sim_users"):
        cal.CalibrationSettings(sim_users=0)
    with pytest.raises(ValueError, match="no user has 20 events"):
        cal.statistics(events.head(3), catalog.topics, 2)


def test_movielens_preset_builds_and_steps():
    env = RecVectorEnv(num_envs=4, scenario="movielens", seed=0, overrides={"env": {"slate_size": 3}})
    obs, _ = env.reset(seed=0)
    assert obs["candidate_features"].shape[-1] == 18 + 4
    for _ in range(5):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
    assert np.all(np.isfinite(reward))


def test_topic_weights_are_validated():
    with pytest.raises(ValueError, match="topic_weights must hold n_topics = 3"):
        CatalogParams(n_topics=3, topic_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"topic_weights\[1\]"):
        CatalogParams(n_topics=2, topic_weights=(1.0, 0.0))
    with pytest.raises(ValueError, match="must be a list"):
        make_scenario("stationary", {"catalog": {"topic_weights": 3}})
    # Equal weights draw the very catalog of no weights.
    a, b = CatalogParams(n_topics=4), CatalogParams(n_topics=4, topic_weights=(2.0, 2.0, 2.0, 2.0))
    assert np.allclose(a.topic_alpha(), b.topic_alpha())


# --------------------------------------------------------------------------- real sequences


def test_prefix_examples_and_padding():
    items, mask, target = prefix_examples([np.array([4, 5, 6]), np.array([7]), np.array([1, 2])], max_len=2)
    assert target.tolist() == [5, 6, 2]
    assert items.tolist() == [[0, 4], [4, 5], [0, 1]] and mask.tolist() == [[0, 1], [1, 1], [0, 1]]
    items, mask = pad_histories([np.array([1, 2, 3]), np.array([], np.int64)], 2)
    assert items.tolist() == [[2, 3], [0, 0]] and mask.tolist() == [[1, 1], [0, 0]]


def test_ranking_metrics_by_hand():
    scores = np.array([[0.9, 0.5, 0.1], [0.1, 0.5, 0.9]])
    m = realseq.ranking_metrics(scores, np.array([1, 1]))  # the target is second for both users
    assert m["mrr"] == pytest.approx(0.5) and m["recall@10"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="scores must be"):
        realseq.ranking_metrics(scores, np.array([1]))


@needs_movielens
@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_next_item_models_on_real_sequences(ml_slice, kind):
    split = rd.leave_one_out(rd.sequences(ml_slice.interactions))
    params = NextItemParams(kind=kind, max_len=16, d_model=16, n_layers=1, n_heads=2, epochs=1, batch_size=512)
    model, record = train_next_item(split.train, ml_slice.n_items, params)
    scores = score_all(model, realseq.test_inputs(split))
    assert scores.shape == (len(split.users), ml_slice.n_items) and np.isfinite(scores).all()
    again = score_all(train_next_item(split.train, ml_slice.n_items, params)[0], realseq.test_inputs(split))
    assert np.array_equal(scores, again)  # same seed, same model
    m = realseq.ranking_metrics(scores, split.test_target)
    assert 0 <= m["ndcg@10"] <= m["recall@10"] <= 1 and 0 < m["mrr"] <= 1


def test_next_item_bad_input():
    with pytest.raises(ValueError, match="nextitem.kind"):
        NextItemParams(kind="bert4rec")
    with pytest.raises(ValueError, match="divisible"):
        NextItemParams(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="out of range"):
        train_next_item([np.array([1, 5])], 3, NextItemParams(epochs=1))


def test_recbole_atomic_keeps_our_split(tmp_path):
    split = rd.leave_one_out([np.array([5, 6, 7, 8]), np.array([3, 4, 9])])
    path = realseq.recbole_atomic(split, tmp_path)
    frame = pd.read_csv(path, sep="\t")
    assert frame.columns.tolist() == ["user_id:token", "item_id:token", "timestamp:float"]
    last = frame.sort_values("timestamp:float").groupby("user_id:token")["item_id:token"].last()
    assert last.tolist() == split.test_target.tolist()


# --------------------------------------------------------------------------- real histories


def test_item_map_keeps_topic_and_popularity_order():
    from simulator.realhistory import item_map, taste_vectors

    real_topics = np.eye(2)[[0, 0, 1, 1]]
    sim_topics = np.eye(2)[[1, 0, 0, 1, 0, 1]]
    mapping = item_map(real_topics, np.array([5, 9, 1, 3]), sim_topics, np.array([0.1, 0.3, 0.2, 0.05, 0.01, 0.34]))
    assert mapping.tolist() == [2, 1, 0, 5]  # topic 0: item 1 (most rated) -> sim 1 (most popular of topic 0)
    assert taste_vectors(np.array([[0.5, 0.25, 0.25, 0.0]])).tolist() == [[1.0, 0.0, 0.0, -1.0]]


@needs_movielens
def test_real_histories_warm_and_cold_users():
    warm = make_scenario("movielens", {"users": {"real_history": True, "past_interactions": 20}})
    env = RecVectorEnv(num_envs=6, scenario=warm, seed=1)
    obs, _ = env.reset(seed=1)
    world = env.core.world
    real = world.real.items[world.real_user]
    assert np.array_equal(obs["history_items"][:, -20:], real) and obs["history_mask"][:, -20:].all()
    # Tastes follow the real profile: the favourite real genre is liked.
    fav = world.real.taste[world.real_user].argmax(axis=1)
    assert np.all(world.state.interest[np.arange(6), fav] > 0)
    env.step(env.action_space.sample())
    cold = RecVectorEnv(num_envs=6, scenario="movielens", overrides={"users": {"past_interactions": 0}}, seed=1)
    obs, _ = cold.reset(seed=1)
    assert not obs["history_mask"].any()
    with pytest.raises(ValueError, match=r"past_interactions must be in \[1, 20\]"):
        World(make_scenario("movielens", {"users": {"real_history": True}}).world, 2)
    with pytest.raises(ValueError, match="shaped like ml-100k"):
        World(make_scenario("stationary", {"users": {"real_history": True, "past_interactions": 5}}).world, 2)
