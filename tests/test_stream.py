"""The history read once per trajectory (agents/stream.py, agents/rllib_stream.py).

Every way of running the stream encoder must compute what one causal pass over the same tokens
computes: step by step with cached keys and values (sampling), chunk by chunk from carried windows
(learning on RLlib's max_seq_len sequences), from a cache rebuilt mid-trajectory (after a weight
sync), and, for a trajectory's first step, an observation read afresh. The RLlib plumbing must give
the trajectories and train batches RLlib's own runner and pipeline give.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from agents.encoder import EncoderConfig, RecommenderEncoder
from agents.model import ActorCritic, encoder_config
from agents.stream import first_seen_days
from envs import make_scenario
from envs.core import history_features
from envs.vector import RecVectorEnv

TINY = {"catalog": {"n_items": 60}, "env": {"num_candidates": 6, "history_len": 8}}
MODEL = dict(d_model=16, n_heads=2, n_layers=2, ff_mult=1, history_mode="stream", stream_window=3, memory=5)
USERS = 5


def trajectory(scenario: str, steps: int, seed: int = 3):
    """Observations of USERS users over `steps` steps under random actions, before any episode ends."""
    config = make_scenario(scenario, {**TINY, "env": {**TINY["env"], "max_steps": 500}})
    env = RecVectorEnv(num_envs=USERS, scenario=config, seed=seed)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(steps):
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(rng.integers(0, config.env.num_candidates, size=USERS))
        if (terminated | truncated).any():
            break
    stacked = {k: torch.as_tensor(np.stack([o[k] for o in seen], axis=1)) for k in seen[0]}
    return env, config, seen, stacked


def encoder(env, config, **overrides) -> RecommenderEncoder:
    cfg = encoder_config(
        env.single_observation_space, env.core.n_items, {**MODEL, **overrides}, history_features(config)
    )
    torch.manual_seed(0)
    return RecommenderEncoder(cfg, item_features=env.core.item_features).eval()


@pytest.mark.parametrize(
    "scenario,steps,adapters", [("mixed", 10, False), ("lifetime", 40, False), ("lifetime", 12, True)]
)
def test_every_way_of_running_the_stream_computes_one_causal_pass(scenario, steps, adapters):
    """With adapters (agents.lora, their updates made nonzero) too: the paths that read a layer's weight
    themselves (the cached keys, the folded output projection) apply its update as calling it does."""
    from agents.lora import add_adapters

    env, config, seen, stacked = trajectory(scenario, steps)
    assert len(seen) >= 8
    net = encoder(env, config)
    if adapters:
        add_adapters(net, rank=3, alpha=6.0)
        with torch.no_grad():
            for name, weight in net.named_parameters():
                if name.endswith("lora_b"):
                    weight.normal_(0.0, 0.3)
    one = lambda obs: {k: torch.as_tensor(v) for k, v in obs.items()}  # noqa: E731
    with torch.no_grad():
        start = net.history.fresh_window(USERS, "cpu")
        whole, read = net.forward_sequence(start, stacked)  # the control: one pass over every token

        window, cache, stepped = start, None, []
        for t, obs in enumerate(seen):
            if t == len(seen) // 2:
                cache = None  # a cache lost mid-way (a weight sync) is rebuilt from the carried window
            out, cache = net.stream(window, one(obs), cache)
            window = cache.window
            stepped.append(out.logits)
        torch.testing.assert_close(torch.stack(stepped, 1), whole.logits, atol=2e-5, rtol=0)

        window, chunked = start, []
        for begin in range(0, len(seen), 3):  # chunks of 3 steps from carried windows, as the learner reads
            out, chunk = net.forward_sequence(window, {k: v[:, begin : begin + 3] for k, v in stacked.items()})
            window = chunk.window
            chunked.append(out.logits)
        torch.testing.assert_close(torch.cat(chunked, 1), whole.logits, atol=2e-5, rtol=0)
        for a, b in zip(window, read.window):  # the carried window after the last step, whichever way
            torch.testing.assert_close(a, b, atol=0, rtol=0)

        fresh = net(one(seen[0]))  # a trajectory's first step: the observation read afresh
        torch.testing.assert_close(fresh.logits, whole.logits[:, 0], atol=2e-5, rtol=0)

        steps_wanted = torch.zeros(stacked["history_items"].shape[:2], dtype=torch.bool)
        steps_wanted[:, ::3] = True  # reading out some steps only scores those, with the same numbers
        some, _ = net.forward_sequence(start, stacked, steps_wanted)
        torch.testing.assert_close(some.logits[steps_wanted], whole.logits[steps_wanted], atol=2e-5, rtol=0)
        assert (some.logits[~steps_wanted] == 0).all()


def test_a_token_counts_while_the_window_reaches_it_and_not_after():
    """Treatment against control: change one early interaction. The states read while it is among the
    last `memory` tokens (or feeds them through the sliding window) change; once it has left the
    carried window nothing depends on it."""
    env, config, seen, stacked = trajectory("mixed", 20)
    net = encoder(env, config)
    reach = net.history.memory + (net.config.n_layers - 1) * (net.history.window - 1)
    changed = {k: v.clone() for k, v in stacked.items()}
    changed["history_items"][:, 1, -1] = (changed["history_items"][:, 1, -1] + 7) % env.core.n_items  # step 0's pick
    # Every later observation shows that pick in its history, as the env would.
    for t in range(2, changed["history_items"].shape[1]):
        slot = -t  # the entry moves one slot left per step
        if -slot <= changed["history_items"].shape[2]:
            changed["history_items"][:, t, slot] = changed["history_items"][:, 1, -1]
    with torch.no_grad():
        start = net.history.fresh_window(USERS, "cpu")
        base, _ = net.forward_sequence(start, stacked)
        other, _ = net.forward_sequence(start, changed)
    moved = (base.state - other.state).abs().amax(dim=(0, 2))  # per step
    first_read = 1  # the pick of step 0 is read at step 1 (token index 32 + 1 of the trajectory)
    assert (moved[:first_read] == 0).all()
    assert (moved[first_read : first_read + net.history.memory] > 0).all()
    assert (moved[first_read + reach :] == 0).all()


def test_first_seen_days_turns_days_ago_into_the_gap_to_the_next_entry():
    unit = np.log1p(365.0)
    days_ago = np.array([[0.0, 40.0, 9.0, 2.0, 0.0]])  # oldest first; the first slot is padding
    mask = torch.tensor([[False, True, True, True, True]])
    features = torch.zeros(1, 5, 3)
    features[..., 1] = torch.as_tensor(np.log1p(days_ago) / unit, dtype=torch.float32)
    seen = first_seen_days(features, mask, column=1, days_scale=365.0)
    gaps = np.expm1(seen[0, :, 1].double().numpy() * unit)
    np.testing.assert_allclose(gaps[1:], [31.0, 7.0, 2.0, 0.0], atol=1e-4)  # to the next entry; the newest as is
    assert seen[0, 0, 1] == features[0, 0, 1]  # padding untouched
    torch.testing.assert_close(seen[..., [0, 2]], features[..., [0, 2]])


@pytest.mark.parametrize(
    "overrides,words",
    [
        ({"stream_window": -1}, "stream_window must be >= 0"),
        ({"memory": 10**6}, "memory must be at most"),
        ({"history_mode": "lstm"}, "history_mode must be one of window, stream"),
        ({"days_ago_feature": 9}, "days_ago_feature must be -1"),
    ],
)
def test_a_bad_window_is_one_line_naming_it(overrides, words):
    sizes = dict(n_items=10, history_len=4, item_feature_dim=3, history_feature_dim=5, context_dim=3)
    with pytest.raises(ValueError, match=words) as err:
        EncoderConfig(**sizes, **{**MODEL, **overrides})
    assert "\n" not in str(err.value)


def test_the_actor_critic_folds_the_target_attention_into_single_item_logits():
    """Scoring single items, the stream ActorCritic never forms the per-candidate user vector: the
    target attention's output projection is folded into the candidates (per catalog item when the
    catalog is static). The logits equal the unfolded ones."""
    env, config, seen, stacked = trajectory("mixed", 6)
    for static in (False, True):
        cfg = encoder_config(env.single_observation_space, env.core.n_items, {**MODEL, "static_items": static})
        torch.manual_seed(0)
        net = ActorCritic(cfg, 1, env.core.item_features).eval()
        assert not net.encoder.keep_user
        with torch.no_grad():
            start = net.encoder.history.fresh_window(USERS, "cpu")
            folded, _ = net.forward_sequence(start, stacked)
            net.encoder.keep_user = True
            plain, _ = net.forward_sequence(start, stacked)
        torch.testing.assert_close(folded, plain, atol=2e-5, rtol=0)


# ---------------------------------------------------------------------------------- RLlib plumbing
RLLIB_ALGO = dict(
    num_envs_per_env_runner=6,
    rollout_fragment_length=7,
    train_batch_size=42,
    minibatch_size=21,
    num_epochs=1,
    pretrain_epochs=0,
    max_seq_len=4,
)


def ppo(default_plumbing: bool, monkeypatch):
    from agents.rllib_agent import PPOParams, RLlibPPOAgent

    if default_plumbing:  # the control: RLlib's own runner and learner pipeline
        monkeypatch.setattr(RLlibPPOAgent, "_stream_runner", lambda self: {})
        monkeypatch.setattr(RLlibPPOAgent, "_stream_batch", lambda self: {})
    config = make_scenario("mixed", {**TINY, "env": {**TINY["env"], "max_steps": 12}})
    agent = RLlibPPOAgent(config, PPOParams(**RLLIB_ALGO), seed=0, model={**MODEL, "static_items": True})
    monkeypatch.undo()
    return agent


def test_the_batched_runner_samples_what_rllibs_runner_samples(ray_session, monkeypatch):
    """Treatment against control on one seed: the same weights and torch RNG give the same episodes
    (observations, actions, rewards, log-probabilities, values, carried windows), step for step,
    over fragments that cut episodes and start new ones."""
    ours, theirs = ppo(False, monkeypatch), ppo(True, monkeypatch)
    try:
        weights = ours.learner_weights()
        theirs.algo.env_runner.module.net.load_state_dict(weights)
        ours.algo.env_runner.module.net.load_state_dict(weights)
        got = {}
        for name, agent in (("ours", ours), ("theirs", theirs)):
            torch.manual_seed(7)
            runner = agent.algo.env_runner
            got[name] = [e for _ in range(3) for e in runner.sample(num_timesteps=42, explore=True)]
        key = lambda e: (e.t_started, len(e), round(float(e.get_return()), 4), tuple(np.asarray(e.get_actions())))  # noqa: E731
        a, b = sorted(got["ours"], key=key), sorted(got["theirs"], key=key)
        assert len(a) == len(b) > 18 and sum(e.is_done for e in a) == sum(e.is_done for e in b) > 3
        for x, y in zip(a, b):
            assert key(x) == key(y) and x.is_terminated == y.is_terminated and x.is_truncated == y.is_truncated
            for k, v in y.get_observations().items():
                np.testing.assert_array_equal(x.get_observations()[k], v)
            for column in ("action_logp", "vf_preds", "action_dist_inputs"):
                np.testing.assert_allclose(
                    x.get_extra_model_outputs(column), y.get_extra_model_outputs(column), atol=1e-5
                )
            for k, v in y.get_extra_model_outputs("state_out").items():
                np.testing.assert_array_equal(x.get_extra_model_outputs("state_out")[k], v, err_msg=k)
    finally:
        ours.close()
        theirs.close()


def test_the_train_batch_in_arrays_is_rllibs_pipeline_batch(ray_session, monkeypatch):
    """The same episodes through our learner connector and RLlib's default one (AddOneTs, time ranks,
    states, GAE): the same sequences, states, masks and value targets; the advantages are those
    targets less the sampled values, standardised over the sampled steps (RLlib's statistics also
    count its loss-masked appended rows, whose GAE runs on into the next episode of the batch)."""
    import copy

    from ray.rllib.core import DEFAULT_MODULE_ID

    ours, theirs = ppo(False, monkeypatch), ppo(True, monkeypatch)
    try:
        theirs.algo.learner_group._learner.module[DEFAULT_MODULE_ID].net.load_state_dict(ours.learner_weights())
        ours.algo.env_runner.sample(num_timesteps=42, explore=True)
        episodes = ours.algo.env_runner.sample(num_timesteps=84, explore=True)
        batches = {}
        for name, agent in (("ours", ours), ("theirs", theirs)):
            learner = agent.algo.learner_group._learner
            batch = learner._learner_connector(
                rl_module=learner.module, batch={}, episodes=copy.deepcopy(episodes), shared_data={}
            )
            batches[name] = {
                k: {kk: vv.cpu().numpy() for kk, vv in v.items()} if isinstance(v, dict) else v.cpu().numpy()
                for k, v in batch[DEFAULT_MODULE_ID].items()
            }
        a, b = batches["ours"], batches["theirs"]
        np.testing.assert_array_equal(a["seq_lens"], b["seq_lens"])
        np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"])
        for column in ("obs", "state_in"):
            for k in b[column]:
                np.testing.assert_array_equal(a[column][k], b[column][k], err_msg=f"{column}.{k}")
        mask = b["loss_mask"].astype(bool)
        for column in ("actions", "action_logp", "vf_preds", "value_targets"):
            np.testing.assert_allclose(a[column][mask], b[column][mask], atol=1e-5, err_msg=column)
        raw = b["value_targets"][mask] - b["vf_preds"][mask]
        np.testing.assert_allclose(a["advantages"][mask], (raw - raw.mean()) / raw.std(), atol=1e-4)
        assert (a["advantages"][~mask] == 0).all()
    finally:
        ours.close()
        theirs.close()


def test_calendar_discounting_changes_the_advantages_exactly_as_its_formula_says():
    from agents.rllib_stream import advantages, calendar_discounts

    rewards = np.array([[1.0, 0.0, 2.0, 0.5]])
    values = np.array([[0.3, 0.1, 0.4, 0.2]])
    steps, last = np.array([4]), np.array([0.7])
    # Control: one day between every two steps is per-step discounting with gamma = gamma_per_day.
    one_day = calendar_discounts(np.array([[0, 1, 2, 3, 4]]) / 60.0, steps, 60.0, 0.9)
    np.testing.assert_allclose(one_day, 0.9)
    np.testing.assert_allclose(
        advantages(rewards, values, last, steps, one_day, 0.95), advantages(rewards, values, last, steps, 0.9, 0.95)
    )
    # Treatment: a two-week gap after step 1 discounts what follows it by 0.9 ** 14, exactly.
    days = np.array([[0.0, 0.01, 14.01, 14.02, 14.03]])
    gamma = calendar_discounts(days / 60.0, steps, 60.0, 0.9)
    np.testing.assert_allclose(gamma, 0.9 ** np.diff(days), rtol=1e-9)
    adv = advantages(rewards, values, last, steps, gamma, 0.95)
    following = np.array([0.1, 0.4, 0.2, 0.7])
    delta = rewards[0] + gamma[0] * following - values[0]
    expected = np.zeros(4)
    for t in range(3, -1, -1):
        expected[t] = delta[t] + (gamma[0, t] * 0.95 * expected[t + 1] if t < 3 else 0.0)
    np.testing.assert_allclose(adv[0], expected, rtol=1e-9)
    assert adv[0, 1] < advantages(rewards, values, last, steps, 0.9, 0.95)[0, 1]  # the far future weighs less


def test_calendar_discounting_is_refused_without_a_calendar_in_one_line(ray_session):
    from agents.rllib_agent import PPOParams, RLlibPPOAgent

    config = make_scenario("mixed", TINY)
    with pytest.raises(ValueError, match="gamma_per_day discounts over calendar days: 'mixed' has no calendar"):
        RLlibPPOAgent(config, PPOParams(**RLLIB_ALGO, gamma_per_day=0.97), model=MODEL)
    with pytest.raises(ValueError, match="algo.max_seq_len must be"):
        PPOParams(max_seq_len=0)


GAMMA_PER_DAY = {"gamma_per_day": 0.9}


@pytest.mark.parametrize(
    "scenario, model, algo, words",
    [
        ("mixed", {"history_mode": "stream"}, GAMMA_PER_DAY, "'mixed' has no calendar"),
        ("lifetime", {"history_mode": "window"}, GAMMA_PER_DAY, "needs model.history_mode stream"),
    ],
)
def test_calendar_discounting_a_run_cannot_take_is_one_line_before_any_run(scenario, model, algo, words):
    """run.py's settings refuse it (before a run directory is made), not the agent once built."""
    from experiments.core.settings import RunSettings

    with pytest.raises(ValueError, match=words) as error:
        RunSettings(agent="ppo", scenario=scenario, model=model, algo=algo)
    assert "\n" not in str(error.value)
    RunSettings(agent="ppo", scenario="lifetime", model={"history_mode": "stream"}, algo={"gamma_per_day": 0.9})


