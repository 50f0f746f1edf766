"""The user documentation stays true to the code (docs/scenarios.md, docs/config.md).

These tests fail when the code gains an op, a field, a facility, a preset, a counter,
a machine or geometry key, a cost or a shipped scenario that the docs do not mention,
and when a YAML example or a pasted run output in the docs no longer matches what
cowlab does.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cowlab.kernel.costs import DEVICES, CostModel
from cowlab.kernel.counters import COUNTER_NAMES
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.kernel import ADVICES
from cowlab.kernel.mm import PROTS
from cowlab.kernel.presets import _NOT_FACILITIES, PRESETS, KernelConfig
from cowlab.metrics import summarize
from cowlab.plugins import get_registry
from cowlab.scenario import _MACHINE_KEYS, _TOP_KEYS, OPS, Scenario, ScenarioRunner, format_result

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS_MD = ROOT / "docs" / "scenarios.md"
CONFIG_MD = ROOT / "docs" / "config.md"
SCENARIO_DIR = ROOT / "experiments" / "scenarios"

FACILITIES = [f.name for f in dataclasses.fields(KernelConfig) if f.name not in _NOT_FACILITIES]
GEOMETRY_KEYS = ("paging_levels", "levels", "high_user_addresses", "mthp_orders")

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
_HEADER = re.compile(r"^scenario (\S+): kernel (\S+), policy (\S+)$")


@pytest.fixture(scope="module")
def scenarios_md() -> str:
    return SCENARIOS_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config_md() -> str:
    return CONFIG_MD.read_text(encoding="utf-8")


def code_blocks(text: str, *languages: str) -> list[str]:
    """The bodies of the fenced code blocks tagged with one of ``languages``."""
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1) in languages]


def op_section(text: str, op: str) -> str:
    """The text under the heading that names ``op`` (up to the next heading of any level)."""
    match = re.search(rf"^(#+) `{re.escape(op)}`\s*$", text, re.M)
    assert match is not None, f"docs/scenarios.md has no heading for op '{op}'"
    rest = text[match.end():]
    following = re.search(r"^#+ ", rest, re.M)
    return rest[: following.start()] if following else rest


def mentioned(name: str, text: str) -> bool:
    """``name`` appears in backquotes (alone or starting a longer code span)."""
    return re.search(rf"`{re.escape(name)}[`:\s]", text) is not None


def scenario_examples(text: str) -> list[dict[str, Any]]:
    """Every YAML block of the docs that is a scenario (has a ``steps`` key)."""
    docs = [yaml.safe_load(block) for block in code_blocks(text, "yaml")]
    return [d for d in docs if isinstance(d, dict) and "steps" in d]


def run(scenario: Scenario, policy: str | None = None) -> Any:
    made = get_registry().make_policy(policy or scenario.kernel.default_policy)
    return ScenarioRunner(scenario, made).run()


# ------------------------------------------------------------------ docs/scenarios.md


def test_every_op_has_its_own_section_in_scenarios_md(scenarios_md: str) -> None:
    for op in OPS:
        op_section(scenarios_md, op)


@pytest.mark.parametrize("op", list(OPS))
def test_every_field_of_an_op_is_documented_in_its_section(scenarios_md: str, op: str) -> None:
    section = op_section(scenarios_md, op)
    missing = [f for f in OPS[op].fields if not mentioned(f, section)]
    assert not missing, f"op '{op}': fields {missing} are not documented in its section"


def test_every_madvise_advice_and_protection_is_documented(scenarios_md: str) -> None:
    madvise = op_section(scenarios_md, "madvise")
    assert [a for a in ADVICES if not mentioned(a, madvise)] == []
    mprotect = op_section(scenarios_md, "mprotect")
    assert [p for p in PROTS if not mentioned(p, mprotect)] == []


def test_every_top_level_key_is_documented(scenarios_md: str) -> None:
    assert [k for k in _TOP_KEYS if not mentioned(k, scenarios_md)] == []


def test_every_json_key_of_a_result_and_an_attempt_is_documented(scenarios_md: str) -> None:
    keys = ["scenario", "kernel", "policy", "attempts", "counters", "violations", "metrics"]
    keys += list(FaultRecord("mm", 0, 0, "none", "none").to_dict())
    assert [k for k in keys if not mentioned(k, scenarios_md)] == []


def test_every_metric_is_documented(scenarios_md: str) -> None:
    metrics = summarize([], {})
    assert [m for m in metrics if not mentioned(m, scenarios_md)] == []


def test_every_shipped_scenario_is_listed(scenarios_md: str) -> None:
    shipped = sorted(p.name for p in SCENARIO_DIR.glob("*.yaml"))
    assert shipped, "no shipped scenarios found"
    assert [name for name in shipped if name not in scenarios_md] == []


def test_yaml_examples_load_and_run_with_the_presets_default_policy(scenarios_md: str) -> None:
    examples = scenario_examples(scenarios_md)
    assert examples, "docs/scenarios.md has no runnable YAML example"
    for i, doc in enumerate(examples):
        scenario = Scenario.from_mapping(doc, source=f"docs/scenarios.md example {i}")
        result = run(scenario)
        assert result.attempts, f"example {i} records no write attempt"


def test_pasted_run_outputs_match_what_cowlab_prints(scenarios_md: str) -> None:
    """A ``text`` block starting with the run header is the output of a shipped file, or
    of a YAML example whose ``name`` plus ``.yaml`` is the file name in the header."""
    examples = {f"{d['name']}.yaml": d for d in scenario_examples(scenarios_md) if "name" in d}
    checked = 0
    for block in code_blocks(scenarios_md, "text"):
        header = _HEADER.match(block.splitlines()[0]) if block.strip() else None
        if header is None:
            continue
        source, kernel, policy = header.groups()
        if source in examples:
            scenario = Scenario.from_mapping(examples[source], source=source, kernel=kernel)
        else:
            text = (ROOT / source).read_text(encoding="utf-8")
            scenario = Scenario.from_mapping(yaml.safe_load(text), source=source, kernel=kernel)
        assert format_result(run(scenario, policy)) == block.rstrip("\n"), source
        checked += 1
    assert checked >= 2, "expected the example's and a shipped scenario's output"


# ------------------------------------------------------------------ docs/config.md


def test_every_preset_is_documented(config_md: str) -> None:
    assert [p for p in PRESETS if not mentioned(p, config_md)] == []


def test_every_kernel_facility_is_documented(config_md: str) -> None:
    assert [f for f in FACILITIES if not mentioned(f, config_md)] == []


def test_facility_table_shows_every_presets_value(config_md: str) -> None:
    header = "| facility | type | " + " | ".join(PRESETS) + " |"
    assert header in config_md, "the facility table's header does not list every preset"
    for name in FACILITIES:
        values = []
        for preset in PRESETS.values():
            value = getattr(preset, name)
            values.append(str(value).lower() if isinstance(value, bool) else str(value))
        cells = " | ".join(values)
        row = re.search(rf"^\| `{name}` \| \w+ \| {re.escape(cells)} \|", config_md, re.M)
        assert row is not None, f"facility '{name}': the table row has other values"


def test_every_counter_is_documented(config_md: str) -> None:
    assert [c for c in COUNTER_NAMES if not mentioned(c, config_md)] == []


def test_every_machine_key_device_and_geometry_key_is_documented(config_md: str) -> None:
    names = [*_MACHINE_KEYS, *DEVICES, *GEOMETRY_KEYS]
    assert [n for n in names if not mentioned(n, config_md)] == []


def test_every_cost_is_documented_with_its_default(config_md: str) -> None:
    for f in dataclasses.fields(CostModel):
        default = re.escape(str(f.default))
        row = re.search(rf"^\| `{f.name}` \| {default} \|", config_md, re.M)
        assert row is not None, f"cost '{f.name}' (default {f.default}) is not in the table"
