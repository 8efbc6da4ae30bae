"""A researcher's agent, from their own module: what a module path ("package.module:attr", wherever an
agent's name goes) or an installed package's entry point names becomes as a registry entry.

The attribute is one of

  a Policy class        (agents.policy: a `name` and act(obs); optional hooks are protocols there;
                        one with observe() learns online: a stress test warms it up first);
  a TrainableAgent class (agents.base: train_iteration, policy, save, restore, env_steps);
  a factory             a function returning either: it trains when its return annotation is a
                        TrainableAgent class;
  an AgentSpec          the full entry (smoke sizes, lifetime defaults, ...), as register_agent takes it.

A class or a factory is called with whichever of `scenario`, `params` and `ctx` its signature names
(agents.registry.FACTORY_ARGUMENTS). Its settings are the frozen dataclass its `params` argument is
annotated with (or whose instance is its default): the `algo:` section of a run config fills it, and a
wrong key or value is one line naming it. Anything that fails is one ValueError line naming the path:
the module not found, the attribute missing, not a Policy, a factory that cannot be called.

  # my_rec.py, in the folder you run from (or on PYTHONPATH)
  @dataclass(frozen=True)
  class Params:
      weight: float = 1.0

  class MyRec:
      name = "my-rec"
      def __init__(self, params: Params, ctx): ...
      def act(self, obs): ...

  python -m experiments.run --agent my_rec:MyRec --config run.yaml     # run.yaml: algo: {weight: 2.0}
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from agents.registry import AgentSpec, factory_arguments, is_trainable
from simulator.modpath import import_attr


def spec_from_path(path: str) -> AgentSpec:
    """The entry of the agent at module path `path`, named by it."""
    return spec_from_object(import_attr(path, "agent"), path, f"agent {path!r}")


def spec_from_object(obj: Any, name: str, where: str) -> AgentSpec:
    """The entry named `name` of `obj` (see the module docstring); `where` names it in errors."""
    if isinstance(obj, AgentSpec):
        return dataclasses.replace(obj, name=name)
    if isinstance(obj, type):
        trains = is_trainable(obj)
        if not trains and not callable(getattr(obj, "act", None)):
            raise ValueError(
                f"{where}: class {obj.__qualname__} is not a Policy (no act(obs)) nor a TrainableAgent "
                "(train_iteration, policy, save, restore)"
            )
        target = obj.__init__
    elif inspect.isfunction(obj) or inspect.ismethod(obj):
        returned = _hints(obj, where).get("return")
        trains = isinstance(returned, type) and is_trainable(returned)
        target = obj
    else:
        got = (
            f"an instance of {type(obj).__qualname__}: give its class or a factory"
            if callable(getattr(obj, "act", None))
            else f"a {type(obj).__qualname__}"
        )
        raise ValueError(f"{where}: not a Policy class, a TrainableAgent class, a factory or an AgentSpec (got {got})")
    factory_arguments(obj, where)  # what it needs, before any work
    doc = inspect.getdoc(obj) or ""
    return AgentSpec(
        name=name,
        description=doc.splitlines()[0] if doc else f"{getattr(obj, '__qualname__', name)} (from {name})",
        factory=obj,
        params=_settings_class(target, where),
        trains=trains,
        online=isinstance(obj, type) and not trains and callable(getattr(obj, "observe", None)),
        uses_device=trains,  # a learner may train on a GPU: --device applies (ctx.device)
    )


def _hints(fn: Any, where: str) -> dict[str, Any]:
    """The resolved annotations of `fn`; one that does not resolve is a ValueError naming it."""
    try:
        return typing.get_type_hints(fn)
    except Exception as err:  # a forward reference to a name the module lacks
        raise ValueError(f"{where}: its annotations do not resolve: {type(err).__name__}: {err}") from None


def _settings_class(fn: Any, where: str) -> type | None:
    """The frozen dataclass of the `params` argument of `fn`: its annotation, or its default's type; None
    without a `params` argument."""
    try:
        parameter = inspect.signature(fn).parameters.get("params")
    except (TypeError, ValueError):
        return None
    if parameter is None:
        return None
    annotated = _hints(fn, where).get("params")
    for candidate in (annotated, type(parameter.default) if parameter.default is not parameter.empty else None):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    raise ValueError(
        f"{where}: its 'params' argument needs a dataclass annotation (the settings the algo: section fills), "
        f"got {annotated!r}"
    )