def test_ppo_sizes_left_unset_are_chosen_from_the_device_and_set_ones_are_kept():
    from agents.rllib_agent import PPOParams

    sizes = lambda p: (p.num_env_runners, p.num_envs_per_env_runner, p.train_batch_size, p.minibatch_size, p.lr)  # noqa: E731
    assert sizes(PPOParams().for_device("cpu")) == (0, 256, 8192, 512, 1e-3)  # sessions
    assert sizes(PPOParams().for_device("cpu", calendar=True)) == (0, 64, 2048, 512, 5e-4)  # lifetimes
    assert sizes(PPOParams(lr=2e-4, minibatch_size=256).for_device("cpu")) == (0, 256, 8192, 256, 2e-4)
    cuda = PPOParams().for_device("cuda", cpus=16)
    assert (cuda.num_env_runners, cuda.num_envs_per_env_runner, cuda.lr) == (14, 256, 5e-4)
    assert cuda.train_batch_size == 14 * 256 * 32 and cuda.minibatch_size == 8192
    mine = PPOParams(train_batch_size=16_384, num_env_runners=2).for_device("cuda", cpus=16)
    assert (mine.num_env_runners, mine.train_batch_size, mine.minibatch_size) == (2, 16_384, 8192)
    small = PPOParams(train_batch_size=256, rollout_fragment_length=4).for_device("cpu")
    assert (small.num_envs_per_env_runner, small.minibatch_size) == (64, 256)  # one round of the batch set


