"""The batched recommendation platform shared by the single-user and vector envs:
candidate retrieval, observation building, action checking, episode bookkeeping.

In lifetime worlds an episode is a user's life: the history persists across sessions, each
entry says how many days ago it happened and whether it opened a session, and the context adds
the day of the week, the days since the last visit and the sessions so far.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.candidates import CandidateIndex, sample_candidates, source_sizes, with_popularity
from envs.config import ScenarioConfig
from envs.parallel import MAX_THREADS, for_row_blocks
from simulator.params import check_int, check_memory, check_seed
from simulator.seasonal import WEEK_DAYS, season_angle
from simulator.world import StepResult, World

HISTORY_FEATURES = ("clicked", "completion", "watch_time", "season_sin", "season_cos")
CONTEXT_FEATURES = ("season_sin", "season_cos", "progress")
# Lifetime worlds append these (the first columns keep their meaning in both).
LIFETIME_HISTORY_FEATURES = (*HISTORY_FEATURES, "days_ago", "session_start")
LIFETIME_CONTEXT_FEATURES = (*CONTEXT_FEATURES, "week_sin", "week_cos", "days_away", "sessions")
WATCH_TIME_CAP = 10.0  # history watch time is in units of the mean item length, capped here
CACHE_ROWS = 512  # users per block of an observation's build: a block's history (~2 MB at H 128) stays in cache
DAYS_SCALE = 365.0  # days ago / away are log1p(days) / log1p(DAYS_SCALE), capped at 1
SESSIONS_SCALE = 1000.0  # sessions so far are log1p(sessions) / log1p(SESSIONS_SCALE), capped at 1
POPULARITY_REFRESH = 20  # steps between rebuilds of the popular retrieval source when popularity moves


def history_features(config: ScenarioConfig) -> tuple[str, ...]:
    """Names of the columns of `history_features` for this scenario."""
    return LIFETIME_HISTORY_FEATURES if config.world.lifetime.enabled else HISTORY_FEATURES


def context_features(config: ScenarioConfig) -> tuple[str, ...]:
    """Names of the columns of `context` for this scenario."""
    return LIFETIME_CONTEXT_FEATURES if config.world.lifetime.enabled else CONTEXT_FEATURES


def static_catalog(config: ScenarioConfig) -> bool:
    """Whether an item's observed features (`candidate_features`) never move, so they are the
    catalog's `item_features` rows at every step: only the popularity column moves, and only with
    `catalog.popularity_memory`."""
    return not config.world.catalog.popularity_memory


def log_days(days: np.ndarray, scale: float = DAYS_SCALE) -> np.ndarray:
    """Days (>= 0) as log1p(days) / log1p(scale), in [0, 1] (NaN -> 0)."""
    out = np.log1p(np.maximum(np.nan_to_num(days, nan=0.0), 0.0)) / np.float32(np.log1p(scale))
    return np.minimum(out, 1.0).astype(np.float32)


def _simd_log1p() -> bool:
    """Whether numpy runs float32 log1p in a SIMD loop on this CPU (numpy's dispatch report)."""
    try:
        current = np.lib.introspect.opt_func_info(func_name="log1p$")["log1p"]["ff"]["current"]
    except (AttributeError, KeyError):  # a numpy without the report: assume the scalar loop, the safe side
        return False
    return "baseline" not in current


SIMD_LOG1P = _simd_log1p()


def days_ago(now: np.ndarray, then: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """float32 `log_days(now - then)` of history entries: now [N, 1] (or [N]) and then [N, H] as
    float32 days; in place on a fresh array, since it runs at every step (and logs rebuild it).
    With `mask` [N, H] (1 = a real entry, 0 = padding) padding gives 0."""
    return log_days_ago(np.subtract(now, then, dtype=np.float32), mask)


def log_days_ago(ago: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """`days_ago` from the float32 differences `ago` [N, H] (now - then), in place; returns `ago`.

    Where numpy's float32 log1p is a scalar loop (CPUs without AVX-512: the largest cost of a lifetime
    step there) padding takes no logarithm; where it is SIMD (`SIMD_LOG1P`) the plain loop over every
    entry is 3x faster than a masked one. Both give the same bytes on real entries."""
    np.maximum(ago, np.float32(0.0), out=ago)
    np.log1p(ago, out=ago, where=True if mask is None or SIMD_LOG1P or mask.all() else mask > 0)
    ago *= np.float32(1.0 / np.log1p(DAYS_SCALE))
    # Capped at 1, and at 0 where the mask is 0: the same bytes as `min(ago, 1) * mask` for ago >= 0, one pass fewer.
    np.minimum(ago, np.float32(1.0) if mask is None else mask, out=ago)
    return ago


def observation_space(config: ScenarioConfig, n_items: int, item_feature_dim: int) -> spaces.Dict:
    """The single-user observation space: a Dict of Box arrays (no Discrete: SB3 would one-hot it).

    history_items [H] ids, history_features [H, F_hist] (clicked, completion, watch time,
    season sin/cos; lifetime worlds add days ago and session start), history_mask [H]
    (1 = real, newest last); candidate_items [C], candidate_features [C, F_item] (topic
    mixture, quality signal, attractiveness, length, popularity); context [F_ctx] (season
    sin/cos, progress; lifetime worlds add week sin/cos, days away, sessions). The history
    carries item ids only: a model looks their features up.
    """
    e = config.env
    h, c = e.history_len, e.num_candidates
    f32 = np.float32
    box = lambda shape, lo, hi: spaces.Box(lo, hi, shape=shape, dtype=f32)  # noqa: E731
    return spaces.Dict(
        {
            "history_items": spaces.Box(0, n_items - 1, shape=(h,), dtype=np.int32),
            "history_features": box((h, len(history_features(config))), -1.0, WATCH_TIME_CAP),
            "history_mask": box((h,), 0.0, 1.0),
            "candidate_items": spaces.Box(0, n_items - 1, shape=(c,), dtype=np.int32),
            "candidate_features": box((c, item_feature_dim), 0.0, 1.0),
            "context": box((len(context_features(config)),), -1.0, 1.0),
        }
    )


def action_space(config: ScenarioConfig) -> spaces.Space:
    """Discrete(C) for one item, MultiDiscrete([C] * K) for a slate of K."""
    e = config.env
    if e.slate_size == 1:
        return spaces.Discrete(e.num_candidates)
    return spaces.MultiDiscrete([e.num_candidates] * e.slate_size)


def dedupe_slates(slates: np.ndarray, n_candidates: int) -> np.ndarray:
    """[N, K] candidate indices with repeats removed, deterministically.

    Scanning left to right, an index already in the slate is replaced by the
    lowest candidate index not yet in it.
    """
    n, k = slates.shape
    if k == 1:
        return slates
    out = slates.copy()
    used = np.zeros((n, n_candidates), dtype=bool)
    rows = np.arange(n)
    for pos in range(k):  # K slate positions (small), vectorised over users
        col = out[:, pos]
        dup = used[rows, col]
        if dup.any():
            col = np.where(dup, np.argmin(used, axis=1), col)
            out[:, pos] = col
        used[rows, col] = True
    return out


def _history_and_candidate_bytes(config: ScenarioConfig) -> tuple[int, int]:
    """Bytes per user of one history (items, features, mask, day) and of the candidates with their features."""
    e = config.env
    f_hist, f_item = len(history_features(config)), config.world.catalog.n_topics + 4
    return e.history_len * (4 * f_hist + 16), e.num_candidates * (4 * f_item + 8)


def observation_bytes(config: ScenarioConfig) -> float:
    """Bytes of one user's observation: the unrolled history and the candidates with their features."""
    return float(sum(_history_and_candidate_bytes(config)))


def env_bytes_per_user(config: ScenarioConfig) -> float:
    """Bytes an env holds per user: the history buffers (two observations' worth), an observation, the
    candidate index, plus 10% and 1 KiB for the world and the step's temporaries (measured when the
    lifetime history had fewer features: the vector env peaked at 20.6 KB per user, 5.1 GB with 200,000
    users, where this estimate said 19.5 KB)."""
    history, candidates = _history_and_candidate_bytes(config)
    return 1.1 * (2 * history + candidates + observation_bytes(config)) + 1024


class RecommenderCore:
    """N users on one World, with everything an env needs. Arrays lead with the user axis."""

    def __init__(self, config: ScenarioConfig, n_users: int, seed: int | None = None, threads: int | None = 1) -> None:
        self.config = config
        if seed is not None:
            check_seed("seed", seed)  # before numpy sees it: its error names no argument
        if threads is not None:
            check_int("RecVectorEnv", "threads", threads, 1, MAX_THREADS)
        # Observations are built in row blocks on this many threads (None: one per core the process may use).
        self.threads = threads
        seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        e = config.env
        check_memory(
            f"env: {n_users:,} users x env.history_len = {e.history_len}, env.num_candidates = {e.num_candidates}",
            n_users * env_bytes_per_user(config),
        )
        self.world = World(config.world, n_users, seed)
        cat = self.world.catalog
        self.n_users = n_users
        self.n_items = cat.n_items
        self.index = CandidateIndex.build(cat)
        e = config.env
        self.lifetime = config.world.lifetime.enabled
        self.sizes = source_sizes(e.num_candidates, e.popular_fraction, e.topic_fraction)
        self.single_observation_space = observation_space(config, cat.n_items, cat.features.shape[1])
        self.single_action_space = action_space(config)
        h = e.history_len
        # History ring buffers: every user gains one entry per step, so one write
        # position serves all users; observations() unrolls them oldest to newest.
        self.history_items = np.zeros((n_users, h), np.int32)
        self.history_features = np.zeros((n_users, h, len(history_features(config))), np.float32)
        self.history_mask = np.zeros((n_users, h), np.float32)
        self.history_day = np.zeros((n_users, h), np.float32) if self.lifetime else None  # when (lifetime)
        self.candidates = np.zeros((n_users, e.num_candidates), np.int32)
        self.anchor_topic = np.zeros(n_users, np.int32)
        self.reseed(seed)

    @property
    def item_features(self) -> np.ndarray:
        """[I, F_item] the item features as observed now (the popularity column moves in worlds
        with `catalog.popularity_memory`)."""
        return self.world.item_features

    def reseed(self, seed: int) -> None:
        """Restart every random stream from `seed` and start fresh episodes for all users."""
        check_seed("seed", seed)
        self.seed = int(seed)
        world_seed, cand_seed, reset_seed = np.random.SeedSequence(self.seed).generate_state(3)
        self.world.reseed(int(world_seed))
        # A reseeded core is the fresh one of that seed, however long this one ran: the retrieval index
        # back on the new world's popularity and its refresh clock back at zero.
        self.index = with_popularity(self.index, self.world.popularity)
        self.steps = 0  # core steps taken (retrieval refreshes)
        self.history_pos = 0  # the history rings' write position
        # Per-step candidates and reset-time draws use separate streams, so the per-step
        # stream has a fixed shape whatever the policy does (common random numbers).
        self.candidate_rng = np.random.default_rng(int(cand_seed))
        self.reset_rng = np.random.default_rng(int(reset_seed))
        self.reset_users(np.ones(self.n_users, dtype=bool))

    def tile(self, m: int, seed: int, noise_groups: int | None = None) -> RecommenderCore:
        """A core of N*m users, each user's copies at rows i*m .. i*m+m-1, for what-if rollouts.

        The copy steps independently of this core (its own random streams from `seed`);
        `noise_groups` as in `World.tile` (shared noise, candidates included).
        """
        other = object.__new__(RecommenderCore)
        other.__dict__.update(self.__dict__)
        other.world = self.world.tile(m, seed, noise_groups)
        index = np.repeat(np.arange(self.n_users), m)
        for name in ("history_items", "history_features", "history_mask", "history_day", "candidates", "anchor_topic"):
            value = getattr(self, name)
            setattr(other, name, None if value is None else value[index])
        other.n_users = self.n_users * m
        cand_seed, reset_seed = np.random.SeedSequence(seed).generate_state(2)
        other.candidate_rng = np.random.default_rng(int(cand_seed))
        other.reset_rng = np.random.default_rng(int(reset_seed))
        return other

    # --------------------------------------------------------------- episodes
    def reset_users(self, mask: np.ndarray) -> None:
        """Start new episodes (fresh users, empty history) for the users in `mask` [N]."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        self.world.reset_users(mask)
        self.history_items[idx] = 0
        self.history_features[idx] = 0.0
        self.history_mask[idx] = 0.0
        if self.history_day is not None:
            self.history_day[idx] = 0.0
        self._write_past(idx)
        # Until a first click, topic-near retrieval anchors on a random topic.
        self.anchor_topic[idx] = self.reset_rng.integers(0, self.world.catalog.n_topics, size=idx.size)
        self._draw_candidates(idx)

    def _write_past(self, idx: np.ndarray) -> None:
        """Fill the history of the new users at `idx` with what they did before the episode
        (`World.past_interactions`), newest last, in the ring slots before the write position."""
        if not self.config.world.users.past_interactions:
            return
        past = self.world.past_interactions(idx, self.reset_rng)
        h = self.config.env.history_len
        n = min(h, past["item"].shape[1])
        slots = (self.history_pos - n + np.arange(n)) % h  # oldest .. newest kept
        season = season_angle(self.world.calendar[idx], self.config.world.seasonal.period)
        rows = idx[:, None]
        self.history_items[rows, slots] = past["item"][:, -n:]
        f = self.history_features
        f[rows, slots, 0] = past["clicked"][:, -n:]
        f[rows, slots, 1] = past["completion"][:, -n:]
        watch = past["watch_time"][:, -n:] / np.float32(self.config.world.catalog.length_mean)
        f[rows, slots, 2] = np.minimum(watch, WATCH_TIME_CAP)
        f[rows, slots, 3] = np.sin(season)[:, None]
        f[rows, slots, 4] = np.cos(season)[:, None]
        self.history_mask[rows, slots] = 1.0
        if self.history_day is not None:  # one past visit a day, up to the first one
            day = self.world.state.day[idx]
            self.history_day[rows, slots] = day[:, None] - (n - np.arange(n))[None, :]
            f[rows, slots, 6] = 1.0  # each past visit was a session of its own

    def _draw_candidates(self, idx: np.ndarray | None = None) -> None:
        c = self.config.env.num_candidates
        if idx is None:
            noise_map = self.world.noise_map
            uniform = self.candidate_rng.random((self.world.noise_rows, c), dtype=np.float32)
            if noise_map is not None:
                uniform = uniform[noise_map]
        else:
            uniform = self.reset_rng.random((idx.size, c), dtype=np.float32)
        sel = slice(None) if idx is None else idx
        self.candidates[sel] = sample_candidates(
            self.index,
            self.world.catalog.arrival,
            self.anchor_topic[sel],
            self.world.clock[sel],
            self.sizes,
            uniform,
        )

    # ---------------------------------------------------------------- actions
    def check_actions(self, actions: Any, ignore: np.ndarray | None = None) -> np.ndarray:
        """Validate a batch of actions; return [N, K] candidate indices (deduplicated).

        Rows in `ignore` [N] (slots being reset) must have the right shape but any value.
        """
        e = self.config.env
        a = np.asarray(actions)
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                a = a.astype(np.int64)
            else:
                raise ValueError(f"actions must be integer candidate indices, got dtype {a.dtype}")
        expected = (self.n_users,) if e.slate_size == 1 else (self.n_users, e.slate_size)
        if a.shape == expected + (1,) and e.slate_size == 1:
            a = a[..., 0]
        if a.shape != expected:
            raise ValueError(f"actions must have shape {expected} (n_users, slate_size={e.slate_size}), got {a.shape}")
        if ignore is not None and ignore.any():
            a = a.copy()
            a[ignore] = 0
        if a.size and (a.min() < 0 or a.max() >= e.num_candidates):
            bad = a[(a < 0) | (a >= e.num_candidates)][0]
            raise ValueError(f"action index {bad} out of range: candidate indices are 0..{e.num_candidates - 1}")
        a = a.reshape(self.n_users, e.slate_size).astype(np.int64)
        return dedupe_slates(a, e.num_candidates)

    def slate_items(self, slate_index: np.ndarray) -> np.ndarray:
        """[N, K] item ids of the current candidates at `slate_index` [N, K] (from `check_actions`)."""
        return self.candidates[np.arange(self.n_users)[:, None], slate_index]

    def slate_fit(self, slate_index: np.ndarray) -> np.ndarray:
        """[N, K] true topic fit (`World.slate_fit`) of the slates `slate_index` [N, K] would show now.

        Hidden state, for evaluation only. Taken before stepping: a shock that hits a user at
        the next step is not in it (it is in that step's StepResult.fit).
        """
        return self.world.slate_fit(self.slate_items(slate_index))

    # ------------------------------------------------------------------- step
    def step(self, slate_index: np.ndarray) -> tuple[StepResult, np.ndarray, np.ndarray]:
        """Show slates (candidate indices [N, K]); record history; draw next candidates.

        Returns the world's StepResult, reward [N] (watch time) and truncated [N].
        """
        slates = self.slate_items(slate_index)
        season = season_angle(self.world.calendar, self.config.world.seasonal.period)
        s = self.world.state
        opens_session = s.step == 0
        day = s.day.copy() if self.lifetime else None
        result = self.world.step(slates)
        # The history records the clicked item, or the top item when nothing was clicked.
        shown = np.where(result.clicked, result.item, slates[:, 0])
        self._push_history(shown, result, season, day, opens_session)
        clicked = result.clicked
        self.anchor_topic = np.where(
            clicked, self.world.catalog.dominant_topic[np.maximum(result.item, 0)], self.anchor_topic
        )
        self.steps += 1
        if self.config.world.catalog.popularity_memory and self.steps % POPULARITY_REFRESH == 0:
            self.index = with_popularity(self.index, self.world.popularity)
        self._draw_candidates()
        reward = result.watch_time
        if self.lifetime:  # a life ends at the horizon: the session over, the next visit would fall after it
            over = result.session_end & (s.day >= self.config.world.lifetime.horizon_days)
            truncated = (over | (s.episode_step >= self.config.env.max_steps)) & ~result.terminated
        else:
            truncated = (s.step >= self.config.env.max_steps) & ~result.terminated
        return result, reward, truncated

    def lifetime_info(self, result: StepResult) -> dict[str, np.ndarray]:
        """Lifetime worlds, per user [N]: day (the clock after the step), session (index of the session
        the next step belongs to), session_end (this step ended a session) and gap (days to the next
        visit where a session ended and the user returns; -1 otherwise: NaN would make two equal
        infos compare unequal). Empty in session worlds."""
        if not self.lifetime:
            return {}
        s = self.world.state
        gap = np.where(np.isnan(result.gap), -1.0, result.gap)
        return dict(day=s.day.copy(), session=s.session.copy(), session_end=result.session_end.copy(), gap=gap)

    def _push_history(
        self,
        items: np.ndarray,
        result: StepResult,
        season: np.ndarray,
        day: np.ndarray | None = None,
        opens_session: np.ndarray | None = None,
    ) -> None:
        p = self.history_pos
        self.history_pos = (p + 1) % self.config.env.history_len
        self.history_items[:, p] = items
        f = self.history_features[:, p]
        f[:, 0] = result.clicked
        f[:, 1] = result.completion
        f[:, 2] = np.minimum(result.watch_time / np.float32(self.config.world.catalog.length_mean), WATCH_TIME_CAP)
        f[:, 3] = np.sin(season)
        f[:, 4] = np.cos(season)
        self.history_mask[:, p] = 1.0
        if self.history_day is not None:
            self.history_day[:, p] = day
            f[:, 6] = opens_session

    # ------------------------------------------------------------ observation
    def observations(self) -> dict[str, np.ndarray]:
        """Batched observation dict; each value leads with the user axis N (fresh copies).

        The history's unrolled copies, its days ago and the candidates' features are most of a
        large env's step: with `threads` other than 1 they are built in blocks of users on that many
        cores (`envs.parallel`), the same bytes whatever the number of blocks."""
        s = self.world.state
        season = season_angle(self.world.calendar, self.config.world.seasonal.period)
        if self.lifetime:
            life = self.config.world.lifetime
            week = season_angle(self.world.calendar, WEEK_DAYS)
            columns = [
                np.sin(season),
                np.cos(season),
                np.minimum(s.day / np.float32(life.horizon_days), 1.0),
                np.sin(week),
                np.cos(week),
                log_days(s.day - s.last_visit),  # days since the last session ended (the first visit, at first)
                np.minimum(np.log1p(s.session) / np.log1p(SESSIONS_SCALE), 1.0),
            ]
        else:
            columns = [np.sin(season), np.cos(season), s.step / np.float32(self.config.env.max_steps)]
        context = np.stack(columns, axis=1)
        n, h = self.n_users, self.config.env.history_len
        items, candidates = self.item_features, self.candidates
        rings = {"history_items": self.history_items, "history_features": self.history_features}
        rings["history_mask"] = self.history_mask
        obs = {key: np.empty(ring.shape, ring.dtype) for key, ring in rings.items()}
        obs["candidate_items"] = candidates.copy()
        obs["candidate_features"] = np.empty((*candidates.shape, items.shape[1]), items.dtype)
        obs["context"] = context.astype(np.float32)
        now = s.day.astype(np.float32)[:, None] if self.history_day is not None else None
        p = self.history_pos
        # Ring slots p.. (the oldest) go first, then ..p-1: the two halves of each unrolled row.
        halves = ((slice(p, h), slice(0, h - p)), (slice(0, p), slice(h - p, h)))

        def fill_block(rows: slice) -> None:
            for key, ring in rings.items():
                for src, dst in halves:
                    obs[key][rows, dst] = ring[rows, src]
            if now is not None:  # how long ago, as of now (contiguous: the ring's column stays 0)
                ago = np.empty((rows.stop - rows.start, h), np.float32)
                for src, dst in halves:
                    np.subtract(now[rows], self.history_day[rows, src], out=ago[:, dst])
                obs["history_features"][rows, :, 5] = log_days_ago(ago, obs["history_mask"][rows])
            # Straight into the observation: "clip" is unbuffered ("raise" buffers `out`); every id is in range.
            np.take(items, candidates[rows], axis=0, out=obs["candidate_features"][rows], mode="clip")

        def fill(rows: slice) -> None:  # in blocks that stay in cache between their copies and their days
            for start in range(rows.start, rows.stop, CACHE_ROWS):
                fill_block(slice(start, min(start + CACHE_ROWS, rows.stop)))

        row_size = h * (self.history_features.shape[2] + 2) + candidates.shape[1] * items.shape[1]
        for_row_blocks(fill, n, row_size, self.threads)
        return obs
