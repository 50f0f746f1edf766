"""Cost-model files: the simulator's costs measured on a real machine.

``cowlab real calibrate`` writes one; a scenario loads it with ``machine: {costs: FILE}``
(a path relative to the scenario file). The file is YAML (JSON is YAML too)::

    format: cowlab-costs
    version: 1
    host: {kernel: 6.18.44, machine: x86_64, ...}   # recorded, not used
    costs: {fault_ns: 700, lru_drain_ns: 900, ...}  # any CostModel fields

Unknown cost names, non-numbers and negative values are errors naming the file and key.
The fields left out keep their defaults (:class:`cowlab.kernel.costs.CostModel`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cowlab.kernel.costs import CostModel
from cowlab.yamlfile import YamlFileError, read_yaml

FORMAT = "cowlab-costs"


class CostFileError(ValueError):
    """A cost file that cannot be used; the message names the file and the key."""


def load_costs(path: str | Path) -> CostModel:
    """The :class:`CostModel` a cost file describes."""
    try:
        data = read_yaml(path, what="cost file")
    except YamlFileError as exc:
        raise CostFileError(str(exc)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CostFileError(f"{path}: not a cost file (expected 'format: {FORMAT}')")
    costs = data.get("costs")
    if not isinstance(costs, dict):
        raise CostFileError(f"{path}: costs: expected a mapping of cost names to numbers")
    known = CostModel.field_names()
    values: dict[str, float | int] = {}
    for key, value in costs.items():
        if key not in known:
            raise CostFileError(f"{path}: costs.{key}: unknown cost; expected one of "
                                f"{', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise CostFileError(f"{path}: costs.{key}: expected a non-negative number, "
                                f"got {value!r}")
        values[key] = float(value) if key == "cpu_ghz" else round(value)
    if values.get("cpu_ghz", 1.0) <= 0:
        raise CostFileError(f"{path}: costs.cpu_ghz: must be positive")
    return dataclasses.replace(CostModel(), **values)  # type: ignore[arg-type]
