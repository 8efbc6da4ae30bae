"""The registered drift families, in the order the world calls their hooks (see simulator.drift).

One list, one spelling: a family's name is its config section, its preset and its name in the
stress tool.
"""

from __future__ import annotations

from simulator import cognitive, seasonal, shocks, social
from simulator.drift import DriftFamily

FAMILIES: tuple[DriftFamily, ...] = (shocks.FAMILY, cognitive.FAMILY, social.FAMILY, seasonal.FAMILY)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)


def get_family(name: str) -> DriftFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown drift family '{name}'; valid families: {', '.join(FAMILY_NAMES)}")
