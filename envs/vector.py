"""N users stepped in one call: a native `gymnasium.vector.VectorEnv` (NEXT_STEP autoreset)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.config import ScenarioConfig, resolve_scenario
from envs.core import RecommenderCore


class RecVectorEnv(VectorEnv):
    """`num_envs` recommendation sessions over one batched simulator, stepped in one call.

    ## Description

    The vector form of `RecEnv` (see its docstring for the dynamics): slot `i` holds
    one simulated user at a time; every `step()` shows all N users a slate and
    advances them together. The slots are one population, not N independent copies:
    they share the batch's random streams, and with the social family on, users
    influence their neighbours in the social graph. Each step draws the same random
    numbers whatever the actions, so two policies on the same seed face the same
    users and noise (common random numbers).

    Sizes: `N` = `num_envs`; `H`, `C`, `K`, `T`, `I` as in `RecEnv`.

    ## Action Space

    `batch_space` of `RecEnv`'s: `MultiDiscrete([C] * N)` (shape `(N,)`; `(N, 1)` is
    also accepted) when `K == 1`, else `MultiDiscrete` of shape `(N, K)`: candidate
    indices per slot, top to bottom. Repeats in a slate are deduplicated as in
    `RecEnv`. The action of a slot being reset (see below) is ignored, but its shape is
    still checked. Bad actions raise `ValueError` naming the problem.

    ## Observation Space

    `batch_space` of `RecEnv`'s `Dict`: every key gains a leading axis N.

    | Key                  | Shape           | Dtype   | Range      |
    |----------------------|-----------------|---------|------------|
    | `history_items`      | `(N, H)`        | int32   | [0, I - 1] |
    | `history_features`   | `(N, H, 5)`     | float32 | [-1, 10]   |
    | `history_mask`       | `(N, H)`        | float32 | {0, 1}     |
    | `candidate_items`    | `(N, C)`        | int32   | [0, I - 1] |
    | `candidate_features` | `(N, C, T + 4)` | float32 | [0, 1]     |
    | `context`            | `(N, 3)`        | float32 | [-1, 1]    |

    ## Rewards

    `(N,)` float32: minutes watched per slot this step; 0 for a slot being reset.

    ## Starting State

    As in `RecEnv`, for every slot at `reset()`, and for one slot at its autoreset.

    ## Episode End

    Per slot, as in `RecEnv`: `terminated` (budget spent or the user left) and
    `truncated` (`env.max_steps` reached), each `(N,)` bool.

    ## Autoreset (NEXT_STEP, what RLlib expects)

    The step after a slot's episode ended resets that slot: its action is ignored, it
    returns the new user's first observation with reward 0, terminated and truncated
    False, and `info["served"]` False. The other slots step normally in the same call.
    (For the simulator's common random numbers, the finished user is stepped once more
    and discarded.)

    ## Arguments

    ```python
    >>> import gymnasium as gym, envs
    >>> vec = gym.make_vec("DriftRec-v0", num_envs=4096, vectorization_mode="vector_entry_point",
    ...                    scenario="mixed", seed=0)
    ```

    | Parameter     | Type                    | Default   | Description                                              |
    |---------------|-------------------------|-----------|----------------------------------------------------------|
    | `num_envs`    | int                     | 16        | N, users stepped per call                                |
    | `scenario`    | str or `ScenarioConfig` | `"mixed"` | preset name (`envs.PRESETS`) or a built config           |
    | `overrides`   | mapping or None         | None      | nested overrides applied to the preset (`make_scenario`) |
    | `config_file` | str or None             | None      | YAML file of overrides, applied before `overrides`       |
    | `seed`        | int or None             | None      | seed of every random stream; None draws one              |
    | `threads`     | int or None             | 1         | threads building observations; None: one per core        |

    An unknown argument raises `TypeError` (so does a misspelled one passed through
    `gym.make_vec`); an unknown or out-of-range config key raises `ValueError` naming it.
    `reset(seed=s)` restarts every random stream (users, noise, candidates, social graph)
    from `s`; `reset()` draws new users for all slots and continues the streams;
    `reset(options={"reset_mask": mask})` (Gymnasium's partial reset, bool `(N,)`) draws new users
    for the masked slots only and clears their pending autoreset, the other slots unchanged.
    `RecEnv` seeded `s` equals this env with `num_envs=1` seeded `s`; slot `i` of a larger env is
    not a single env with any seed. `threads` changes no number: with 2 or more (None: one per core
    the process may use, at most OMP_NUM_THREADS) a large env builds its observations in blocks of
    users on that many threads (`envs.parallel`). The default, 1, keeps them on the calling thread:
    RLlib env runners, SB3 and test workers run envs side by side in processes of their own, and on
    a loaded machine a block waits for a core.

    ## Info

    `reset()` returns `{}`. `step()` returns a dict of arrays with leading axis N (one
    entry per slot, so RLlib's `DictInfoToList` can split it), about what was served
    and how the user responded; nothing of the hidden user state:

    | Key          | Shape    | Dtype   | Meaning                                                             |
    |--------------|----------|---------|---------------------------------------------------------------------|
    | `served`     | `(N,)`   | bool    | False for a slot reset this step (its action was ignored)           |
    | `slate`      | `(N, K)` | int32   | item ids shown, top first, after deduplication; -1 where not served |
    | `clicked`    | `(N,)`   | bool    | the user clicked an item                                            |
    | `position`   | `(N,)`   | int     | slate position clicked, -1 for none (or not served)                 |
    | `item`       | `(N,)`   | int32   | item clicked, -1 for none (or not served)                           |
    | `watch_time` | `(N,)`   | float32 | minutes watched (equals the reward)                                 |
    | `completion` | `(N,)`   | float32 | fraction of the clicked item watched, 0 for none                    |

    Lifetime scenarios add `day` `(N,)` float64 (the clock after the step), `session` `(N,)`
    int32 (the session the next step belongs to), `session_end` `(N,)` bool and `gap` `(N,)`
    float64 (days to the next visit after a session that ended, -1 otherwise); for a slot
    reset this step they describe its new user.

    ## Ground truth

    `ground_truth()` (hidden state after the last step) and `slate_fit(actions)` (true
    fit of the slates the actions would show now) are for evaluation and analysis,
    e.g. `experiments.core.harness.evaluate`: never give them to an agent.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 16,
        scenario: str | ScenarioConfig = "mixed",
        overrides: Mapping[str, Any] | None = None,
        config_file: str | None = None,
        seed: int | None = None,
        threads: int | None = 1,
    ) -> None:
        self.config = resolve_scenario(scenario, overrides, config_file)
        self.num_envs = int(num_envs)
        self.core = RecommenderCore(self.config, self.num_envs, seed, threads)
        self.single_observation_space = self.core.single_observation_space
        self.single_action_space = self.core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._last_fit = self._no_fit()

    @property
    def world(self):
        """The simulator (ground truth lives here, not in the observation)."""
        return self.core.world

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        mask = self._reset_mask(options)
        if mask is not None:  # some slots only: the others keep their users and observations
            if seed is not None:
                raise ValueError("reset: seed restarts every slot's streams; it cannot go with options['reset_mask']")
            self.core.reset_users(mask)
            self._autoreset[mask] = False
            self._last_fit[mask] = np.nan
            return self.core.observations(), {}
        if seed is not None:
            self.core.reseed(seed)
        else:
            self.core.reset_users(np.ones(self.num_envs, dtype=bool))
        self._autoreset[:] = False
        self._last_fit = self._no_fit()
        return self.core.observations(), {}

    def _reset_mask(self, options: Mapping[str, Any] | None) -> np.ndarray | None:
        """Gymnasium's partial reset, `options={"reset_mask": mask}` (bool [N]), checked; None for a full reset."""
        if not options:
            return None
        unknown = sorted(set(options) - {"reset_mask"})
        if unknown:
            raise ValueError(f"reset: unknown option {unknown[0]!r}; the one option is 'reset_mask' (bool [num_envs])")
        mask = np.asarray(options["reset_mask"])
        if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(
                f"reset: options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                f"got {mask.dtype} {mask.shape}"
            )
        return mask

    def step(self, actions):
        resetting = self._autoreset
        # Actions of slots being reset are ignored (their shape is still checked).
        slate_index = self.core.check_actions(actions, ignore=resetting)
        slate = self.core.slate_items(slate_index)
        result, reward, truncated = self.core.step(slate_index)
        terminated = result.terminated.copy()
        if resetting.any():
            self.core.reset_users(resetting)
            reward = np.where(resetting, np.float32(0.0), reward)
            terminated[resetting] = False
            truncated[resetting] = False
        self._autoreset = terminated | truncated
        self._last_fit = np.where(resetting[:, None], np.float32(np.nan), result.fit)
        # Per-slot outcome arrays [N]; `served` is False for slots reset this step (action ignored).
        position = np.where(resetting, -1, result.position)
        info = {
            "served": ~resetting,
            "slate": np.where(resetting[:, None], -1, slate).astype(slate.dtype),
            "clicked": position >= 0,
            "position": position,
            "item": np.where(resetting, -1, result.item),
            "watch_time": reward,
            "completion": np.where(resetting, np.float32(0.0), result.completion),
            **self.core.lifetime_info(result),
        }
        return self.core.observations(), reward, terminated, truncated, info

    # ---------------------------------------------------------- ground truth
    def ground_truth(self) -> dict[str, np.ndarray]:
        """Hidden state, never in the observation: for evaluation and analysis (fresh copies).

        After the last `step()` (or `reset()`), before the next one. Leading axis N:
        interest, effective_interest (plus the season), satiation [N, T]; satisfaction [N]
        in [0, 1]; budget [N] minutes left; step, calendar [N]; fit [N, K] float32, the true
        topic fit of each item of the last served slate as the user felt it when choosing
        (StepResult.fit: after that step's shocks), NaN before a slot's first step and for
        slots reset by the last step. Population-wide: trend [T] (trending topic shares). A drift
        family from outside the package adds its own entries (`World.ground_truth`).
        A slot whose episode just ended still holds its finished user until the next step.
        """
        truth = self.world.ground_truth()
        truth["fit"] = self._last_fit.copy()
        return truth

    def slate_fit(self, actions) -> np.ndarray:
        """[N, K] float32 true topic fit of the slates `actions` would show now, before stepping.

        Hidden state, for evaluation and analysis: `World.slate_fit` of the items `actions`
        select (validated and deduplicated as `step` does) under the users' current state.
        It differs from the next step's `ground_truth()["fit"]` only for users a scheduled
        shock hits at that step. NaN for slots the next step resets (their action is ignored).
        Changes nothing.
        """
        resetting = self._autoreset
        fit = self.core.slate_fit(self.core.check_actions(actions, ignore=resetting))
        if resetting.any():
            fit[resetting] = np.nan
        return fit

    def _no_fit(self) -> np.ndarray:
        return np.full((self.num_envs, self.config.env.slate_size), np.nan, np.float32)
