"""Counterexamples as scenario files that ``cowlab scenario run`` replays."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from cowlab.atomicio import write_text_atomic
from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.presets import KernelConfig

#: What each violation means, for the comments of a counterexample file.
MEANING = {
    "leak": "the write landed on a page another observer (another process's mapping or "
    "swap PTE, or another process's GUP reference or pin) can still see",
    "pin_incoherent": "the copy replaced the page under the writer's own GUP reference or "
    "pin, which keeps seeing the old page",
}


def _flow(step: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(step, default_flow_style=True, sort_keys=False, width=1000)
    return text.strip()


def _kernel_value(config: KernelConfig) -> Any:
    from cowlab.kernel.presets import PRESETS

    base = PRESETS.get(config.name)
    if base is None or base == config:
        return config.name
    diff = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(base, f.name)}
    return {"preset": config.name, **diff}


def to_scenario(result: Any, *, geometry: Geometry = DEFAULT_GEOMETRY,
                config: KernelConfig | None = None) -> str:
    """The counterexample of ``result`` (a VerifyResult) as scenario YAML text."""
    if result.counterexample is None or result.violation is None:
        raise ValueError("the result has no counterexample")
    from cowlab.kernels import resolve_kernel

    cfg = config or resolve_kernel(result.kernel)
    v = result.violation
    b = result.bounds
    decided = v["outcome"] + (f" (reason {v['reason']})" if v["reason"] else "")
    lines = [
        f"# cowlab verify counterexample: policy {result.policy} on kernel {result.kernel}",
        f"# violation: {v['violation']} at the write of mm {v['mm']} page {v['page']} "
        f"({v['fault']} fault, cpu {v['cpu']}): the policy decided {decided}",
        f"#   {v['violation']}: {MEANING.get(v['violation'], '')}",
        f"# {len(result.counterexample)} steps after the initial state, shortest in the "
        f"universe {b.mms} mms, {b.pages} pages, {b.cpus} cpus (breadth-first, then delta "
        "debugging)",
        f"# replay: cowlab scenario run FILE --policy {result.policy}",
    ]
    kernel = _kernel_value(cfg)
    lines.append("description: >")
    lines.append(f"  cowlab verify: {result.policy} commits {v['violation']} on "
                 f"{result.kernel} in {len(result.counterexample)} steps.")
    lines.append(f"kernel: {_flow(kernel) if isinstance(kernel, dict) else kernel}")
    lines.append(f"machine: {{cpus: {b.cpus}, swap: {b.swap}}}")
    if geometry != DEFAULT_GEOMETRY:
        geo = {f.name: list(x) if isinstance(x := getattr(geometry, f.name), tuple) else x
               for f in dataclasses.fields(geometry) if f.init
               and getattr(geometry, f.name) != getattr(DEFAULT_GEOMETRY, f.name)}
        lines.append(f"geometry: {_flow(geo)}")
    lines.append("steps:")
    for step in result.initial:
        lines.append(f"  - {_flow(step)}   # initial state")
    last = len(result.counterexample) - 1
    for i, step in enumerate(result.counterexample):
        note = (f"   # {v['violation']}: the policy decided {decided}" if i == last
                else f"   # also {result.notes[i]}" if i in result.notes else "")
        lines.append(f"  - {_flow(step)}{note}")
    return "\n".join(lines) + "\n"


def write_scenario(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_text_atomic(path, text)
