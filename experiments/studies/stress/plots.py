"""Figures of the stress report (matplotlib, written as PNG without a display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.studies.stress.analysis import MIN_ACTIVE_SHARE, NO_DRIFT


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def agent_colours(agents: list[str]) -> dict[str, str]:
    """A fixed colour per agent (oracles grey: they read the true state)."""
    palette = [
        "tab:blue",
        "tab:orange",
        "tab:green",
        "tab:red",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:olive",
        "tab:cyan",
    ]
    out, i = {}, 0
    for a in agents:
        if a.startswith("oracle"):
            out[a] = "0.45"
        else:
            out[a] = palette[i % len(palette)]
            i += 1
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def robustness_curves(table: pd.DataFrame, path: Path, reference: str | None = None) -> Path:
    """Relative return (top) and regret (bottom) against magnitude: one panel per family, one
    line per agent, 95% intervals over seeds shaded."""
    plt = _pyplot()
    families = list(dict.fromkeys(table.family))
    agents = list(dict.fromkeys(table.agent))
    colours = agent_colours(agents)
    has_regret = table.regret.notna().any()
    rows = 2 if has_regret else 1
    fig, axes = plt.subplots(
        rows, len(families), figsize=(3.6 * len(families), 3.2 * rows), squeeze=False, sharey="row"
    )
    for col, family in enumerate(families):
        for row, (metric, label) in enumerate(
            [("relative_return", "return / own no-drift return"), ("regret", f"regret vs {reference} (min)")][:rows]
        ):
            ax = axes[row, col]
            for agent in agents:
                g = table[(table.agent == agent) & (table.family == family)].sort_values("magnitude")
                ax.plot(g.magnitude, g[metric], marker="o", color=colours[agent], label=agent)
                ax.fill_between(
                    g.magnitude, g[f"{metric}_lo"], g[f"{metric}_hi"], color=colours[agent], alpha=0.2, linewidth=0
                )
            if metric == "relative_return":
                ax.axhline(1.0, color="0.7", linestyle=":", linewidth=1)
                ax.set_title(f"{family} drift")
            ax.set_xlabel("drift magnitude")
            if col == 0:
                ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def recovery_curves(
    curves: pd.DataFrame,
    shock_at: float,
    level: float,
    path: Path,
    x: str = "step",
    ratio: str = "engagement_ratio",
    unit: str = "steps",
    ratio_label: str = "engagement / same policy without shock",
) -> Path:
    """Engagement normalised by each policy's own no-shock run (left) and, when `curves` has it,
    the served items' fit gap (right) around the shock at `shock_at`; mean over seeds with the
    min-max band. `x`, `ratio`: the curves' time and ratio columns (temporal mode: day, relative)."""
    plt = _pyplot()
    agents = list(dict.fromkeys(curves.agent))
    colours = agent_colours(agents)
    panels = [(ratio, ratio_label)]
    if "fit_gap" in curves:
        panels.append(("fit_gap", "fit of served items: shocked - no shock"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    axes = axes[0]
    for (metric, label), ax in zip(panels, axes):
        for agent in agents:
            g = curves[curves.agent == agent].groupby(x)[metric]
            mean, lo, hi = g.mean(), g.min(), g.max()
            t = mean.index.to_numpy() - shock_at
            ax.plot(t, mean.to_numpy(), color=colours[agent], label=agent)
            ax.fill_between(t, lo.to_numpy(), hi.to_numpy(), color=colours[agent], alpha=0.15, linewidth=0)
        ax.axvline(0, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel(f"{unit} since the shock")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    lo = np.nanmin(curves.groupby(["agent", x])[ratio].mean().to_numpy())
    axes[0].set_ylim(min(0.8, lo - 0.05), 1.25)  # late steps with few users in session can spike
    axes[0].axhline(level, color="0.5", linestyle=":", linewidth=1)
    axes[0].text(axes[0].get_xlim()[0], level, f" {level:.0%} of pre-shock", va="bottom", fontsize=8, color="0.4")
    axes[0].set_title(f"{ratio_label.split(' / ')[0]} around the shock")
    if len(axes) > 1:
        axes[1].axhline(0.0, color="0.5", linestyle=":", linewidth=1)
        axes[1].set_title("how recommendations follow the new interests")
    axes[0].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def degradation_by_day(relative: pd.DataFrame, weekly: pd.DataFrame, path: Path) -> Path:
    """Watch per active user relative to the agent's own no-drift run against days since training:
    one panel per family at its largest magnitude, one colour per agent; thin line: the daily
    mean over seeds, markers: the weekly means with their 95% intervals over seeds."""
    plt = _pyplot()
    families = [f for f in dict.fromkeys(weekly.family)]
    agents = list(dict.fromkeys(weekly.agent))
    colours = agent_colours(agents)
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False, sharey=True)
    for ax, family in zip(axes[0], families):
        mag = weekly[weekly.family == family].magnitude.max()
        for agent in agents:
            d = relative[
                (relative.agent == agent)
                & (relative.family == family)
                & (relative.magnitude == mag)
                & (relative.week >= 0)
            ]
            daily = d.groupby("since").relative.mean()
            ax.plot(daily.index, daily.to_numpy(), color=colours[agent], alpha=0.35, linewidth=0.8)
            w = weekly[(weekly.agent == agent) & (weekly.family == family) & (weekly.magnitude == mag)]
            mid = 0.5 * (w.days_from + w.days_to)
            err = np.vstack([w.relative - w.relative_lo, w.relative_hi - w.relative]).clip(0)
            ax.errorbar(mid, w.relative, yerr=np.nan_to_num(err), color=colours[agent], marker="o", ms=4, label=agent)
        ax.axhline(1.0, color="0.7", linestyle=":", linewidth=1)
        top = np.nanmax(weekly.relative.to_numpy(float), initial=1.0)
        ax.set_ylim(0.0, float(np.clip(top + 0.3, 1.5, 3.0)))  # few seeds: t intervals can reach far
        ax.set_title(f"{family} x{mag:g}", fontsize=10)
        ax.set_xlabel("days since training")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("watch per active user / own no-drift run")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def topic_shares(timelines: dict[str, pd.DataFrame], n_users: int, path: Path, title: str) -> Path:
    """Stacked population topic shares of consumption over the episode, one panel per regime."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(timelines), figsize=(3.4 * len(timelines), 3.4), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab20")
    for ax, (label, tl) in zip(axes[0], timelines.items()):
        tl = tl[tl.active_users >= MIN_ACTIVE_SHARE * n_users]
        cols = [c for c in tl.columns if c.startswith("share_")]
        ax.stackplot(tl.step, tl[cols].to_numpy().T, colors=[cmap(i % 20) for i in range(len(cols))], linewidth=0)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("episode step")
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel("share of consumption (one band per topic)")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def homogenisation(curves: pd.DataFrame, path: Path) -> Path:
    """Concentration of the population's consumption over the episode: one panel per family,
    solid = largest magnitude, dashed = no drift, one colour per agent (mean over seeds, 3-step
    trailing mean)."""
    plt = _pyplot()
    families = [f for f in dict.fromkeys(curves.family) if f != NO_DRIFT]
    agents = list(dict.fromkeys(curves.agent))
    colours = agent_colours(agents)
    fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.4), squeeze=False, sharey=True)
    for ax, family in zip(axes[0], families):
        for agent in agents:
            for fam, style in [(family, "-"), (NO_DRIFT, "--")]:
                g = curves[(curves.agent == agent) & (curves.family == fam)]
                if fam != NO_DRIFT:
                    g = g[g.magnitude == g.magnitude.max()]
                mean = g.groupby("step").homogenisation.mean().rolling(3, min_periods=1).mean()
                ax.plot(
                    mean.index,
                    mean.to_numpy(),
                    style,
                    color=colours[agent],
                    label=agent if fam != NO_DRIFT else None,
                    linewidth=1.4 if style == "-" else 1.0,
                )
        mag = curves[curves.family == family].magnitude.max()
        ax.set_title(f"{family} (magnitude {mag:g}; dashed: none)", fontsize=10)
        ax.set_xlabel("episode step")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("concentration of consumption\n(Herfindahl over topics, 3-step mean)")
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def is_png(path: Path) -> bool:
    """A non-empty PNG file."""
    path = Path(path)
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
