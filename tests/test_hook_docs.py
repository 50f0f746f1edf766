"""Every hook of the plugin API is documented and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

from cowlab.plugins import CowlabSpecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, _ in inspect.getmembers(CowlabSpecs, inspect.isfunction)
         if name.startswith("cowlab_")]


def test_the_hook_set_is_the_documented_public_one() -> None:
    assert sorted(HOOKS) == sorted([
        "cowlab_register_policies", "cowlab_register_workloads", "cowlab_register_kernels",
        "cowlab_register_metrics", "cowlab_register_commands", "cowlab_run_started",
        "cowlab_episode_finished", "cowlab_run_finished",
    ])


def test_every_hook_is_documented_in_the_hook_reference() -> None:
    text = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    missing = [hook for hook in HOOKS if f"`{hook}(" not in text]
    assert not missing, f"docs/hooks.md does not document {missing}"


def test_every_hook_is_exercised_by_a_test() -> None:
    here = Path(__file__).name
    corpus = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != here
    )
    missing = [hook for hook in HOOKS if hook not in corpus]
    assert not missing, f"no test mentions {missing}"


def test_every_faultview_member_is_in_the_policy_api_reference() -> None:
    from cowlab.kernel.fault import FaultView

    text = (ROOT / "docs" / "policy-api.md").read_text(encoding="utf-8")
    public = [n for n in dir(FaultView) if not n.startswith("_")]
    missing = [n for n in public if f"`{n}" not in text]
    assert not missing, f"docs/policy-api.md does not document {missing}"
