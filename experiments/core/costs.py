"""What a run will cost in memory, estimated before it starts: every size that decides memory (the users
of each evaluation, the final one's included, the users the training env steps at once, the samples a
training iteration holds, the logs a warm start collects) is checked against this machine, so that a size
too large is one line naming the flag or setting, not a training run lost to the final evaluation's
MemoryError.

The estimates are the simulator's and the env's own (World and RecommenderCore check the same bytes when
they are built) plus the policy network's forward pass over a batch of users (measured: the default
encoder serves lifetime users at 256 KB each, d_model 128 at 514 KB; sessions of 32 steps at 80 KB).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envs.config import ScenarioConfig
from envs.core import env_bytes_per_user, observation_bytes
from experiments.core.devices import resolve_device
from simulator.params import check_memory
from simulator.world import world_bytes_per_user

# The settings fields (of any agent's `algo:`) that decide memory, by what they count:
USERS_AT_ONCE = ("num_envs", "num_envs_per_env_runner", "log_users")  # users an env steps side by side
SAMPLES_HELD = ("train_batch_size",)  # observations an iteration holds (SB3: num_envs x n_steps)
LEARNER_BATCH = ("minibatch_size", "batch_size")  # observations one gradient step runs forward and back
LEARNING_FACTOR = 3.0  # a training forward keeps its activations for the backward pass, and the gradients


def serve_bytes_per_user(scenario: ScenarioConfig, model: Mapping[str, Any]) -> float:
    """Bytes the policy network's forward pass takes per user of a batch (no gradients): the token
    activations of the history and the candidates through a block, and a stream encoder's cached keys
    and values. `model`: the EncoderConfig overrides (the agents' defaults under them)."""
    from agents.model import DEFAULT_MODEL

    m = {**DEFAULT_MODEL, **model}
    d, h, c = int(m["d_model"]), scenario.env.history_len + 1, scenario.env.num_candidates
    per_user = 4.0 * d * ((6 + int(m["ff_mult"])) * h + 3 * c)
    if m.get("history_mode") == "stream":
        per_user += 8.0 * int(m["n_layers"]) * h * d
    return per_user


def evaluation_bytes(scenario: ScenarioConfig, users: int, model: Mapping[str, Any] | None) -> float:
    """Bytes an evaluation of `users` users side by side takes: the world, the env and, for a policy with a
    network (`model` not None), its forward pass over all of them at once."""
    per_user = world_bytes_per_user(scenario.world) + env_bytes_per_user(scenario)
    if model is not None:
        per_user += serve_bytes_per_user(scenario, model)
    return float(users) * per_user


def check_evaluation_memory(flag: str, users: int, scenario: ScenarioConfig, model: Mapping[str, Any] | None) -> None:
    """ValueError naming `flag` when an evaluation of `users` users would not fit in this machine's memory."""
    check_memory(
        f"{flag} {users:,}: an evaluation of {users:,} users side by side", evaluation_bytes(scenario, users, model)
    )


def check_run_memory(settings: Any) -> None:
    """Every size of a run (RunSettings) that decides memory, against this machine: ValueError naming the
    flag or setting of the first that would not fit. Run before any directory is made or anything built."""
    scenario = settings.scenario_config()
    model = dict(settings.model) if settings.spec.uses_device else None
    check_evaluation_memory("--final-eval-users", settings.final_eval_users, scenario, model)
    if settings.spec.trains:
        check_evaluation_memory("--eval-users", settings.eval_users, scenario, model)
    params = settings.params
    if params is None:
        return
    if hasattr(params, "for_device"):  # sizes left None are the device's (PPOParams.for_device): check those
        params = params.for_device(
            resolve_device(settings.device, quiet=True), calendar=scenario.world.lifetime.enabled
        )
    sizes = (*USERS_AT_ONCE, *SAMPLES_HELD, *LEARNER_BATCH)
    values = {f: getattr(params, f) for f in sizes if getattr(params, f, None) is not None}
    for name in USERS_AT_ONCE:
        if name in values:
            check_evaluation_memory(f"algo.{name}", values[name], scenario, model)
    obs = observation_bytes(scenario)
    held = dict(values, **({"n_steps": params.num_envs * params.n_steps} if hasattr(params, "n_steps") else {}))
    for name in (*SAMPLES_HELD, "n_steps"):
        if name in held:
            what = "num_envs x n_steps" if name == "n_steps" else name
            check_memory(f"algo.{what} = {held[name]:,} samples held per iteration", 2.0 * held[name] * obs)
    if model is not None:
        for name in LEARNER_BATCH:
            if name in values:
                per = obs + LEARNING_FACTOR * serve_bytes_per_user(scenario, model)
                check_memory(f"algo.{name} = {values[name]:,} samples per gradient step", values[name] * per)
