"""One user at a time: a plain `gymnasium.Env` over the batched core (N = 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from envs.config import ScenarioConfig, resolve_scenario
from envs.core import RecommenderCore


class RecEnv(gym.Env):
    """A recommendation session with one drifting user.

    ## Description

    Each step the platform retrieves `C` candidate items for the user (a seeded mix
    of popular, topic-near and uniform items, as a first-stage retriever would hand
    its ranker); the agent ranks them by showing a slate of `K` of them. The simulated
    user clicks at most one item (multinomial logit over the slate plus a no-click
    option, with position bias), watches part of it, and updates their hidden state:
    interests drift (seasons, social influence, satiation, reinforcement, novelty
    seeking, random walk, scheduled shocks, as the scenario enables), satisfaction
    follows how good the step felt, and the session budget shrinks. The user's true
    state is never observed; `ground_truth()` exposes it for evaluation.

    Sizes below: `H` = `env.history_len`, `C` = `env.num_candidates`, `K` =
    `env.slate_size`, `T` = `catalog.n_topics`, `I` = items in the catalog (initial
    items, arrivals and shock injections). Defaults: H=32, C=20, K=1, T=10.

    ## Action Space

    `Discrete(C)` when `K == 1`: the index of the candidate to show. Otherwise
    `MultiDiscrete([C] * K)`: candidate indices top to bottom. A repeated index in a
    slate is replaced, scanning left to right, by the lowest candidate index not yet
    in the slate (`envs.core.dedupe_slates`). Integral floats are accepted; an
    out-of-range index, a non-integral value or a wrong shape raises `ValueError`.

    ## Observation Space

    A `Dict` of `Box` spaces (no `Discrete`: SB3 would one-hot it); item features are
    static, so the history carries item ids only and a model looks their features up
    (`env.unwrapped.core.item_features`, [I, T + 4]).

    | Key                  | Shape        | Dtype   | Range      | Content                                    |
    |----------------------|--------------|---------|------------|--------------------------------------------|
    | `history_items`      | `(H,)`       | int32   | [0, I - 1] | past items, oldest first; 0 = padding      |
    | `history_features`   | `(H, 5)`     | float32 | [-1, 10]   | the user's response to each past item (1)  |
    | `history_mask`       | `(H,)`       | float32 | {0, 1}     | 1 = real entry; right-aligned, newest last |
    | `candidate_items`    | `(C,)`       | int32   | [0, I - 1] | this step's candidates (may repeat)        |
    | `candidate_features` | `(C, T + 4)` | float32 | [0, 1]     | static item features (2)                   |
    | `context`            | `(3,)`       | float32 | [-1, 1]    | season and episode progress now (3)        |

    (1) clicked (0 or 1), completion (fraction watched, [0, 1]), watch time in units of
        `catalog.length_mean` (capped at 10), season sin and cos when the item was shown.
    (2) topic mixture [T] (sums to 1), quality signal (noisy quality), attractiveness,
        length / `catalog.length_max`, popularity rank score (1 = most popular).
    (3) season sin and cos of the user's calendar time, episode progress step / `env.max_steps`.

    A history entry is the clicked item, or the top item of the slate when nothing was
    clicked (clicked = 0, completion = watch time = 0). The true interests, satiation,
    satisfaction and budget are never in the observation.

    ## Rewards

    Minutes watched this step: item length x completion (rising with topic fit and
    quality) x log-normal noise; 0 without a click.

    ## Starting State

    A fresh user drawn from the population: interests near a taste community's centre,
    a session budget ~ N(`users.budget_mean`, `users.budget_std`) minutes (at least 1),
    satisfaction `users.satisfaction_init`, no satiation, a random calendar offset
    (when `seasonal.random_offset`), an empty history (all mask 0) and a first set of
    candidates (topic-near ones anchored on a random topic until the first click).

    ## Episode End

    1. Termination: the budget is spent (every step costs `response.browse_cost` plus
       the watch time, less a refund for quality), or the user leaves (probability
       rising to `response.leave_max` as satisfaction falls below
       `response.leave_threshold`).
    2. Truncation: `env.max_steps` steps (default 100), unless terminated at that step.

    In lifetime scenarios (see below) the end of a session is not the end of the episode.

    `step()` after the end raises `RuntimeError`; call `reset()`.

    ## Arguments

    ```python
    >>> import gymnasium as gym, envs
    >>> env = gym.make("DriftRec-v0", scenario="cognitive", overrides={"env": {"slate_size": 3}})
    ```

    | Parameter     | Type                    | Default   | Description                                              |
    |---------------|-------------------------|-----------|----------------------------------------------------------|
    | `scenario`    | str or `ScenarioConfig` | `"mixed"` | preset name (`envs.PRESETS`) or a built config           |
    | `overrides`   | mapping or None         | None      | nested overrides applied to the preset (`make_scenario`) |
    | `config_file` | str or None             | None      | YAML file of overrides, applied before `overrides`       |
    | `seed`        | int or None             | None      | seed of every random stream; None draws one              |

    `overrides` or `config_file` next to a built `ScenarioConfig` raise `ValueError`.
    An unknown argument raises `TypeError`; an unknown or out-of-range config key
    raises `ValueError` naming it. `reset(seed=s)` restarts every random stream from
    `s` (same seed, same trajectories for the same actions); `reset()` draws a new
    user and continues the streams. `options` is unused.

    ## Vector version

    `gym.make_vec("DriftRec-v0", num_envs=N, vectorization_mode="vector_entry_point")`
    gives `RecVectorEnv`: N users stepped in one call, NEXT_STEP autoreset. This env
    is that batched core with N = 1: `RecEnv` seeded `s` follows exactly the same
    trajectory as `RecVectorEnv(num_envs=1)` seeded `s`.

    ## Info

    `reset()` returns `{}`. `step()` returns `clicked` (bool), `item` (int, the
    clicked item, -1 for none), `watch_time` (float, equals the reward) and `slate`
    (int32 array `(K,)`, the item ids shown, top first, after deduplication).
    Lifetime scenarios add `day` (float, the clock after the step), `session` (int, the
    session the next step belongs to), `session_end` (bool) and `gap` (float, days to the
    next visit when this step ended a session and the user returns, else -1).

    ## Lifetimes (`DriftRec-Lifetime-v0`, the `lifetime` preset)

    With `lifetime.enabled` an episode is one user's life over `lifetime.horizon_days`
    days (default 60) instead of one session. A step takes the minutes the user spent;
    when a session ends (budget spent, or the user left it), the user either churns
    (the episode terminates) or returns after a gap drawn from the return model
    (`simulator.lifetime`: sooner after satisfying sessions, later or never after
    clickbait letdowns), and the step after a session's last step is the first step of
    the next session. Between visits the drift families act on the days away (seasons by
    date, social pull and random walk over the gap, satiation fading, dated shocks).
    Truncation: the first session end on or after the horizon (or `env.max_steps` steps
    in the episode). The reward stays minutes watched, so the return is the user's
    lifetime watch time. The history (default `H` = 128) persists across sessions;
    `history_features` gains days ago (log-scaled, [0, 1]) and session start (0 or 1);
    `context` gains the day of the week (sin, cos), the days since the last visit
    (log-scaled) and the sessions so far (log-scaled), and its progress is day / horizon.

    ## Ground truth

    `ground_truth()` returns the hidden state (see `RecVectorEnv.ground_truth`, here
    without the leading user axis); `slate_fit(action)` the true fit of the slate an
    action would show now. For evaluation and analysis only: never give them to an agent.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: str | ScenarioConfig = "mixed",
        overrides: Mapping[str, Any] | None = None,
        config_file: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = resolve_scenario(scenario, overrides, config_file)
        self.core = RecommenderCore(self.config, 1, seed)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._done = False
        self._last_fit = np.full(self.config.env.slate_size, np.nan, np.float32)

    @property
    def world(self):
        """The simulator (ground truth lives here, not in the observation)."""
        return self.core.world

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.reseed(seed)
        else:
            self.core.reset_users(np.ones(1, dtype=bool))
        self._done = False
        self._last_fit = np.full(self.config.env.slate_size, np.nan, np.float32)
        return self._obs(), {}

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        slate = self.core.check_actions(self._batched(action))  # ValueError naming what is wrong
        items = self.core.slate_items(slate)
        result, reward, truncated = self.core.step(slate)
        terminated, trunc = bool(result.terminated[0]), bool(truncated[0])
        self._done = terminated or trunc
        self._last_fit = result.fit[0]
        info = {
            "clicked": bool(result.clicked[0]),
            "item": int(result.item[0]),
            "watch_time": float(result.watch_time[0]),
            "slate": items[0],
        }
        info.update({k: v[0].item() for k, v in self.core.lifetime_info(result).items()})
        return self._obs(), float(reward[0]), terminated, trunc, info

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Hidden state, never in the observation: for evaluation and analysis (copies).

        `RecVectorEnv.ground_truth` for the one user, without the user axis: interest [T],
        effective_interest [T], satiation [T], satisfaction, budget, step, calendar (numpy
        scalars), trend [T], fit [K] of the last served slate (NaN before the first step).
        """
        truth = self.world.ground_truth(user=0)
        truth["fit"] = self._last_fit.copy()
        return truth

    def slate_fit(self, action) -> np.ndarray:
        """[K] true topic fit of the slate `action` would show now, before stepping (see `RecVectorEnv.slate_fit`)."""
        return self.core.slate_fit(self.core.check_actions(self._batched(action)))[0]

    def _batched(self, action: Any) -> np.ndarray:
        """`action` as the core's batch of one user; a wrong shape is a ValueError naming the shape given
        and the one this env takes (the single env's, not the core's batched one)."""
        a = np.asarray(action)
        k = self.config.env.slate_size
        expected = () if k == 1 else (k,)
        if a.shape != expected and not (k == 1 and a.shape == (1,)):
            what = "a candidate index" if k == 1 else f"a slate of {k} candidate indices"
            raise ValueError(f"action must be {what}, shape {expected}, got shape {a.shape}")
        return a[None]

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observations().items()}