@pytest.mark.parametrize(
    "sizes, device",
    [({"num_envs_per_env_runner": 1000}, "cpu"), ({"train_batch_size": 1024, "num_env_runners": 2}, "cuda")],
)
def test_a_train_batch_rllib_cannot_sample_in_whole_rounds_is_one_line_before_any_run(sizes, device):
    """RLlib would refuse these sizes only when the algorithm is built (a run directory made, a two-line
    error); the settings refuse them first, naming the sizes and what would fit."""
    from agents.rllib_agent import PPOParams
    from experiments.core.costs import check_run_memory
    from experiments.core.settings import RunSettings

    with pytest.raises(ValueError, match=r"algo.train_batch_size .* rollout_fragment_length to \d+$") as error:
        PPOParams(**sizes).for_device(device, cpus=16)
    assert "\n" not in str(error.value)
    if device == "cpu":  # what run.py checks before it makes a run directory
        with pytest.raises(ValueError, match="algo.train_batch_size"):
            check_run_memory(RunSettings(agent="ppo", scenario="mixed", algo=sizes, device="cpu"))


def test_a_resumed_run_carries_the_history_state(ray_session, monkeypatch, tmp_path):
    """Treatment against control on one seed: a run checkpointed after two iterations and resumed in a
    new agent goes on with the same users and their carried histories, and trains to the same weights
    as the run that was never interrupted."""
    uninterrupted = ppo(False, monkeypatch)
    try:
        for _ in range(2):
            uninterrupted.train_iteration()
        uninterrupted.save(tmp_path / "checkpoint")
        uninterrupted.train_iteration()
        control_window = uninterrupted.algo.env_runner._live["window"]
        control_weights = uninterrupted.learner_weights()
    finally:
        uninterrupted.close()
    resumed = ppo(False, monkeypatch)
    try:
        resumed.restore(tmp_path / "checkpoint")
        assert resumed.env_steps > 0
        resumed.train_iteration()
        for a, b in zip(resumed.algo.env_runner._live["window"], control_window):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        for key, value in resumed.learner_weights().items():
            torch.testing.assert_close(value, control_weights[key], atol=0, rtol=0, msg=key)
    finally:
        resumed.close()


