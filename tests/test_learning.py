"""PPO learns: a short training run beats the random policy, and an untrained agent does not.

On a tiny stationary scenario, RLlib PPO and stable-baselines3 PPO each train for
TRAIN_STEPS user steps; the greedy policy must then watch clearly more minutes per
session than the random policy. Both are evaluated on the same EVAL_USERS users with
the same seed, so they meet the same users and noise (common random numbers) and the
comparison is paired, user by user:

    mean(PPO - random) - Z * standard error  >=  MIN_GAIN * mean(random)

i.e. with Z standard errors of confidence, PPO adds at least MIN_GAIN of random's
minutes. The same agent before its first iteration must fail that test, so it cannot
pass on network initialisation alone.

Measured with the personal-value dynamics (experiments/validity.py), on seeds 0-2 (the
left side divided by mean(random)): trained for TRAIN_STEPS = 4096, 0.69 to 0.82 (RLlib) and
0.70 to 1.00 (SB3); for 8192, 0.86 to 0.91 and 0.78 to 0.94; untrained, over 30
initialisations, -0.40 to 0.04. MIN_GAIN sits between the two. (Before
the rework, when item features revealed quality, an untrained scorer could favour quality by
chance and reach 0.52.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agents.policy import RandomPolicy
from agents.rllib_agent import PPOParams, RLlibPPOAgent
from agents.sb3_agent import SB3PPOAgent, SB3PPOParams
from envs import make_scenario
from experiments.core.harness import EVAL_SEED, evaluate

# ---------------------------------------------------------------- the whole tiny setup
SEED = 0  # training seed and the random policy's seed
# Stationary: no drift, so what is learnt early still holds at evaluation. Random watches
# ~14 minutes per session here: plenty of room to show learning.
SCENARIO = make_scenario(
    "stationary",
    {
        "catalog": {"n_items": 100},
        "env": {"num_candidates": 8, "history_len": 8, "max_steps": 30},
    },
)
MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}  # encoder overrides
TRAIN_STEPS = 4096  # user steps: 8 PPO iterations of 512
# The same update for both libraries: 16 users x 32 steps per iteration, 4 epochs of
# minibatches of 128, and a learning rate high enough to learn in a few iterations
# (learning shows after ~4 iterations; 8 leave a margin: module docstring).
SB3_ALGO = {"num_envs": 16, "n_steps": 32, "batch_size": 128, "n_epochs": 4, "learning_rate": 1e-3}
RLLIB_ALGO = {
    "num_envs_per_env_runner": 16,
    "rollout_fragment_length": 32,
    "train_batch_size": 512,
    "minibatch_size": 128,
    "num_epochs": 4,
    "lr": 1e-3,
    "pretrain_epochs": 0,  # learning from rewards alone (the supervised warm start has its own test)
}  # num_env_runners 0: no extra processes
EVAL_USERS = 256
Z = 3.0  # standard errors of the paired difference
MIN_GAIN = 0.5  # trained: >= 0.69 on every seed tried; untrained: <= 0.04


@pytest.fixture(scope="module")
def random_returns() -> np.ndarray:
    """Per-user minutes watched by the random policy on the evaluation users."""
    return evaluate(RandomPolicy(SEED), SCENARIO, EVAL_USERS, EVAL_SEED).episodes.episode_return.to_numpy()


def gain_over_random(policy, random_returns: np.ndarray) -> float:
    """(mean per-user gain over random - Z standard errors) / random's mean return."""
    returns = evaluate(policy, SCENARIO, EVAL_USERS, EVAL_SEED).episodes.episode_return.to_numpy()
    diff = returns - random_returns  # same users, same noise: a paired difference
    lower = diff.mean() - Z * diff.std(ddof=1) / np.sqrt(len(diff))
    return float(lower / random_returns.mean())


def assert_learns(agent, random_returns: np.ndarray) -> None:
    try:
        untrained = gain_over_random(agent.policy(), random_returns)
        while agent.env_steps < TRAIN_STEPS:
            agent.train_iteration()
        trained = gain_over_random(agent.policy(), random_returns)
    finally:
        agent.close()
    assert untrained < MIN_GAIN, f"the untrained policy already passes: {untrained:.3f} >= {MIN_GAIN}"
    assert trained >= MIN_GAIN, (
        f"after {agent.env_steps} steps PPO's gain over random (lower bound / random) is {trained:.3f} < {MIN_GAIN}"
    )


