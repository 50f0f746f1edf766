"""Every exception class cowlab defines pickles (a process pool ships errors back)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import cowlab_policies
import cowlab_sb3
import pytest

import cowlab


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for pkg in (cowlab, cowlab_policies, cowlab_sb3):
        names = [pkg.__name__] + [m.name for m in pkgutil.walk_packages(
            pkg.__path__, prefix=pkg.__name__ + ".")]
        for name in names:
            try:
                module = importlib.import_module(name)
            except ImportError:  # an optional extra that is not installed
                continue
            for obj in vars(module).values():
                if (inspect.isclass(obj) and issubclass(obj, BaseException)
                        and obj.__module__.partition(".")[0] == pkg.__name__):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = _exception_classes()


def _sample(annotation: Any, name: str) -> Any:
    text = str(annotation)
    if "int" in text:
        return 7
    if "Iterable" in text or "list" in text or "Sequence" in text:
        return ["alpha", "beta"]
    return f"some {name}"


def _instance(cls: type[BaseException]) -> BaseException:
    sig = inspect.signature(cls.__init__)
    params = list(sig.parameters.values())[1:]
    if all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return cls("a message naming a file and a key")
    args = [_sample(p.annotation, p.name) for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    kwargs = {p.name: _sample(p.annotation, p.name) for p in params
              if p.kind is p.KEYWORD_ONLY}
    return cls(*args, **kwargs)


def test_the_walk_finds_the_exceptions_of_every_layer() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"UnknownNameError", "PluginError", "ConfigError", "RecordError", "RunError",
            "ScenarioError", "KernelError", "PolicyError", "LeaderboardError", "TrainError",
            "Sleep", "AlgoError", "ModelTrustError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_cowlab_exception_survives_pickling(cls: type[BaseException]) -> None:
    exc = _instance(cls)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert vars(back) == vars(exc)