def test_value_statistics_standardise_the_targets_and_leave_every_value_unchanged():
    """PopArt on the actor-critic: after each batch's targets update the running mean and std, every
    state's value (reward units) is what it was, the first batch's targets come out standardised, and
    later batches weigh `rate` in moments corrected for their start at zero. Control: without
    normalisation the value is the critic's output and the state dict has no statistics."""
    from agents.model import update_value_statistics

    env, config, _, _ = trajectory("lifetime", 2)
    cfg = encoder_config(env.single_observation_space, env.core.n_items, MODEL, history_features(config))
    torch.manual_seed(0)
    net = ActorCritic(cfg, 1, env.core.item_features, normalize_values=True)
    states = torch.randn(64, cfg.d_model)
    first, second = 300.0 + 80.0 * torch.randn(256), 500.0 + 20.0 * torch.randn(256)
    before = net.value(states)
    update_value_statistics(net, first, 0.1)
    torch.testing.assert_close(net.value(states), before, atol=1e-4, rtol=1e-5)
    standard = net.standardized(first).double()
    assert abs(standard.mean().item()) < 1e-5 and abs(standard.std(unbiased=False).item() - 1.0) < 1e-5
    torch.testing.assert_close(net.critic(states), (net.value(states) - net.value_mean) / net.value_std)
    before = net.value(states)
    update_value_statistics(net, second, 0.1)
    torch.testing.assert_close(net.value(states), before, atol=1e-4, rtol=1e-5)
    weight = 0.9 * 0.1 + 0.1
    mean = (0.9 * 0.1 * first.double().mean() + 0.1 * second.double().mean()) / weight
    square = (0.9 * 0.1 * (first.double() ** 2).mean() + 0.1 * (second.double() ** 2).mean()) / weight
    assert abs(net.value_mean.item() - mean.item()) < 1e-3
    assert abs(net.value_std.item() - (square - mean**2).sqrt().item()) < 1e-3
    plain = ActorCritic(cfg, 1, env.core.item_features)
    torch.testing.assert_close(plain.value(states), plain.critic(states), atol=0, rtol=0)
    assert plain.standardized(first) is first and not any(k.startswith("value_m") for k in plain.state_dict())
    with pytest.raises(ValueError, match="normalize_values=True"):
        update_value_statistics(plain, first, 0.1)
    from agents.rllib_agent import PPOParams

    with pytest.raises(ValueError, match=r"algo.value_stats_rate must be in \(0, 1\], got 0"):
        PPOParams(value_stats_rate=0)
    with pytest.raises(ValueError, match="algo.normalize_values must be true or false"):
        PPOParams(normalize_values="yes")


