"""User response: a choice over the slate with a no-click option and position bias, engagement
(watch time), satisfaction and budget dynamics, and leaving, all driven by an item's personal value.

Why personal value. On real logs, personalised models beat popularity and global quality by
large margins: what a user watches to the end, enjoys and comes back for depends on whether the
item suits *them*, not on a universal quality score. A film loved by one taste community is
mediocre to another. So here an item's value to a user is its craft quality times how much it
appeals to that user's current tastes:

    appeal = sigmoid(appeal_sharpness * (fit - appeal_centre))     fit = topics . felt interests
    value  = appeal * (quality_floor + (1 - quality_floor) * quality)      in [0, 1]

and value, not quality, decides how much of it is watched (completion), how the step feels
(experience, with the letdown of a thumbnail that promised more than the item gave this user),
and how much session budget it gives back. A policy that ignores the user can still find good
items, but not the ones that are good for this user now, as satiation, seasons and shocks move
what appeals to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.params import check_range


@dataclass(frozen=True)
class ResponseParams:
    fit_weight: float = 3.0  # utility per unit of topic fit
    attractiveness_weight: float = 2.5  # utility of looking attractive (thumbnails, titles)
    no_click_utility: float = 1.5  # utility of not clicking anything
    dissatisfaction_weight: float = 2.0  # unhappy users click less: no_click += w * (0.5 - satisfaction)
    position_decay: float = 0.7  # position bias: utility -= decay * log(1 + position)
    appeal_sharpness: float = 5.0  # appeal = sigmoid(sharpness * (fit - centre)): how much taste decides value
    appeal_centre: float = 0.0  # the fit at which an item appeals half-way
    quality_floor: float = 0.4  # value of a perfectly suited item of quality 0 (craft adds the rest)
    completion_bias: float = 0.0  # fraction watched = sigmoid(bias + weight * (value - 0.5) + hook * (a - 0.5))
    completion_weight: float = 6.0
    attractiveness_hook: float = 4.0  # a catchy item is watched longer than its value warrants (a = attractiveness)
    watch_noise: float = 0.1  # multiplicative log-normal noise of watch time
    satisfaction_rate: float = 0.1  # satisfaction is an EMA of experience with this rate
    clickbait_penalty: float = 1.0  # experience lost per unit of attractiveness above the item's value
    skip_experience: float = 0.3  # experience of a step with nothing worth clicking
    browse_cost: float = 0.5  # minutes of budget every step costs
    quality_refund: float = 0.9  # valued content gives budget back: budget -= watch * (1 - refund * (2v - 1))
    leave_threshold: float = 0.45  # below this satisfaction users may leave
    leave_max: float = 0.3  # per-step leave probability at zero satisfaction

    def __post_init__(self) -> None:
        o = "response"
        for name in ("fit_weight", "attractiveness_weight", "position_decay", "appeal_sharpness"):
            check_range(o, name, getattr(self, name), 0.0, 100.0)
        for name in ("completion_weight", "attractiveness_hook"):
            check_range(o, name, getattr(self, name), 0.0, 50.0)
        # Past these the outside option drowns every item: users (the dissatisfied ones) stop clicking.
        check_range(o, "dissatisfaction_weight", self.dissatisfaction_weight, 0.0, 10.0)
        check_range(o, "no_click_utility", self.no_click_utility, -100.0, 8.0)
        check_range(o, "completion_bias", self.completion_bias, -100.0, 100.0)
        check_range(o, "appeal_centre", self.appeal_centre, -10.0, 10.0)
        check_range(o, "quality_floor", self.quality_floor, 0.0, 1.0)
        check_range(o, "watch_noise", self.watch_noise, 0.0, 2.0)
        check_range(o, "satisfaction_rate", self.satisfaction_rate, 0.0, 1.0)
        check_range(o, "clickbait_penalty", self.clickbait_penalty, 0.0, 10.0)
        check_range(o, "skip_experience", self.skip_experience, 0.0, 1.0)
        check_range(o, "browse_cost", self.browse_cost, 0.0, 1440.0)
        check_range(o, "quality_refund", self.quality_refund, 0.0, 1.0)
        check_range(o, "leave_threshold", self.leave_threshold, 0.0, 1.0)
        check_range(o, "leave_max", self.leave_max, 0.0, 1.0)


def position_log_bias(slate_size: int, params: ResponseParams) -> np.ndarray:
    """[K] additive utility of each slate position (0 at the top)."""
    return (-params.position_decay * np.log1p(np.arange(slate_size))).astype(np.float32)


def no_click_utility(satisfaction: np.ndarray, params: ResponseParams) -> np.ndarray:
    """[N] utility of the outside option."""
    return np.float32(params.no_click_utility) + np.float32(params.dissatisfaction_weight) * (0.5 - satisfaction)


def choice_probabilities(utility: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """[N, K+1] multinomial-logit probabilities; column 0 is 'no click', column k+1 slate position k.

    utility [N, K]; outside [N]. Max-subtracted, so extreme utilities give no inf/NaN.
    """
    u = np.concatenate([outside[:, None], utility], axis=1)
    # Slates of one (every preset): the two columns' max and sum, the same bytes 10x faster than numpy's
    # reductions along an axis of length 2 (for 8 or more options its sum is pairwise: that one stays).
    two = u.shape[1] == 2
    u -= np.maximum(u[:, :1], u[:, 1:]) if two else u.max(axis=1, keepdims=True)
    np.exp(u, out=u)
    u /= u[:, :1] + u[:, 1:] if two else u.sum(axis=1, keepdims=True)
    return u


def sample_choice(probs: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """[N] chosen slate position, -1 for no click, by inverse CDF with one uniform [N] per user."""
    if probs.shape[1] == 2:  # slates of one: the same as below without the cumulative sum
        return (uniform >= probs[:, 0]).astype(np.int64) - 1
    cdf = np.cumsum(probs, axis=1)
    return (uniform[:, None] >= cdf[:, :-1]).sum(axis=1) - 1


def appeal(fit: np.ndarray, params: ResponseParams) -> np.ndarray:
    """How much an item appeals to a user's current tastes, in (0, 1): a sigmoid of the fit; any shape."""
    z = np.float32(params.appeal_sharpness) * (fit - np.float32(params.appeal_centre))
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def personal_value(fit: np.ndarray, quality: np.ndarray, params: ResponseParams) -> np.ndarray:
    """An item's value to a user, in [0, 1]: its appeal to the user times its (floored) quality; any shape."""
    floor = np.float32(params.quality_floor)
    return (appeal(fit, params) * (floor + (np.float32(1.0) - floor) * quality)).astype(np.float32)


