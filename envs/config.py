"""Environment parameters, scenario configs, the named presets, and scenario files that stand wherever a
preset name does."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.params import apply_overrides, check_int, check_range
from simulator.shocks import ShockEvent
from simulator.world import WorldConfig


@dataclass(frozen=True)
class EnvParams:
    num_candidates: int = 20  # C: candidates handed to the policy each step
    slate_size: int = 1  # K: items shown per step (action = K candidate indices)
    history_len: int = 32  # H: past interactions in the observation
    max_steps: int = 100  # episode cap (truncation)
    popular_fraction: float = 0.3  # candidate sources: popular / topic-near / random
    topic_fraction: float = 0.4

    def __post_init__(self) -> None:
        o = "env"
        check_int(o, "num_candidates", self.num_candidates, 1, 10_000)
        check_int(o, "slate_size", self.slate_size, 1, self.num_candidates)
        check_int(o, "history_len", self.history_len, 1, 4096)
        check_int(o, "max_steps", self.max_steps, 1)
        check_range(o, "popular_fraction", self.popular_fraction, 0.0, 1.0)
        check_range(o, "topic_fraction", self.topic_fraction, 0.0, 1.0)
        if self.popular_fraction + self.topic_fraction > 1.0:
            raise ValueError(
                "env.popular_fraction + env.topic_fraction must be <= 1, got "
                f"{self.popular_fraction} + {self.topic_fraction}"
            )


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything that defines an environment: the world and the env around it."""

    name: str = "custom"
    world: WorldConfig = field(default_factory=WorldConfig)
    env: EnvParams = field(default_factory=EnvParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict: name, world (a section per world field and per drift family), env."""
        return dict(name=self.name, world=self.world.to_dict(), env=dataclasses.asdict(self.env))


_SUDDEN = dict(kind="sudden", step=10, fraction=1.0, strength=0.8)

PRESETS: dict[str, dict[str, Any]] = {
    "stationary": {},
    # A season lifts a topic only for the users who like it (reach 0): a season that lifted it for
    # everyone would pay "serve what is in season" whoever the user is (README, Validity).
    "seasonal": {"seasonal": {"enabled": True, "reach": 0.0}},
    "social": {"social": {"enabled": True}},
    "cognitive": {"cognitive": {"enabled": True}},
    "shock": {"shock": {"enabled": True, "events": [_SUDDEN]}},
    "mixed": {
        "catalog": {"n_arrivals": 100},
        "seasonal": {"enabled": True, "reach": 0.0},
        "social": {"enabled": True},
        "cognitive": {"enabled": True},
        "shock": {
            "enabled": True,
            "events": [
                dict(kind="injection", step=8, n_items=50),
                dict(kind="sudden", step=12, fraction=0.5, strength=0.8),
            ],
        },
    },
    # Users with lifetimes: an episode is one user's life over 60 days of sessions and return visits;
    # every family acts on calendar time (a yearly and a weekly season, drift between visits, dated events).
    "lifetime": {
        "lifetime": {"enabled": True},
        "catalog": {"n_arrivals": 200, "arrival_window": 60.0, "popularity_memory": 0.002},
        "seasonal": {"enabled": True, "unit": "day", "period": 365.25, "amplitude": 0.6, "weekly_amplitude": 0.2},
        "social": {"enabled": True},
        "cognitive": {"enabled": True},
        "shock": {
            "enabled": True,
            "events": [
                dict(kind="injection", day=20.0, n_items=50),
                dict(kind="sudden", day=30.0, fraction=0.3, strength=0.8),
                dict(kind="trend", day=40.0, duration=10.0, fraction=0.6, strength=0.5),
            ],
        },
        "env": {"history_len": 128, "max_steps": 5000},
    },
}


MOVIELENS_FILE = Path(__file__).with_name("movielens.json")


def _fitted_preset(path: Path) -> dict[str, Any]:
    """The overrides of a preset fitted to real data (derived statistics only; the data is not needed)."""
    import json

    try:
        return json.loads(path.read_text())["overrides"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"fitted preset file {path} is unreadable: {err}") from None


# Fitted to MovieLens-100k and the Open Bandit Dataset sample by experiments/calibrate.py: a lifetime
# world over the data's 215 days whose catalog, users, return visits and position bias follow the data.
PRESETS["movielens"] = _fitted_preset(MOVIELENS_FILE)


def _split(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat scenario overrides: 'env' to EnvParams, the rest to WorldConfig (its sections and
    the drift families', which it checks)."""
    if not isinstance(overrides, Mapping):
        raise ValueError(f"scenario overrides must be a mapping, got {type(overrides).__name__}")
    world = {key: value for key, value in overrides.items() if key != "env"}
    return world, overrides.get("env", {})


def load_overrides(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read overrides from a YAML (or JSON) file (`what` it is, for the errors)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{what} {path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


SCENARIO_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a scenario file's `name:` (a directory name in runs/)


@dataclass(frozen=True)
class ScenarioFile:
    """A scenario in a YAML (or JSON) file, which stands wherever a preset name does (`--scenario
    my_world.yaml`, `make_scenario("my_world.yaml")`, the envs' `scenario=`):

        extends: mixed                          # optional: the preset it starts from (default: none)
        name: moody                             # optional: what its runs are filed under
        families: {mood: "my_drift:Mood"}       # optional: drift families from outside the package
        mood: {enabled: true, amplitude: 2.0}   # overrides, keyed as make_scenario takes them
        cognitive: {magnitude: 2.0}

    sha256: the hash of its content as parsed (comments and layout do not count): runs record it,
    `--resume` refuses a file that changed since, and runs are grouped by it (`label`), not by the
    file's name. label: `<name, or the preset it extends, or custom>-<the hash's first 8 digits>`.
    """

    path: Path
    extends: str | None
    name: str | None
    overrides: Mapping[str, Any]
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.name or self.extends or 'custom'}-{self.sha256[:8]}"


def is_scenario_file(name: Any) -> bool:
    """Whether `name` names a scenario file (a path ending in .yaml, .yml or .json), not a preset."""
    return isinstance(name, (str, Path)) and Path(name).suffix.lower() in SCENARIO_FILE_SUFFIXES


def read_scenario_file(path: str | Path) -> ScenarioFile:
    """The scenario file at `path`; one ValueError line naming the file and what is wrong with it."""
    data = load_overrides(path, "scenario file")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    extends, name = data.pop("extends", None), data.pop("name", None)
    if extends is not None and extends not in PRESETS:
        raise ValueError(
            f"scenario file {path}: extends {extends!r}, which is not a preset; valid presets: {', '.join(PRESETS)}"
        )
    if name is not None and not (isinstance(name, str) and _LABEL.match(name)):
        raise ValueError(f"scenario file {path}: name must be letters, digits, '_', '.' or '-', got {name!r}")
    return ScenarioFile(Path(path).resolve(), extends, name, data, digest)


def scenario_label(name: str | Path) -> str:
    """What runs of scenario `name` are filed and grouped under: a preset's name, or a scenario file's
    label (by content); an unknown name is a ValueError, as in make_scenario."""
    if is_scenario_file(name):
        return read_scenario_file(name).label
    if name not in PRESETS:
        raise ValueError(_unknown(name))
    return str(name)


def _unknown(name: Any) -> str:
    return f"unknown scenario '{name}'; valid scenarios: {', '.join(PRESETS)}, or a scenario file (.yaml)"


def make_scenario(
    name: str | Path = "mixed", overrides: Mapping[str, Any] | None = None, config_file: str | Path | None = None
) -> ScenarioConfig:
    """Build a preset by name (or the scenario file `name`, ScenarioFile), then apply a YAML file's
    overrides, then `overrides`.

    Overrides are nested mappings keyed like the config: {"cognitive": {"magnitude": 2},
    "env": {"num_candidates": 10}, "shock": {"events": [{"kind": "sudden", "step": 20}]}}. A drift
    family from outside the package is named under `families:` by its module path and set under
    its name: {"families": {"mood": "my_drift:Mood"}, "mood": {"enabled": True}}
    (`WorldConfig.with_overrides`).
    """
    if is_scenario_file(name):
        file = read_scenario_file(name)
        layers, label = [PRESETS.get(file.extends, {}), file.overrides], file.label
    elif name in PRESETS:
        layers, label, file = [PRESETS[name]], str(name), None
    else:
        raise ValueError(_unknown(name))
    if config_file is not None:
        layers.append(load_overrides(config_file))
    if overrides:
        layers.append(dict(overrides))
    world, env = WorldConfig(), EnvParams()
    for i, layer in enumerate(layers):
        try:
            world_over, env_over = _split(layer)
            world = world.with_overrides(world_over, other_sections=("env",))
            env = apply_overrides(env, env_over, "env")
        except ValueError as err:
            if file is None or i != 1:
                raise
            raise ValueError(f"scenario file {name}: {err}") from None
    # Re-run the cross-field checks after all layers.
    world = dataclasses.replace(world)
    if env.num_candidates > world.catalog.n_items:
        raise ValueError(
            f"env.num_candidates ({env.num_candidates}) must be <= catalog.n_items ({world.catalog.n_items}): "
            "the retriever cannot supply more candidates than the catalog holds"
        )
    return ScenarioConfig(name=label, world=world, env=env)


def has_calendar(name: str | Path, overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether preset (or scenario file) `name` (with `overrides`) is a lifetime world, with a calendar
    and return visits; an unknown name is a ValueError, as in make_scenario."""
    return make_scenario(name, overrides).world.lifetime.enabled


def resolve_scenario(
    scenario: str | Path | ScenarioConfig,
    overrides: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
) -> ScenarioConfig:
    """The config an env is built on: a built ScenarioConfig as is, or a preset name with overrides.

    Overrides next to a built config would be silently ignored, so they are an error.
    """
    if isinstance(scenario, ScenarioConfig):
        if overrides or config_file is not None:
            raise ValueError(
                "overrides and config_file apply to a preset name, not to a built ScenarioConfig "
                "(apply them with make_scenario)"
            )
        return scenario
    return make_scenario(scenario, overrides, config_file)


__all__ = [
    "EnvParams",
    "ScenarioConfig",
    "ScenarioFile",
    "PRESETS",
    "make_scenario",
    "is_scenario_file",
    "read_scenario_file",
    "scenario_label",
    "has_calendar",
    "load_overrides",
    "resolve_scenario",
    "ShockEvent",
]