@pytest.mark.parametrize("history_mode", ["stream", "window"])
def test_normalised_values_train_the_critic_on_unit_scale_targets(ray_session, history_mode):
    """Treatment against control on one seed, rewards scaled up 100x: with normalize_values the
    learner's value loss is on standardised targets (order 1) and the value statistics carry the
    returns' scale; without, the loss is in the returns' squared units. Both encoders' pipelines
    (ours in arrays, RLlib's GAE) end with the statistics' update."""
    from agents.rllib_agent import PPOParams, RLlibPPOAgent

    config = make_scenario("lifetime", {**TINY, "env": {**TINY["env"], "max_steps": 500}})
    losses, nets, worlds = {}, {}, {}
    for normalize in (False, True):
        params = PPOParams(**RLLIB_ALGO, reward_scale=100.0, normalize_values=normalize)
        agent = RLlibPPOAgent(config, params, seed=0, model={**MODEL, "history_mode": history_mode})
        try:
            metrics = agent.train_iteration()
            losses[normalize] = metrics["value_loss"]
            nets[normalize] = agent.algo.learner_group._learner.module["default_policy"].net
            popularity = agent.algo.env_runner.env.unwrapped.core.world.popularity
            worlds[normalize] = metrics["world_top10_popularity"], np.sort(popularity)[-10:].sum() / popularity.sum()
        finally:
            agent.close()
    # The training world's popularity share is reported as the sampler's world holds it.
    for reported, direct in worlds.values():
        assert 0.0 < reported <= 1.0 and reported == pytest.approx(direct)
    assert losses[True] < 10.0 < 1e3 < losses[False], losses
    assert nets[True].value_std.item() > 10.0 and nets[True].value_mean.item() > 100.0