def test_rllib_ppo_beats_random(ray_session, random_returns):
    agent = RLlibPPOAgent(SCENARIO, PPOParams(**RLLIB_ALGO), seed=SEED, device="cpu", model=MODEL)
    assert_learns(agent, random_returns)


def test_sb3_ppo_beats_random(random_returns):
    agent = SB3PPOAgent(SCENARIO, SB3PPOParams(**SB3_ALGO), seed=SEED, device="cpu", model=MODEL)
    assert_learns(agent, random_returns)
    # The serving copy stays in eval mode: serving switches no module at each step (agents.model.eval_mode).
    assert not any(m.training for m in agent.policy().model.modules())


def test_rllib_ppo_warm_starts_its_encoder_from_sasrec_on_logs(ray_session, monkeypatch):
    from agents.warm_start import pretrain_encoder

    logs = {"log_users": 16, "log_steps": 40}
    params = PPOParams(**{**RLLIB_ALGO, "pretrain_epochs": 1, **logs})
    agent = RLlibPPOAgent(SCENARIO, params, seed=SEED, device="cpu", model=MODEL)
    try:
        before = {k: v.clone() for k, v in agent.policy().model.encoder.state_dict().items()}
        agent.pretrain()
        # The policy that samples (the env runners') now holds sasrec's encoder fitted on those logs
        # (test_supervised: the same weights as the sasrec agent's), weight for weight.
        after = agent.policy().model.encoder.state_dict()
        for key, value in pretrain_encoder(SCENARIO, params, MODEL, SEED).items():
            torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
        assert any(not torch.equal(before[k], after[k]) for k in before)
        assert not any(m.training for m in agent.policy().model.modules())  # the serving copy: eval mode throughout
    finally:
        agent.close()
    # A fresh run pretrains once, before its first iteration; a resumed one (env steps > 0) never.
    calls = []
    monkeypatch.setattr(
        RLlibPPOAgent, "pretrain", lambda self: calls.append(self._env_steps) or setattr(self, "_pretrained", True)
    )
    agent = RLlibPPOAgent(SCENARIO, params, seed=SEED, device="cpu", model=MODEL)
    try:
        agent.train_iteration()
        agent.train_iteration()
        assert calls == [0]
        agent._pretrained, agent._env_steps, calls[:] = False, 512, []
        agent.train_iteration()
        assert calls == []
    finally:
        agent.close()


def test_rllib_ppo_warm_start_entropy_sharpens_the_sampled_policy_and_keeps_its_ranking(ray_session):
    """Treatment against control on one seed, the same warm start: with warm_start_entropy the policy's
    logits are the control's times one scale, set so that their mean entropy on fresh users' first
    observations is the target; the greedy ranking is the control's, and the runners sample from it."""
    from agents.model import mean_entropy
    from envs.vector import RecVectorEnv

    logs = {"log_users": 16, "log_steps": 40, "pretrain_epochs": 1}
    obs = RecVectorEnv(num_envs=64, scenario=SCENARIO, seed=5).reset()[0]
    nets = {}
    for target in (0.0, 0.5):
        agent = RLlibPPOAgent(
            SCENARIO, PPOParams(**{**RLLIB_ALGO, **logs, "warm_start_entropy": target}), seed=SEED, model=MODEL
        )
        try:
            agent.pretrain()
            nets[target] = agent.policy().model
            calibration = agent._calibration
            runner = agent.algo.env_runner.module.net
        finally:
            agent.close()
    tensors = {k: torch.as_tensor(v) for k, v in obs.items()}
    with torch.no_grad():
        control, treated = nets[0.0](tensors)[0], nets[0.5](tensors)[0]
    scale = calibration["logit_scale"]
    assert float(runner.logit_scale) == pytest.approx(scale) and scale > 1.5
    torch.testing.assert_close(treated, scale * control, rtol=1e-5, atol=1e-5)
    assert torch.equal(treated.argmax(-1), control.argmax(-1))
    assert calibration["entropy_after"] == pytest.approx(0.5, abs=1e-6)
    assert calibration["entropy_before"] > 1.0 and mean_entropy(control) > 1.0
    assert "logit_scale" not in nets[0.0].state_dict() and "logit_scale" in nets[0.5].state_dict()


