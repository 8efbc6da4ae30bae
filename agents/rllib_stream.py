"""RLlib plumbing for the "stream" history (agents.stream): a train batch built in arrays.

RLlib's default learner pipeline for a stateful module (AddOneTsToEpisodesAndTruncate, time ranks,
states, batching, GAE) loops in Python over every episode, time step and nested key; with the
stream encoder's carried window as state it cost as much as the learner's update itself.
:func:`train_batch_connector` replaces the whole pipeline with one connector that does the same in
array operations:

- each episode chunk of n steps becomes n + 1 rows (its last observation appended, loss mask off:
  the value to bootstrap from), split into sequences of ``max_seq_len`` rows, zero-padded into
  ``[B, T, ...]`` with ``seq_lens`` and the carried window at each sequence's start as STATE_IN
  (the initial state where the episode began, else the STATE_OUT of the step before);
- GAE from the values kept at sampling (VF_PREDS), the bootstrap rows valued by one causal pass
  that reads out only those rows; advantages standardised over the batch, as RLlib does.

The result is the batch RLlib's PPO loss reads (OBS, STATE_IN, ACTIONS, ACTION_LOGP,
ACTION_DIST_INPUTS, ADVANTAGES, VALUE_TARGETS, LOSS_MASK, SEQ_LENS), as tensors on the learner's
device. tests/test_stream.py checks it against RLlib's own pipeline on the same episodes.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np

STAGGER_STREAM = 0x57A6  # the burn-in's ages come from their own random stream, keyed by the runner's seed
WORLD_STREAM = 0x3071D  # the seeds of the worlds a runner starts afresh (algo.world_refresh_steps), keyed likewise


def _episode_arrays(episode: Any, state_key: str, initial: dict[str, np.ndarray]) -> dict[str, Any]:
    """One numpy'd episode chunk -> its arrays: obs (n + 1 rows), actions, rewards, logp, dist inputs,
    values (n rows), per-step states (n rows) and the state before its first step."""
    from ray.rllib.core.columns import Columns

    n = len(episode)
    obs = episode.get_observations(slice(0, n + 1))
    states = episode.get_extra_model_outputs(key=state_key)
    if episode.t_started == 0:
        before = initial
    else:
        before = episode.get_extra_model_outputs(key=state_key, indices=-1, neg_index_as_lookback=True)
    return dict(
        obs=obs,
        actions=np.asarray(episode.get_actions()),
        rewards=np.asarray(episode.get_rewards(), dtype=np.float32),
        logp=np.asarray(episode.get_extra_model_outputs(key=Columns.ACTION_LOGP), dtype=np.float32),
        dist=np.asarray(episode.get_extra_model_outputs(key=Columns.ACTION_DIST_INPUTS), dtype=np.float32),
        values=np.asarray(episode.get_extra_model_outputs(key=Columns.VF_PREDS), dtype=np.float32),
        states=states,
        before=before,
        terminated=bool(episode.is_terminated),
    )


def advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    last_value: np.ndarray,
    steps: np.ndarray,
    gamma: float | np.ndarray,
    lambda_: float,
) -> np.ndarray:
    """GAE over chunks side by side: rewards, values [E, L] (zero past each chunk's `steps` [E]),
    last_value [E] the value after the last step (0 where the episode terminated), gamma a number or
    [E, L], the discount from each step to the next -> advantages [E, L]:

        delta_t = r_t + gamma_t V_{t+1} - V_t,   A_t = delta_t + gamma_t lambda A_{t+1}.
    """
    e, length = rewards.shape
    rows = np.arange(e)
    gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (e, length))
    following = values.astype(np.float64)
    following[:, :-1] = values[:, 1:]
    following[rows, np.maximum(steps - 1, 0)] = last_value  # the value after each chunk's last step
    delta = rewards + gamma * following - values
    out = np.zeros(delta.shape, dtype=np.float64)
    running = np.zeros(e, dtype=np.float64)
    for t in range(length - 1, -1, -1):
        inside = t < steps
        running = np.where(inside, delta[:, t] + gamma[:, t] * lambda_ * running, 0.0)
        out[:, t] = running
    return out


def calendar_discounts(
    progress: np.ndarray, steps: np.ndarray, horizon_days: float, gamma_per_day: float
) -> np.ndarray:
    """Discounts over calendar time: progress [E, L + 1] (the observations' day / horizon, before each
    step and after the last) -> [E, L] gamma_per_day ** (days from step t's observation to the next),
    so a return visit weeks later counts as weeks, not as one step."""
    days = np.diff(progress.astype(np.float64) * horizon_days, axis=1)
    inside = np.arange(days.shape[1])[None, :] < steps[:, None]
    return np.where(inside, gamma_per_day ** np.maximum(days, 0.0), 0.0)


def train_batch_connector(
    gamma: float, lambda_: float, gamma_per_day: float = 0.0, horizon_days: float = 0.0, progress_column: int = -1
):
    """The learner connector (a ConnectorV2 class, built lazily: importing ray is slow). With
    `gamma_per_day` > 0 (lifetimes) the discount between two steps is gamma_per_day to the days between
    their observations (context column `progress_column` is day / `horizon_days`) instead of `gamma`."""
    import torch
    from ray.rllib.connectors.connector_v2 import ConnectorV2
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    from agents.stream import CarriedWindow

    class StreamTrainBatch(ConnectorV2):
        """Episodes -> PPO's train batch for a "stream" module, in array operations (module docstring)."""

        def __call__(self, *, rl_module, batch, episodes, shared_data=None, **kwargs):
            module = rl_module[DEFAULT_MODULE_ID]
            module = module.unwrapped() if hasattr(module, "unwrapped") else module
            seq = int(module.model_config["max_seq_len"])
            initial = {k: np.asarray(v) for k, v in module.get_initial_state().items()}
            chunks = [_episode_arrays(e, Columns.STATE_OUT, initial) for e in episodes if len(e)]
            rows = np.array([len(c["actions"]) + 1 for c in chunks])  # + the bootstrap row
            pieces = -(-rows // seq)  # sequences per chunk
            n_seq = int(pieces.sum())
            chunk_of = np.repeat(np.arange(len(chunks)), pieces)
            first_piece = np.cumsum(pieces) - pieces
            piece_index = np.arange(n_seq) - first_piece[chunk_of]
            begin = piece_index * seq  # first row of each sequence within its chunk
            lengths = np.minimum(rows[chunk_of] - begin, seq)

            # Flat rows (chunk by chunk, n + 1 each) -> [sequence, time] slots.
            offsets = np.cumsum(rows) - rows
            flat_chunk = np.repeat(np.arange(len(chunks)), rows)
            flat_t = np.arange(rows.sum()) - offsets[flat_chunk]
            flat_seq = first_piece[flat_chunk] + flat_t // seq
            flat_slot = flat_t % seq
            step = flat_t < rows[flat_chunk] - 1  # a sampled step (not the bootstrap row)

            def padded(values: np.ndarray, fill: float = 0) -> np.ndarray:
                out = np.full((n_seq, seq, *values.shape[1:]), fill, dtype=values.dtype)
                out[flat_seq, flat_slot] = values
                return out

            def stepped(key: str) -> np.ndarray:  # per-step columns, a zero row at each bootstrap slot
                parts = []
                for c in chunks:
                    v = c[key]
                    parts += [v, np.zeros((1, *v.shape[1:]), dtype=v.dtype)]
                return np.concatenate(parts)

            obs = {k: padded(np.concatenate([c["obs"][k] for c in chunks])) for k in chunks[0]["obs"]}
            # The carried window before each sequence: the chunk's initial one, or the state after its
            # previous step.
            step_offsets = np.cumsum(rows - 1) - (rows - 1)
            after_previous = np.maximum(step_offsets[chunk_of] + begin - 1, 0)  # the step before each sequence
            opens = piece_index == 0
            state_in = {}
            for k in initial:
                before = np.stack([c["before"][k] for c in chunks])[chunk_of]
                later = np.concatenate([c["states"][k] for c in chunks])[after_previous]  # per step, chunk by chunk
                state_in[k] = np.where(opens.reshape(-1, *[1] * (before.ndim - 1)), before, later)

            device = next(module.parameters()).device
            tensor = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
            loss_mask = padded(step, False)
            seq_lens = lengths.astype(np.int32)
            obs_t = {k: tensor(v) for k, v in obs.items()}
            state_t = {k: tensor(v) for k, v in state_in.items()}

            # Bootstrap values: one pass reading out only each chunk's appended last row.
            last = np.zeros((n_seq, seq), dtype=bool)
            last_rows = offsets + rows - 1
            last[flat_seq[last_rows], flat_slot[last_rows]] = True
            with torch.no_grad():
                window = CarriedWindow.from_state(state_t)
                state = module.net.encoder.history.read(window, obs_t, tensor(last)).state
                last_value = module.net.value(state[tensor(last)]).float().cpu().numpy()
            terminated = np.array([c["terminated"] for c in chunks])

            # GAE per chunk, side by side, standardised over the sampled steps. (RLlib's pipeline also
            # counts its appended rows, whose GAE runs on into the next episode of the batch: loss-masked
            # rows that only shift the statistics; here they get advantage 0 and value target 0.)
            steps = rows - 1
            longest = int(steps.max()) if len(steps) else 0
            grid = lambda key: np.stack([np.pad(c[key], (0, longest - len(c[key]))) for c in chunks])  # noqa: E731
            values = grid("values")
            discount = gamma
            if gamma_per_day > 0:
                progress = np.stack(
                    [
                        np.pad(
                            c["obs"]["context"][:, progress_column],
                            (0, longest + 1 - len(c["obs"]["context"])),
                            mode="edge",
                        )
                        for c in chunks
                    ]
                )
                discount = calendar_discounts(progress, steps, horizon_days, gamma_per_day)
            adv = advantages(grid("rewards"), values, np.where(terminated, 0.0, last_value), steps, discount, lambda_)
            inside = np.arange(longest)[None, :] < steps[:, None]
            flat_adv = np.zeros(int(rows.sum()), dtype=np.float32)
            flat_target = np.zeros(int(rows.sum()), dtype=np.float32)
            sampled = adv[inside]
            flat_adv[step] = (sampled - sampled.mean()) / max(1e-4, sampled.std())
            flat_target[step] = (adv + values)[inside]

            module_batch = {
                Columns.OBS: obs_t,
                Columns.STATE_IN: state_t,
                Columns.ACTIONS: tensor(padded(stepped("actions"))),
                Columns.ACTION_LOGP: tensor(padded(stepped("logp"))),
                Columns.ACTION_DIST_INPUTS: tensor(padded(stepped("dist"))),
                Columns.VF_PREDS: tensor(padded(stepped("values"))),
                Postprocessing.ADVANTAGES: tensor(padded(flat_adv)),
                Postprocessing.VALUE_TARGETS: tensor(padded(flat_target)),
                Columns.LOSS_MASK: tensor(loss_mask),
                Columns.SEQ_LENS: tensor(seq_lens),
            }
            if shared_data is not None:
                shared_data[f"_zero_padded_for_mid={DEFAULT_MODULE_ID}"] = True
            return {DEFAULT_MODULE_ID: module_batch}

    return StreamTrainBatch


def env_runner_class(stagger_steps: int = 0, world_refresh_steps: int = 0):
    """RLlib's SingleAgentEnvRunner sampling the vector env in arrays (a class, built lazily).

    The default runner splits every observation into N per-user items and back, keeps each user's
    carried state in its episode and batches it again through the env-to-module connectors: for a
    stateful module on 64 users that Python work cost more than the model. This runner keeps the
    observations, the carried windows (agents.stream.CarriedWindow) and the step records as [N, ...]
    arrays, calls the module once per step on the whole batch (the stream's cache makes that one
    new token per user), samples actions from the module's own action distribution, and builds the
    episode chunks RLlib's learner and metrics read only at the end of the fragment. Episode
    callbacks are not called (driftrec registers none). Anything else (episodes instead of a
    number of timesteps, random actions) is sampled by the default runner.

    With `stagger_steps` > 0 the runner's first sample starts with a burn-in: each slot's user lives
    a uniform 0 .. stagger_steps steps under the policy, unrecorded (a slot restarts with a new user
    stagger_steps - age steps in, by Gymnasium's partial reset), so the first train batches mix users
    of every age instead of N lives started together, whose batches would move from young lives to
    old ones as the run goes on. Those steps are sampled, not learned from, and not counted.

    With `world_refresh_steps` > 0 the runner's world starts afresh once it has stepped that many times
    (each step moves every slot's user once; checked where a fragment starts): the env is reset with the
    next seed of the runner's own sequence (:func:`world_seed`), so the population's state (the catalog's
    popularity, the social trend) and every user are those of a new world, as in each evaluation, instead
    of a world aged by everything the policy has served since the run began. The open lives are cut there:
    their last chunks, already handed out as ongoing, bootstrap from the critic's value as any fragment's end
    does. The new world's burn-in runs again.
    """
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode
    from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
    from ray.rllib.utils.metrics import ENV_STEP_TIMER

    from agents.stream import CarriedWindow

    class BatchedEnvRunner(SingleAgentEnvRunner):
        """Samples RecVectorEnv (through its reward-scaling wrapper) in arrays; see env_runner_class."""

        _live = None  # what carries over between sample() calls: obs, carried windows, open episodes
        _world_steps = 0  # steps of the current world (every slot once per step)
        _worlds = 0  # worlds started afresh before the current one

        def _sample(self, *, num_timesteps=None, num_episodes=None, explore, random_actions=False, force_reset=False):
            if num_timesteps is None or random_actions:
                self._live = None
                return super()._sample(
                    num_timesteps=num_timesteps,
                    num_episodes=num_episodes,
                    explore=explore,
                    random_actions=random_actions,
                    force_reset=force_reset,
                )
            module = self.module
            n = self.num_envs
            refresh = bool(world_refresh_steps) and self._live is not None and self._world_steps >= world_refresh_steps
            if force_reset or self._needs_initial_reset or self._live is None or refresh:
                first = self._needs_initial_reset
                if refresh:
                    self._worlds += 1
                seed = self._seed if first else (world_seed(self._seed, self._worlds) if refresh else None)
                obs, _ = self._try_env_reset(seed=seed, options=None)
                self._world_steps = 0
                self._needs_initial_reset = False
                self._ongoing_episodes_for_metrics.clear()
                fresh = module.fresh_window(n)
                self._live = dict(
                    obs=obs,
                    window=fresh,
                    resetting=np.zeros(n, dtype=bool),
                    ids=[SingleAgentEpisode().id_ for _ in range(n)],
                    t=np.zeros(n, dtype=np.int64),
                    before={k: v.numpy().copy() for k, v in fresh.as_state().items()},
                )
                if (first or refresh) and stagger_steps:
                    self._stagger(self._live, explore)
            live = self._live
            records, ts = [], 0
            while ts < num_timesteps:
                record = self._advance(live, explore)
                records.append(record)
                ts += int(record["acting"].sum())
            done, ongoing = self._episodes(records, live)
            self._done_episodes_for_metrics.extend(done)
            for chunk in ongoing:
                self._ongoing_episodes_for_metrics[chunk.id_].append(chunk)
            self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
            self._increase_sampled_metrics(ts, len(done))
            return done + ongoing

        def _advance(self, live: dict, explore: bool) -> dict:
            """One step of every slot from `live` (updated in place) -> the step's record."""
            acting = ~live["resetting"]
            self._world_steps += 1
            out = self.module.sample_step(live["obs"], live["window"], explore)
            with self.metrics.log_time(ENV_STEP_TIMER):
                # self.env.env: under RLlib's DictInfoToList, so infos stay arrays
                next_obs, rewards, terminated, truncated, _ = self.env.env.step(out["actions"])
            record = dict(
                obs=live["obs"],
                acting=acting,
                rewards=np.asarray(rewards, dtype=np.float32),
                terminated=np.asarray(terminated, dtype=bool),
                truncated=np.asarray(truncated, dtype=bool),
                **{k: v for k, v in out.items() if k != "window"},
                window={k: v.numpy() for k, v in out["window"].as_state().items()},
            )
            # A slot reset at this step starts a new user from a fresh window; a slot whose user
            # ended at this step is reset at the next (NEXT_STEP autoreset).
            live["window"] = self._fresh_rows(out["window"], live["resetting"])
            live["resetting"] = (record["terminated"] | record["truncated"]) & acting
            live["obs"] = next_obs
            return record

        def _fresh_rows(self, window: CarriedWindow, rows: np.ndarray) -> CarriedWindow:
            """`window` with the slots in `rows` [N] bool replaced by fresh (empty) windows."""
            if not rows.any():
                return window
            return window.where(torch.as_tensor(~rows), self.module.fresh_window(self.num_envs))

        def _stagger(self, live: dict, explore: bool) -> None:
            """The burn-in of the class docstring: slot i's user has lived ages[i] steps (fewer where
            a user ended on the way and the slot went on with the next) when sampling starts."""
            n = self.num_envs
            key = [int(self._seed or 0), STAGGER_STREAM] + ([self._worlds] if self._worlds else [])
            rng = np.random.default_rng(np.random.SeedSequence(key))
            ages = rng.integers(0, stagger_steps + 1, size=n)
            lived = np.zeros(n, dtype=np.int64)
            for k in range(stagger_steps):
                restart = ages == stagger_steps - k
                if k and restart.any():
                    live["obs"], _ = self.env.env.reset(options={"reset_mask": restart})
                    live["window"] = self._fresh_rows(live["window"], restart)
                    live["resetting"] = live["resetting"] & ~restart
                    lived[restart] = 0
                acting = ~live["resetting"]
                self._advance(live, explore)
                lived = np.where(acting, lived + 1, 0)
            live["t"] = lived
            live["ids"] = [SingleAgentEpisode().id_ for _ in range(n)]
            live["before"] = {k: v.numpy().copy() for k, v in live["window"].as_state().items()}

        def sampling_state(self) -> dict:
            """What sampling continues from: the vector env itself (its users, histories, candidates and
            random streams), each slot's carried window and open episode, and the global torch and numpy
            random states (actions, minibatch shuffles). A checkpoint keeps it, so a resumed run continues
            the very trajectories it left, as the uninterrupted run does."""
            env = self.env.unwrapped
            spec, env.spec = env.spec, None  # gym's registration (lambdas) stays out of the pickle
            try:
                data = pickle.dumps(env)
            finally:
                env.spec = spec
            return dict(
                env=data,
                live=None if self._live is None else copy.deepcopy(self._live),
                needs_initial_reset=self._needs_initial_reset,
                world_steps=self._world_steps,
                worlds=self._worlds,
                torch_rng=torch.get_rng_state(),
                numpy_rng=np.random.get_state(),
            )

        def load_sampling_state(self, state: dict) -> None:
            """Continue from a :meth:`sampling_state`: the vector env under RLlib's wrappers is replaced."""
            env = pickle.loads(state["env"])
            env.spec = self.env.unwrapped.spec
            wrapper = self.env
            while wrapper.env is not self.env.unwrapped:
                wrapper = wrapper.env
            wrapper.env = env
            self._live = state["live"]
            self._needs_initial_reset = state["needs_initial_reset"]
            self._world_steps = state.get("world_steps", 0)  # absent from checkpoints written before refreshes
            self._worlds = state.get("worlds", 0)
            self.module._cache = None  # rebuilt from the carried windows
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])

        def _episodes(self, records: list[dict], live: dict) -> tuple[list, list]:
            """The fragment's step records [K] of [N] -> (finished episode chunks, ongoing chunks).

            A slot's steps split into chunks at its resets: a chunk is a run of acting steps, its
            observations those before each step and the one after the last."""
            space_obs, space_act = self.env.single_observation_space, self.env.single_action_space
            stack = lambda key: np.stack([r[key] for r in records])  # noqa: E731  [K, N, ...]
            obs = {k: np.stack([r["obs"][k] for r in records] + [live["obs"][k]]) for k in live["obs"]}
            acting, term, trunc = stack("acting"), stack("terminated"), stack("truncated")
            columns = {
                Columns.ACTIONS: stack("actions"),
                Columns.ACTION_LOGP: stack("logp"),
                Columns.ACTION_DIST_INPUTS: stack("dist"),
                Columns.VF_PREDS: stack("values"),
            }
            rewards = stack("rewards")
            states = {k: np.stack([r["window"][k] for r in records]) for k in records[0]["window"]}
            initial = {k: v.numpy()[0] for k, v in self.module.fresh_window(1).as_state().items()}
            k_steps = len(records)
            done, ongoing = [], []
            for i in range(self.num_envs):
                start = 0
                while start < k_steps:
                    if not acting[start, i]:  # the reset step of a new user: the chunk starts after it
                        live["ids"][i] = SingleAgentEpisode().id_
                        live["t"][i] = 0
                        live["before"] = _set_row(live["before"], i, initial)
                        start += 1
                        continue
                    ends = np.flatnonzero(term[start:, i] | trunc[start:, i])  # only acting steps end
                    stop = start + int(ends[0]) + 1 if len(ends) else k_steps
                    finished = bool(term[stop - 1, i] or trunc[stop - 1, i])
                    steps = slice(start, stop)
                    state = {k: v[steps, i] for k, v in states.items()}
                    before = {k: v[i] for k, v in live["before"].items()}
                    episode = SingleAgentEpisode(
                        id_=live["ids"][i],
                        observations=InfiniteLookbackBuffer({k: v[start : stop + 1, i] for k, v in obs.items()}, 0),
                        observation_space=space_obs,
                        infos=[{} for _ in range(stop - start + 1)],
                        actions=InfiniteLookbackBuffer(columns[Columns.ACTIONS][steps, i], 0),
                        action_space=space_act,
                        rewards=InfiniteLookbackBuffer(rewards[steps, i], 0),
                        terminated=bool(term[stop - 1, i]),
                        truncated=bool(trunc[stop - 1, i]),
                        extra_model_outputs={
                            **{
                                k: InfiniteLookbackBuffer(v[steps, i], 0)
                                for k, v in columns.items()
                                if k != Columns.ACTIONS
                            },
                            Columns.STATE_OUT: InfiniteLookbackBuffer(
                                {k: np.concatenate([before[k][None], state[k]]) for k in state}, 1
                            ),
                        },
                        t_started=int(live["t"][i]),
                        len_lookback_buffer=0,
                    )
                    live["t"][i] += stop - start
                    live["before"] = _set_row(live["before"], i, {k: v[-1] for k, v in state.items()})
                    (done if finished else ongoing).append(episode)
                    start = stop
            return done, ongoing

    return BatchedEnvRunner


def world_seed(runner_seed: int | None, world: int) -> int:
    """The seed of the `world`-th world (1, 2, ...) a runner seeded `runner_seed` starts afresh."""
    return int(np.random.SeedSequence([int(runner_seed or 0), WORLD_STREAM, world]).generate_state(1)[0] >> 1)


def _set_row(arrays: dict[str, np.ndarray], row: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for key, value in values.items():
        arrays[key][row] = value
    return arrays
