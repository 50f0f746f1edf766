"""Shared fixtures: a kernel factory with the shipped policies."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import settings

from cowlab.kernel import Kernel, Machine, get_preset
from cowlab.plugins import get_registry

KernelFactory = Callable[..., Kernel]

# Property tests draw the same examples on every run (a CI run that passes passes
# again); HYPOTHESIS_PROFILE=explore draws fresh ones to look for new counterexamples.
settings.register_profile("cowlab", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "cowlab"))


def make_kernel(
    preset: str,
    policy: str | None = None,
    *,
    seed: int = 0,
    facilities: dict[str, object] | None = None,
    **machine: object,
) -> Kernel:
    """A kernel of ``preset`` running ``policy`` (default: the preset's own rule), with
    optional facility overrides."""
    config = get_preset(preset).with_overrides(facilities or {})
    made = get_registry().make_policy(policy or config.default_policy)
    return Kernel(config, made, machine=Machine(**machine), seed=seed)  # type: ignore[arg-type]


@pytest.fixture
def kernel() -> KernelFactory:
    """``kernel(preset, policy=None, **machine)`` builds a fresh simulated kernel."""
    return make_kernel