def test_policy_kl_is_the_categorical_kl_summed_over_a_slates_choices():
    from agents.model import policy_kl

    p, q = torch.randn(5, 3 * 4), torch.randn(5, 3 * 4)
    expected = sum(
        torch.distributions.kl_divergence(
            torch.distributions.Categorical(logits=p[:, k * 4 : (k + 1) * 4]),
            torch.distributions.Categorical(logits=q[:, k * 4 : (k + 1) * 4]),
        )
        for k in range(3)
    )
    torch.testing.assert_close(policy_kl(p, q, slots=3), expected)
    assert policy_kl(p, p + 7.0, slots=3).abs().max() < 1e-5  # a shift of every logit is the same policy


def _sampling_policy(temperature: float, seed: int = 0, slate_size: int = 1):
    from types import SimpleNamespace

    from agents.model import GreedyPolicy

    return GreedyPolicy(SimpleNamespace(slate_size=slate_size), "ppo", temperature=temperature, seed=seed)


def test_a_sampled_evaluation_draws_from_the_policys_softmax_at_its_temperature():
    """eval_temperature T: the served choice is a draw from softmax(logits / T) (Gumbel-max), T = 0 the
    greedy one; frequencies over 40,000 users with the same logits match the softmax within 0.01."""
    logits = np.tile(np.array([[2.0, 1.0, 0.0, -1.0]], np.float32), (40_000, 1))
    np.testing.assert_array_equal(_sampling_policy(0.0).choose(logits), np.zeros(40_000))
    for temperature in (1.0, 0.5):
        counts = np.bincount(_sampling_policy(temperature).choose(logits), minlength=4) / 40_000
        softmax = np.exp(logits[0] / temperature) / np.exp(logits[0] / temperature).sum()
        np.testing.assert_allclose(counts, softmax, atol=0.01)
    slates = _sampling_policy(1.0, slate_size=3).choose(np.tile(logits, (1, 3))[:1000])
    assert all(len(set(row)) == 3 for row in slates.tolist())  # slot by slot, without repeats


def test_a_sampled_evaluation_repeats_its_draws_after_each_bind():
    """Common random numbers: every evaluation (the harness binds first) meets the same draws; another
    seed meets others."""
    logits = np.zeros((500, 6), np.float32)
    policy = _sampling_policy(1.0, seed=3)
    first = policy.choose(logits)
    assert not np.array_equal(first, policy.choose(logits))  # the draws go on within an evaluation
    policy.bind(env=None)
    np.testing.assert_array_equal(policy.choose(logits), first)
    assert not np.array_equal(_sampling_policy(1.0, seed=4).choose(logits), first)


def test_serving_switches_a_module_to_eval_mode_and_back_only_when_it_trains():
    """serve() runs dropout-free whatever the module's mode, and hands the mode back: a training
    module trains again after, one already in eval mode is never switched (its train() is not called)."""
    from agents.model import serve

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop, self.switches = torch.nn.Dropout(0.9), 0

        def train(self, mode: bool = True):
            self.switches += 1
            return super().train(mode)

        def forward(self, obs):
            return self.drop(obs["x"])

    probe, obs = Probe(), {"x": np.ones((4, 50), np.float32)}
    torch.manual_seed(0)
    assert torch.equal(serve(probe, obs), torch.ones(4, 50))  # eval mode inside: no unit dropped
    assert probe.training and probe.switches == 2  # to eval and back
    probe.eval()
    switches = probe.switches
    assert torch.equal(serve(probe, obs), torch.ones(4, 50))
    assert not probe.training and probe.switches == switches


