"""The registry of drift families: `register_family` adds one, in the order the world calls hooks.

The four built-in families are registered below through the same call a researcher uses. A family
registered here has its section in every `WorldConfig` built afterwards; a scenario file can
instead name a family by its module path under `families:` (`load_family`), for that scenario only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from simulator.drift import DriftFamily, DriftParams
from simulator.modpath import import_attr

# Sections of a scenario that are not drift families (WorldConfig's own, the env's, the families: list).
RESERVED = ("catalog", "users", "response", "lifetime", "env", "families", "name")

_REGISTRY: dict[str, DriftFamily] = {}


def check_family(family: Any, where: str | None = None) -> DriftFamily:
    """`family` if it is a well-formed DriftFamily; a ValueError that says what is wrong otherwise
    (`where` names it in the message; by default "drift family 'NAME'")."""
    if not isinstance(family, DriftFamily):
        raise ValueError(f"{where or 'drift family'}: not a DriftFamily (got {_kind(family)})")
    name = family.name
    where = where or f"drift family {name!r}"
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{where}: its name must be an identifier (a config section), got {name!r}")
    if name in RESERVED:
        raise ValueError(f"{where}: its name '{name}' is a section of the scenario already ({', '.join(RESERVED)})")
    params = family.params
    if not (isinstance(params, type) and issubclass(params, DriftParams) and dataclasses.is_dataclass(params)):
        raise ValueError(f"{where}: its params must be a dataclass deriving from DriftParams, got {params!r}")
    if name != params.FAMILY_NAME:
        raise ValueError(
            f"{where}: its params' FAMILY_NAME is '{params.FAMILY_NAME}', not '{name}' (errors would name another one)"
        )
    try:
        params()
    except Exception as err:  # a researcher's params class: one line whatever it raises
        raise ValueError(f"{where}: its default params are refused: {err}") from None
    return family


def _kind(obj: Any) -> str:
    return f"class {obj.__qualname__}" if isinstance(obj, type) else type(obj).__name__


def register_family(family: DriftFamily) -> DriftFamily:
    """Register `family` (a DriftFamily instance): its section is then in every WorldConfig built,
    and the world calls its hooks after those of the families registered before it. A second family
    of a registered name is refused; registering the same family again changes nothing."""
    check_family(family)
    known = _REGISTRY.get(family.name)
    if known is not None and known != family:
        raise ValueError(f"a drift family named '{family.name}' is registered already: {known!r}, not {family!r}")
    _REGISTRY[family.name] = family
    return family


def registered_families() -> tuple[DriftFamily, ...]:
    """The registered families, in registration order (the order of their hooks)."""
    return tuple(_REGISTRY.values())


def family_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_family(name: str) -> DriftFamily:
    if name not in _REGISTRY:
        raise ValueError(f"unknown drift family '{name}'; valid families: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def load_family(name: str, path: Any) -> DriftFamily:
    """The family a scenario's `families:` entry `name: path` names ("package.module:attr", a
    DriftFamily subclass or instance). A ValueError in one line names the entry and what failed:
    the module not found, the attribute missing, not a DriftFamily, another family's name, or a
    registered family of that name."""
    where = f"families.{name}"
    obj = import_attr(path, where)
    if isinstance(obj, type) and issubclass(obj, DriftFamily):
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(f"{where}: {path!r} could not be built: {type(err).__name__}: {err}") from None
    if not isinstance(obj, DriftFamily):
        raise ValueError(f"{where}: {path!r} is not a DriftFamily (got {_kind(obj)})")
    family = check_family(obj, f"{where}: {path!r}")
    if family.name != name:
        raise ValueError(f"{where}: {path!r} is the family '{family.name}' (list it as {family.name}: {path!r})")
    known = _REGISTRY.get(name)
    if known is not None and known != family:
        raise ValueError(f"{where}: a drift family named '{name}' is registered already: {known!r}")
    return family


def _register_built_ins() -> None:
    from simulator import cognitive, seasonal, shocks, social

    for family in (shocks.FAMILY, cognitive.FAMILY, social.FAMILY, seasonal.FAMILY):
        register_family(family)


_register_built_ins()