@pytest.mark.parametrize("objective", ["engagement", "next_item"])
def test_the_stream_warm_start_objective_decreases_on_logs(objective):
    """Each pretraining objective of the stream encoder goes down epoch after epoch on the same logs
    (next_item: self-supervised, the next interaction from the history)."""
    from agents.factory import logged_data
    from agents.sequence_models import EngagementLearner
    from agents.training_examples import fit_examples
    from agents.warm_start import WarmStartParams

    config = make_scenario("mixed", TINY)
    env = RecVectorEnv(num_envs=1, scenario=config, seed=0)
    cfg = encoder_config(env.single_observation_space, env.core.n_items, MODEL, history_features(config))
    logs = logged_data(config, WarmStartParams(log_users=16, log_steps=40), 0, run_dir=None)
    examples = fit_examples(logs, env.core.n_items, 6, cfg.history_len, config.world.catalog.length_mean)
    learner = EngagementLearner(
        "sasrec", cfg, env.core.item_features, 6, config.world.catalog.length_mean, 3e-3, 128, 0, torch.device("cpu")
    )
    losses = [learner.train_sequences(examples, objective=objective) for _ in range(4)]
    assert losses[-1] < losses[0] and all(np.isfinite(losses)), losses
    with pytest.raises(ValueError, match="pretrain_objective must be one of engagement, next_item"):
        WarmStartParams(pretrain_objective="masked")


