"""Validation and override helpers shared by every parameter dataclass."""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any


def check_range(
    owner: str,
    name: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise ValueError naming `owner.name` unless lo <= value <= hi (open ends if asked)."""
    field = f"{owner}.{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be finite, got {value!r}")
    # A negative zero passes `value < 0` but numpy refuses it as a scale ("scale < 0"): below a 0 bound it is out.
    negative_zero = value == 0 and math.copysign(1.0, value) < 0
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo or (lo == 0 and negative_zero))
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{field} must be in {left}{lo_s}, {hi_s}{right}, got {value!r}")


def check_int(owner: str, name: str, value: int, lo: int | None = None, hi: int | None = None) -> None:
    """Raise ValueError unless `value` is an int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    check_range(owner, name, value, lo, hi)


def check_seed(name: str, value: Any) -> None:
    """Raise ValueError naming `name` unless `value` is a seed: an integer >= 0 (numpy's are too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def physical_memory() -> float:
    """Bytes of physical memory on this machine (inf where the platform does not say)."""
    import os

    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_memory(what: str, nbytes: float, share: float = 0.8) -> None:
    """Raise ValueError before allocating `nbytes` for `what` if that exceeds `share` of this
    machine's memory: a clear message instead of a MemoryError (or the OOM killer) later."""
    limit = share * physical_memory()
    if nbytes > limit:
        raise ValueError(
            f"{what} needs about {nbytes / 2**30:,.1f} GiB, more than {limit / 2**30:,.1f} GiB "
            f"({share:.0%} of this machine's memory)"
        )


def check_bool(owner: str, name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be true or false, got {value!r}")


def apply_overrides(obj: Any, overrides: Mapping[str, Any], path: str = "") -> Any:
    """Return a copy of the dataclass `obj` with nested `overrides` applied.

    Nested dataclass fields take nested mappings; every other field takes a
    value that the dataclass then validates. An unknown key is a ValueError that
    lists the allowed ones.
    """
    if not isinstance(overrides, Mapping):
        raise ValueError(
            f"overrides for '{path or type(obj).__name__}' must be a mapping, got {type(overrides).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ValueError(f"unknown config key '{where}'; allowed: {', '.join(sorted(fields))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            changes[key] = apply_overrides(current, value, where)
        elif hasattr(type(obj), f"_coerce_{key}"):
            changes[key] = getattr(type(obj), f"_coerce_{key}")(value, where)
        else:
            changes[key] = value
    return dataclasses.replace(obj, **changes)


def merge_overrides(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Nested override mappings merged, `extra` winning key by key; neither input is modified."""
    out = copy.deepcopy(dict(base))
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a parameter dataclass (for logging hyperparameters)."""
    return dataclasses.asdict(obj)