def completion(value: np.ndarray, attractiveness: np.ndarray, params: ResponseParams) -> np.ndarray:
    """Fraction of an item watched, in (0, 1): it rises with the item's personal value, and with
    its attractiveness (the hook keeps users watching; the letdown comes in `experience`); any shape."""
    z = (
        params.completion_bias
        + params.completion_weight * (value - 0.5)
        + params.attractiveness_hook * (attractiveness - 0.5)
    )
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def letdown(value: np.ndarray, attractiveness: np.ndarray, params: ResponseParams) -> np.ndarray:
    """The disappointment of a thumbnail that promised more than the item gave this user:
    `clickbait_penalty` x (attractiveness - value) where positive, else 0; any shape."""
    return params.clickbait_penalty * np.maximum(attractiveness - value, 0.0)


def experience(
    clicked: np.ndarray, value: np.ndarray, attractiveness: np.ndarray, params: ResponseParams
) -> np.ndarray:
    """[N] how good this step felt, in [0, 1]: the item's personal value, less the letdown of a
    thumbnail that promised more (`letdown`); a skip is meh."""
    on_click = np.clip(value - letdown(value, attractiveness, params), 0.0, 1.0)
    return np.where(clicked, on_click, np.float32(params.skip_experience)).astype(np.float32)


def update_satisfaction(satisfaction: np.ndarray, felt: np.ndarray, params: ResponseParams) -> None:
    """In place: satisfaction [N] moves toward this step's experience [N] (an EMA; stays in [0, 1])."""
    satisfaction += np.float32(params.satisfaction_rate) * (felt - satisfaction)


def budget_cost(watch_time: np.ndarray, value: np.ndarray, params: ResponseParams) -> np.ndarray:
    """Minutes of budget a step spends: browsing plus watching, less a refund for personal value
    (time well spent feels shorter; time wasted on what does not suit the user, longer).

    Elementwise, any shape: [N] in `World.step`; [N, C] for the expected costs of
    `World.expected_budget_cost` (the cost is linear in watch time, so the cost of the
    expected watch time is the expected cost).
    """
    return (params.browse_cost + watch_time * (1.0 - params.quality_refund * (2.0 * value - 1.0))).astype(np.float32)


def leave_probability(satisfaction: np.ndarray, params: ResponseParams) -> np.ndarray:
    """[N] per-step probability of leaving, rising linearly as satisfaction drops below the threshold."""
    if params.leave_threshold == 0.0:
        return np.zeros_like(satisfaction)
    gap = np.clip((params.leave_threshold - satisfaction) / params.leave_threshold, 0.0, 1.0)
    return (params.leave_max * gap).astype(np.float32)