def test_return_free_heap_gives_freed_pages_back_to_the_os():
    """Treatment against control: blocks freed below a live one stay resident (glibc trims only the heap's
    top by itself), and return_free_heap hands them back."""
    from agents.rllib_agent import _malloc_trim, return_free_heap

    if _malloc_trim() is None:
        pytest.skip("the C library has no malloc_trim")

    def resident_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    blocks = [bytearray(64 * 1024) for _ in range(1600)]  # 100 MB on the heap (below mmap's threshold)
    pinned = bytearray(64 * 1024)  # above them: the freed ones are not the heap's top
    del blocks
    control = resident_mb()
    return_free_heap()
    assert resident_mb() < control - 50
    del pinned


def test_a_staggered_start_gives_each_slot_a_user_of_its_own_age(ray_session, monkeypatch):
    """Treatment against control on one seed: without the burn-in every slot's first episode starts at
    step 0 of its user's life; with it slot i's user has lived the age drawn for it (fewer where a user
    ended during the burn-in and the slot went on with the next), as the env's own step counter (the
    context's last column, step / max_steps) confirms for each slot."""
    from agents.rllib_agent import PPOParams, RLlibPPOAgent
    from agents.rllib_stream import STAGGER_STREAM

    config = make_scenario("mixed", {**TINY, "env": {**TINY["env"], "max_steps": 12}})
    started = {}
    for stagger in (0, 9):
        agent = RLlibPPOAgent(
            config, PPOParams(**RLLIB_ALGO, stagger_steps=stagger), seed=0, model={**MODEL, "static_items": True}
        )
        try:
            runner = agent.algo.env_runner
            episodes = runner.sample(num_timesteps=42, explore=True)
            seed = runner._seed
        finally:
            agent.close()
        for e in episodes:  # the env's own step counter where each recorded chunk begins
            context = np.asarray(e.get_observations()["context"])[0]
            assert round(float(context[-1]) * 12) == e.t_started
        started[stagger] = [e.t_started for e in episodes]
    assert set(started[0]) == {0}
    ages = np.random.default_rng(np.random.SeedSequence([int(seed or 0), STAGGER_STREAM])).integers(0, 10, size=6)
    assert len(set(ages)) > 2 and len(set(started[9])) > 2
    assert sum(age in started[9] for age in ages if age) >= 3  # slots whose user lived through start at their age


