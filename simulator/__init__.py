"""Batched world model of a drifting user population (numpy only; no gym, no torch).

State is a set of arrays with a leading user axis; every mechanism lives in its
own module as a frozen parameter dataclass plus pure functions over arrays.
"""

from simulator.catalog import Catalog, CatalogParams, make_catalog
from simulator.cognitive import CognitiveParams
from simulator.drift import DriftFamily, DriftParams, FamilyState
from simulator.families import family_names, get_family, register_family, registered_families
from simulator.lifetime import LifetimeParams
from simulator.response import ResponseParams
from simulator.seasonal import SeasonalParams
from simulator.shocks import ShockEvent, ShockParams
from simulator.social import SocialParams
from simulator.state import UserState
from simulator.users import UserParams
from simulator.world import StepResult, World, WorldConfig

__all__ = [
    "Catalog",
    "CatalogParams",
    "make_catalog",
    "CognitiveParams",
    "DriftFamily",
    "DriftParams",
    "FamilyState",
    "family_names",
    "get_family",
    "register_family",
    "registered_families",
    "LifetimeParams",
    "ResponseParams",
    "SeasonalParams",
    "ShockEvent",
    "ShockParams",
    "SocialParams",
    "UserState",
    "UserParams",
    "StepResult",
    "World",
    "WorldConfig",
]
