"""Kernel presets registered by plugins resolve everywhere a kernel name is accepted."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from cowlab import hookimpl
from cowlab.kernel.presets import PresetError, get_preset
from cowlab.kernels import resolve_kernel
from cowlab.plugins import load_registry
from cowlab.scenario import Scenario


@pytest.fixture
def plugin_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = types.ModuleType("big_batches")

    @hookimpl
    def cowlab_register_kernels(register: Any) -> None:
        register("v5.18-big-batches",
                 lambda: get_preset("v5.18").with_overrides({"lru_batch_size": 31}),
                 description="v5.18 with the v6.9 batch size")

    plugin.cowlab_register_kernels = cowlab_register_kernels  # type: ignore[attr-defined]
    registry = load_registry(entry_points=True, extra_plugins=[("big_batches", plugin)])
    monkeypatch.setattr("cowlab.kernels.get_registry", lambda: registry)


def test_a_plugin_preset_resolves_by_name(plugin_kernel: None) -> None:
    config = resolve_kernel("v5.18-big-batches")
    assert config.lru_batch_size == 31 and config.default_policy == "patched-lru"


def test_a_plugin_preset_works_in_a_scenario_file(plugin_kernel: None, tmp_path: Path) -> None:
    doc = {"kernel": "v5.18-big-batches", "steps": [{"op": "mmap", "mm": "a", "page": 0}]}
    scenario = Scenario.from_mapping(doc, source="s.yaml")
    assert scenario.kernel.lru_batch_size == 31


def test_an_unknown_kernel_lists_the_shipped_presets(plugin_kernel: None) -> None:
    with pytest.raises(PresetError, match=r"did you mean 'v5\.8'") as info:
        resolve_kernel("v5.81")
    assert "from plugins: v5.18-big-batches" in str(info.value)