def test_a_world_refresh_starts_the_training_world_afresh_as_a_new_env_of_its_seed(ray_session):
    """Treatment against control on one seed: without refreshes the sampler's world keeps aging (its
    popularity moves off the catalog's); with world_refresh_steps the fragment that starts once the world
    has stepped that often starts in the next world of the runner's sequence, exactly as a new env of
    that seed starts (the same observations, its popularity the catalog's), every slot a new life at step
    0, and the sampler's world age starts again; the open lives of the old world are not continued."""
    from agents.rllib_agent import PPOParams, RLlibPPOAgent
    from agents.rllib_stream import world_seed

    config = make_scenario("lifetime", TINY)
    algo = {**RLLIB_ALGO, "rollout_fragment_length": 5, "train_batch_size": 30}
    seen = {}
    for refresh in (0, 8):
        agent = RLlibPPOAgent(config, PPOParams(**algo, world_refresh_steps=refresh), seed=0, model=MODEL)
        try:
            runner = agent.algo.env_runner
            first = runner.sample(num_timesteps=30, explore=True)  # 5 world steps
            second = runner.sample(num_timesteps=30, explore=True)  # 10: the refresh is due after it
            third = runner.sample(num_timesteps=30, explore=True)
            core = runner.env.unwrapped.core
            seen[refresh] = dict(
                seed=core.seed,
                worlds=runner._worlds,
                world_steps=runner._world_steps,
                popularity=core.world.popularity.copy(),
                catalog=core.world.catalog.popularity.copy(),
                ids=({e.id_ for e in first} | {e.id_ for e in second}, {e.id_ for e in third}),
                starts=[e.t_started for e in third],
                third=third,
                runner_seed=runner._seed,
            )
        finally:
            agent.close()
    control, treated = seen[0], seen[8]
    assert control["worlds"] == 0 and control["world_steps"] == 15
    assert not np.allclose(control["popularity"], control["catalog"])  # the control's world has aged
    assert control["ids"][1] & control["ids"][0]  # its lives go on across fragments
    assert treated["worlds"] == 1 and treated["world_steps"] == 5
    assert treated["seed"] == world_seed(treated["runner_seed"], 1) != control["seed"]
    assert set(treated["starts"]) == {0} and not treated["ids"][1] & treated["ids"][0]
    # The new world is a new env of its seed: its first observations, slot by slot.
    fresh = RecVectorEnv(num_envs=6, scenario=config, seed=treated["seed"])
    obs, _ = fresh.reset(seed=treated["seed"])
    row = lambda o, i: b"".join(np.asarray(o[k])[i].tobytes() for k in sorted(o))  # noqa: E731
    starts = {row(e.get_observations(), 0) for e in treated["third"]}
    assert {row(obs, i) for i in range(6)} <= starts
    with pytest.raises(ValueError, match="algo.world_refresh_steps needs model.history_mode stream"):
        from experiments.core.settings import RunSettings

        RunSettings(agent="ppo", scenario="lifetime", model={"history_mode": "window"}, algo={"world_refresh_steps": 9})
    with pytest.raises(ValueError, match="world_refresh_steps"):
        PPOParams(world_refresh_steps=-1)


def test_a_burn_in_the_window_encoder_cannot_run_is_one_line_before_any_run():
    from experiments.core.settings import RunSettings

    with pytest.raises(ValueError, match="algo.stagger_steps needs model.history_mode stream") as error:
        RunSettings(agent="ppo", scenario="mixed", model={"history_mode": "window"}, algo={"stagger_steps": 64})
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="stagger_steps"):
        RunSettings(agent="ppo", scenario="mixed", model={"history_mode": "stream"}, algo={"stagger_steps": -1})