def test_a_sampled_evaluation_of_a_model_is_reproducible_and_not_the_greedy_one():
    """Treatment against control on the same evaluation users: a model served at temperature 1 earns
    another return than its greedy ranking, the same on a second evaluation."""
    from agents.model import ActorCritic, GreedyPolicy, encoder_config
    from envs import RecVectorEnv

    env = RecVectorEnv(num_envs=2, scenario=SCENARIO, seed=0)
    torch.manual_seed(0)
    model = ActorCritic(
        encoder_config(env.single_observation_space, env.core.n_items, MODEL), 1, env.core.item_features
    )
    greedy = evaluate(GreedyPolicy(model, "ppo"), SCENARIO, 32, EVAL_SEED).metrics["return_mean"]
    sampled = GreedyPolicy(model, "ppo", temperature=1.0, seed=0)
    first = evaluate(sampled, SCENARIO, 32, EVAL_SEED).metrics["return_mean"]
    assert first != greedy
    assert evaluate(sampled, SCENARIO, 32, EVAL_SEED).metrics["return_mean"] == first


def test_rllib_ppo_anchor_keeps_the_policy_near_its_warm_start(ray_session, tmp_path):
    """Treatment against control on one seed, the same warm start and the same first samples: with
    anchor_coeff the loss adds KL(policy || the warm-started policy, frozen in the module), and after
    the same updates the policy is closer to the warm start than without it."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents.model import policy_kl
    from envs.vector import RecVectorEnv

    algo = {**RLLIB_ALGO, "log_users": 16, "log_steps": 40, "pretrain_epochs": 1}
    obs = RecVectorEnv(num_envs=64, scenario=SCENARIO, seed=5).reset()[0]
    tensors = {k: torch.as_tensor(v) for k, v in obs.items()}
    drift, reported = {}, {}
    for coeff in (0.0, 5.0):
        agent = RLlibPPOAgent(SCENARIO, PPOParams(**{**algo, "anchor_coeff": coeff}), seed=SEED, model=MODEL)
        try:
            agent.pretrain()
            start = agent.policy().model
            with torch.no_grad():
                warm = start(tensors)[0].clone()
            module = agent.algo.learner_group._learner.module[DEFAULT_MODULE_ID]
            if coeff:  # the reference is the warm-started policy, and stays it
                reference = {k: v.clone() for k, v in module.reference.state_dict().items()}
                for key, value in module.net.state_dict().items():
                    torch.testing.assert_close(reference[key], value, rtol=0, atol=0)
            metrics = [agent.train_iteration() for _ in range(3)]
            reported[coeff] = [m.get("anchor_kl") for m in metrics]
            with torch.no_grad():
                drift[coeff] = float(policy_kl(agent.policy().model(tensors)[0], warm).mean())
            if coeff:
                for key, value in module.reference.state_dict().items():
                    torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
                agent.save(tmp_path / "checkpoint")
        finally:
            agent.close()
    resumed = RLlibPPOAgent(SCENARIO, PPOParams(**{**algo, "anchor_coeff": 5.0}), seed=SEED + 1, model=MODEL)
    try:  # a resumed run keeps its reference (in the module's state), not the new agent's own
        resumed.restore(tmp_path / "checkpoint")
        kept = resumed.algo.learner_group._learner.module[DEFAULT_MODULE_ID].reference.state_dict()
        for key, value in reference.items():
            torch.testing.assert_close(kept[key], value, rtol=0, atol=0)
    finally:
        resumed.close()
    assert reported[0.0] == [None] * 3 and all(kl > 0 for kl in reported[5.0])
    assert drift[5.0] < 0.5 * drift[0.0]


@pytest.mark.parametrize(
    "algo, words",
    [
        ({"warm_start_entropy": 0.5, "pretrain_epochs": 0}, "needs the warm start"),
        ({"warm_start_entropy": 3.0}, r"below log\(env.num_candidates\) = 2.996"),
        ({"warm_start_entropy": -1.0}, "warm_start_entropy"),
        ({"anchor_coeff": 0.1, "pretrain_epochs": 0}, "anchor_coeff keeps the policy near"),
        ({"anchor_coeff": -0.1}, "anchor_coeff"),
        ({"eval_temperature": -1.0}, "eval_temperature"),
        ({"eval_temperature": "hot"}, "eval_temperature"),
        ({"critic_trains_encoder": "no"}, "critic_trains_encoder"),
    ],
)
def test_a_warm_start_entropy_the_run_cannot_take_is_one_line_before_any_run(algo, words):
    from experiments.core.settings import RunSettings

    with pytest.raises(ValueError, match=words) as error:
        RunSettings(agent="ppo", scenario="mixed", algo=algo)
    assert "\n" not in str(error.value)


def test_a_detached_critic_trains_the_value_head_alone(ray_session):
    """Treatment against control on the same weights and observations: with detach_critic the value
    loss leaves every encoder weight without a gradient and trains the value head as before, and the
    policy's gradient is unchanged; PPO's critic_trains_encoder: false builds the module so."""
    from agents.model import ActorCritic, encoder_config
    from envs import RecVectorEnv

    env = RecVectorEnv(num_envs=4, scenario=SCENARIO, seed=0)
    obs = {k: torch.as_tensor(v) for k, v in env.reset(seed=0)[0].items()}
    config = encoder_config(env.single_observation_space, env.core.n_items, MODEL)
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        net = ActorCritic(config, 1, env.core.item_features, detach_critic=detach)
        logits, state = net(obs)
        net.critic(state).square().sum().backward(retain_graph=True)
        value = {k: None if w.grad is None else w.grad.clone() for k, w in net.named_parameters()}
        net.zero_grad()
        logits.logsumexp(-1).sum().backward()
        grads[detach] = value, {k: w.grad for k, w in net.named_parameters() if w.grad is not None}
    (value_control, policy_control), (value_detached, policy_detached) = grads[False], grads[True]
    encoder = [k for k in value_control if k.startswith("encoder.")]
    assert any(value_control[k] is not None and value_control[k].abs().sum() > 0 for k in encoder)
    assert all(value_detached[k] is None or not value_detached[k].any() for k in encoder)
    for k in value_control:
        if k.startswith("value_head."):
            torch.testing.assert_close(value_detached[k], value_control[k])
    assert policy_detached.keys() == policy_control.keys()
    for k in policy_control:
        torch.testing.assert_close(policy_detached[k], policy_control[k])
    agent = RLlibPPOAgent(SCENARIO, PPOParams(**{**RLLIB_ALGO, "critic_trains_encoder": False}), seed=SEED, model=MODEL)
    try:
        assert agent.algo.get_module().net.detach_critic
    finally:
        agent.close()


def test_rllib_ppo_critic_warmup_moves_only_the_value_head(ray_session):
    params = PPOParams(**{**RLLIB_ALGO, "critic_warmup_steps": 1024})  # two iterations of 512
    agent = RLlibPPOAgent(SCENARIO, params, seed=SEED, device="cpu", model=MODEL)
    learner_weights = agent.learner_weights

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
        return {k for k in a if not torch.equal(a[k], b[k])}

    try:
        start = learner_weights()
        serving = {k: v.clone() for k, v in agent.policy().model.state_dict().items()}
        fingerprint = agent.policy().fingerprint()
        warmup = [agent.train_iteration()["critic_only"] for _ in range(2)]
        warmed = learner_weights()
        # Only the value head learned; the policy that samples and serves scores as it started, and says so
        # (the training loop re-uses its evaluation).
        assert changed(start, warmed) and all(k.startswith("value_head.") for k in changed(start, warmed))
        assert all(k.startswith("value_head.") for k in changed(serving, agent.policy().model.state_dict()))
        assert agent.policy().fingerprint() == fingerprint
        assert warmup == [1.0, 1.0] and agent.train_iteration()["critic_only"] == 0.0
        # Past the warm-up PPO updates the policy too.
        assert any(k.startswith("encoder.") for k in changed(warmed, learner_weights()))
        assert agent.policy().fingerprint() != fingerprint
    finally:
        agent.close()
    with pytest.raises(ValueError, match="critic_warmup_steps"):
        PPOParams(critic_warmup_steps=-1)


@pytest.mark.parametrize("freeze", [True, False])
def test_rllib_ppo_frozen_history_encoder_keeps_the_warm_start(ray_session, freeze):
    # Treatment (frozen) against control (not), same seed: PPO moves the warm-started history
    # Transformer only in the control; the rest of the network learns in both.
    logs = {"log_users": 16, "log_steps": 40}
    params = PPOParams(**{**RLLIB_ALGO, "pretrain_epochs": 1, "freeze_history_encoder": freeze, **logs})
    agent = RLlibPPOAgent(SCENARIO, params, seed=SEED, device="cpu", model=MODEL)
    try:
        agent.train_iteration()  # the warm start, then one PPO update
        start = agent.learner_weights()
        agent.train_iteration()
        end = agent.learner_weights()
    finally:
        agent.close()
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    history = {k for k in changed if k.startswith("encoder.history.")}
    assert bool(history) != freeze, sorted(history)
    assert changed - history, "nothing but the history encoder learned"


def test_rllib_ppo_adapters_start_at_the_warm_start_and_train_only_themselves(ray_session):
    """Treatment (lora_rank 2) against control (full fine-tuning) on one seed: after the warm start both
    policies score the same observations alike (the adapters' B starts at zero); one PPO update then
    moves, in the treatment, the adapters and the value head only, every encoder weight as the warm
    start left it, and the policy with them; the control moves the encoder itself."""
    from envs import RecVectorEnv

    obs = {k: torch.as_tensor(v) for k, v in RecVectorEnv(8, SCENARIO, seed=1).reset(seed=1)[0].items()}
    logs = {"log_users": 16, "log_steps": 40}
    seen = {}
    for rank in (0, 2):
        params = PPOParams(**{**RLLIB_ALGO, "pretrain_epochs": 1, "lora_rank": rank, "lora_alpha": 4.0, **logs})
        agent = RLlibPPOAgent(SCENARIO, params, seed=SEED, device="cpu", model=MODEL)
        try:
            agent.pretrain()
            start = agent.learner_weights()
            with torch.no_grad():
                warm = agent.policy().model(obs)[0]
            agent.train_iteration()
            end = agent.learner_weights()
            with torch.no_grad():
                tuned = agent.policy().model(obs)[0]
            trainable = {k for k, w in agent.algo.get_module().net.named_parameters() if w.requires_grad}
        finally:
            agent.close()
        seen[rank] = start, end, warm, tuned, trainable
    (start0, end0, warm0, _, _), (start2, end2, warm2, tuned2, trainable) = seen[0], seen[2]
    torch.testing.assert_close(warm2, warm0, atol=1e-5, rtol=0)  # the same warm-started policy
    changed = {k for k in start2 if not torch.equal(start2[k], end2[k])}
    adapters = {k for k in start2 if k.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}
    assert adapters and {k for k in changed if k.endswith("lora_b")}
    assert {k for k in changed if k.startswith("encoder.")} <= adapters
    assert {k for k in trainable if k.startswith("encoder.")} == adapters
    assert any(k.startswith("value_head.") for k in changed)
    assert not torch.allclose(tuned2, warm2)  # the adapters moved the policy
    assert any(not torch.equal(start0[k], end0[k]) for k in start0 if k.startswith("encoder.history."))


@pytest.mark.parametrize(
    "algo,words",
    [
        ({"lora_rank": 4, "pretrain_epochs": 0}, "lora_rank fine-tunes the warm-started encoder"),
        ({"lora_rank": 4, "freeze_history_encoder": True}, "two ways to fine-tune the warm start"),
        ({"lora_rank": -1}, "lora_rank"),
        ({"lora_rank": 65}, r"lora_rank must be at most model.d_model = 64"),
        ({"lora_alpha": 0.0}, "lora_alpha"),
    ],
)
def test_adapters_the_run_cannot_take_are_one_line_before_any_run(algo, words):
    from experiments.core.settings import RunSettings

    with pytest.raises(ValueError, match=words) as error:
        RunSettings(agent="ppo", scenario="mixed", algo=algo)
    assert "\n" not in str(error.value)


def test_frozen_history_encoder_needs_the_warm_start():
    with pytest.raises(ValueError, match="freeze_history_encoder needs the warm start"):
        PPOParams(pretrain_epochs=0, freeze_history_encoder=True)
    with pytest.raises(ValueError, match="freeze_history_encoder must be true or false"):
        PPOParams(freeze_history_encoder="yes")


def test_rllib_ppo_gae_reads_the_values_stored_at_sampling(ray_session):
    # GAE's value pass takes each sampled row's value from sampling and runs the encoder only on the
    # rows RLlib appends to bootstrap from: the same values as a full pass, for a fraction of the rows.
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns

    agent = RLlibPPOAgent(SCENARIO, PPOParams(**RLLIB_ALGO), seed=SEED, device="cpu", model=MODEL)
    calls = []

    def spy(learner):
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        compute_values, encode_state = module.compute_values, module.net.encoder.encode_state
        encoded = []

        def counting_encode(obs):
            encoded.append(len(obs["context"]))
            return encode_state(obs)

        def values(batch, embeddings=None):
            if embeddings is not None:  # the loss: not the GAE pass
                return compute_values(batch, embeddings)
            encoded.clear()
            out = compute_values(batch)
            with torch.no_grad():
                full = module.net.value(encode_state(batch[Columns.OBS]))
            calls.append((out, full, batch[Columns.LOSS_MASK].bool(), list(encoded)))
            return out

        module.compute_values, module.net.encoder.encode_state = values, counting_encode

    try:
        agent.algo.learner_group.foreach_learner(spy)
        for _ in range(2):  # the second iteration samples with weights the first update changed
            agent.train_iteration()
    finally:
        agent.close()
    assert len(calls) == 2
    for out, full, acted, encoded in calls:
        torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
        assert encoded == [int((~acted).sum())] and 0 < encoded[0] < len(acted) // 4


def test_rllib_ppo_restored_into_a_live_agent_serves_the_snapshot(ray_session, tmp_path):
    # run.py --keep-best restores its best snapshot into the agent that trained past it.
    agent = RLlibPPOAgent(SCENARIO, PPOParams(**RLLIB_ALGO), seed=SEED, device="cpu", model=MODEL)
    try:
        agent.train_iteration()
        agent.save(tmp_path / "snapshot")
        snapshot = {k: v.clone() for k, v in agent.policy().model.state_dict().items()}
        steps = agent.env_steps
        agent.train_iteration()
        assert any(not torch.equal(snapshot[k], v) for k, v in agent.policy().model.state_dict().items())
        agent.restore(tmp_path / "snapshot")
        served = agent.policy().model.state_dict()
        assert all(torch.equal(snapshot[k], served[k]) for k in snapshot) and agent.env_steps == steps
    finally:
        agent.close()


@pytest.mark.parametrize("pretrain_epochs", [1, 0])
def test_sb3_ppo_warm_starts_its_encoder_like_rllib_ppo(pretrain_epochs):
    """Treatment (pretrain_epochs 1) against control (0), same seed: the warm-started encoder holds the
    pretrained weights when its first PPO update starts, the control's its own initial ones."""
    from agents.warm_start import pretrain_encoder

    logs = {"log_users": 16, "log_steps": 40}
    params = SB3PPOParams(**{**SB3_ALGO, "pretrain_epochs": pretrain_epochs, **logs})
    pretrained = pretrain_encoder(SCENARIO, dataclasses.replace(params, pretrain_epochs=1), MODEL, SEED)
    agent = SB3PPOAgent(SCENARIO, params, seed=SEED, device="cpu", model=MODEL)
    encoder = agent.model.policy.net.encoder
    initial = {k: v.clone() for k, v in encoder.state_dict().items()}
    seen = {}
    update = agent.model.train  # SB3's PPO update, after the rollout

    def first_update_sees_the_weights() -> None:
        if not seen:  # the weights as the first update starts
            seen.update({k: v.clone() for k, v in encoder.state_dict().items()})
        update()

    agent.model.train = first_update_sees_the_weights
    try:
        assert bool(agent.warm_start_pending) == bool(pretrain_epochs)
        metrics = agent.train_iteration()
        agent.train_iteration()  # a second iteration does not warm-start again
    finally:
        agent.close()
    same = all(torch.equal(seen[k], v) for k, v in pretrained.items())
    if pretrain_epochs:
        assert same and metrics["pretrain_s"] > 0 and not agent.warm_start_pending
        assert any(not torch.equal(initial[k], v) for k, v in pretrained.items())
    else:
        assert not same and np.isnan(metrics["pretrain_s"])
        assert all(torch.equal(seen[k], v) for k, v in initial.items())
