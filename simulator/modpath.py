"""A researcher's code, loaded by its module path "package.module:attr" (a drift family in a
scenario's `families:`), with one clear line when it cannot be."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def import_attr(path: Any, where: str) -> Any:
    """The attribute `attr` of the module of `path` = "package.module:attr", imported with the
    working directory on the path (a researcher's folder is found where they run from). A
    ValueError names what failed: the path's form, the module not found, or the attribute missing."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ValueError(f"{where}: {path!r} is not a module path 'package.module:attr'")
    module_name, attr = path.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name) and module_name[len(err.name) :][:1] in ("", "."):
            raise ValueError(f"{where}: module '{module_name}' not found (from {path!r})") from None
        raise ValueError(f"{where}: importing module '{module_name}' failed: {err}") from None
    except Exception as err:  # a researcher's module that raises on import: one line, not a traceback
        raise ValueError(f"{where}: importing module '{module_name}' failed: {type(err).__name__}: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}: module '{module_name}' has no attribute '{attr}' (from {path!r})")
        obj = getattr(obj, part)
    return obj
