"""Structured training configs: dataclass schema <- YAML file <- ``key=value`` overrides.

``cowlab train configs/exclusive.yaml seed=3 agent.total_timesteps=20000`` loads the
schema below (:class:`TrainConfig`), merges the YAML file over it and then every
command-line override, in order. Each layer is checked before it is merged: an unknown
key, a value of the wrong type or an unknown choice is a :class:`ConfigError` that names
the full key (``agent.hyperparameters.n_step``) and where it came from (the file, or
the override), with a "did you mean" hint. A workload's or policy's own parameters are
checked against the dataclass schema its plugin registered, the same way.

    >>> cfg = load_config(None, ["name=demo", "workload.name=forceswap-v1",
    ...                          "agent.total_timesteps=1000"])
    >>> cfg.agent.total_timesteps, cfg.output.dir
    (1000, 'runs/demo')
    >>> try:
    ...     load_config(None, ["agent.totl_timesteps=1"])
    ... except ConfigError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    unknown key 'agent.totl_timesteps' (did you mean 'agent.total_timesteps'?)

Seeds. Training episodes, the periodic validation that picks the best model, and the
final evaluation draw workload seeds from disjoint ranges (:data:`TRAIN_SEEDS`,
:data:`VALIDATION_SEED_BASE`, :data:`EVAL_SEED_BASE`), so an evaluation seed is never
a training seed, whatever ``seed`` says.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cowlab.geometry import DEFAULT_GEOMETRY, Geometry, GeometryError
from cowlab.kernel.errors import KernelError
from cowlab.kernel.kernel import Machine
from cowlab.kernel.presets import KernelConfig, PresetError, get_preset
from cowlab.plugins import PluginError, PluginRegistry, get_registry
from cowlab.yamlfile import YamlFileError, read_yaml

__all__ = [
    "EVAL_SEED_BASE",
    "TRAIN_SEEDS",
    "VALIDATION_SEED_BASE",
    "ActionMode",
    "AgentConfig",
    "Algo",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "ExecutorConfig",
    "ExecutorKind",
    "GeometryConfig",
    "KernelSection",
    "MachineConfig",
    "OutputConfig",
    "RewardConfig",
    "TrainConfig",
    "WorkloadConfig",
    "WorkloadEntry",
    "build_geometry",
    "build_kernel_config",
    "build_machine",
    "env_kwargs",
    "eval_seeds",
    "load_config",
    "save_config",
    "schema_keys",
    "to_yaml",
    "validation_seeds",
    "workload_entries",
]

#: Training episodes draw their workload seeds from ``range(TRAIN_SEEDS)``.
TRAIN_SEEDS = 1 << 30
#: Periodic validation (best-model selection) uses ``VALIDATION_SEED_BASE + i``.
VALIDATION_SEED_BASE = 1 << 30
#: The final evaluation uses ``EVAL_SEED_BASE + i``: disjoint from both ranges above.
EVAL_SEED_BASE = 1 << 31


class ConfigError(ValueError):
    """A bad config: the message names the source, the full key and the reason."""


# ------------------------------------------------------------------------------ schema


class ActionMode(enum.Enum):
    """What one env step is."""

    #: One step decides the fault: Discrete(2), 0 = copy, 1 = reuse.
    decision = "decision"
    #: One step is copy, reuse or a kernel primitive (Discrete(7)).
    primitives = "primitives"


class Algo(enum.Enum):
    """The learning algorithm (stable-baselines3; maskable_ppo needs sb3-contrib)."""

    ppo = "ppo"
    dqn = "dqn"
    maskable_ppo = "maskable_ppo"


class ExecutorKind(enum.Enum):
    """Where evaluation runs execute: the executor names of ``cowlab eval --executor`` and
    of leaderboard configs (``local``, the old name of ``process``, is still read, with a
    deprecation warning)."""

    inprocess = "inprocess"
    process = "process"
    ray = "ray"


@dataclass
class KernelSection:
    """The simulated kernel: a preset plus facility overrides."""

    #: Kernel preset (``v5.9``, ``v5.18``, ``v5.19``, ...; see ``cowlab kernels``).
    preset: str = "v5.19"
    #: Facility overrides by name, e.g. ``{lru_batch_size: 31}``.
    facilities: dict[str, Any] = field(default_factory=dict)


@dataclass
class GeometryConfig:
    """The address-space geometry (docs/config.md, Geometry)."""

    #: 4 (48-bit VA) or 5 (57-bit VA).
    paging_levels: int = 4
    #: With 5-level paging, allow user addresses above 2^47.
    high_user_addresses: bool = False
    #: Enabled anonymous mTHP orders (null: the default set).
    mthp_orders: list[int] | None = None


@dataclass
class MachineConfig:
    """The simulated machine (a workload may raise ``cpus`` and pick ``swap``)."""

    #: CPUs.
    cpus: int = 2
    #: Swap device: zram, pmem, ssd or nvme.
    swap: str = "zram"
    #: SWP_STABLE_WRITES on the swap device.
    stable_writes: bool = False
    #: Swap slots on the device.
    swap_slots: int = 1 << 20


@dataclass
class WorkloadEntry:
    """One workload of a weighted mix."""

    #: Registered workload id (``cowlab workloads``), e.g. ``forceswap-v1``.
    name: str = MISSING
    #: The workload's parameters, checked against the schema it registered.
    params: dict[str, Any] = field(default_factory=dict)
    #: Relative probability of drawing this workload for an episode.
    weight: float = 1.0


@dataclass
class WorkloadConfig:
    """One workload (``name`` + ``params``) or a weighted ``mix``; not both."""

    #: A single workload id.
    name: str | None = None
    #: Its parameters.
    params: dict[str, Any] = field(default_factory=dict)
    #: A weighted mix of workloads (each episode draws one).
    mix: list[WorkloadEntry] = field(default_factory=list)


@dataclass
class RewardConfig:
    """Reward weights, applied per decided write fault (from its FaultRecord)."""

    #: Bonus for reusing a page that was truly exclusive.
    safe_reuse: float = 1.0
    #: Penalty per microsecond of simulated fault latency.
    latency_per_us: float = 0.1
    #: Penalty per page a copy allocates.
    memory_per_page: float = 0.1
    #: Penalty per violation (leak or pin_incoherent).
    violation: float = 100.0


@dataclass
class EnvConfig:
    """The Gymnasium environment ``cowlab/CowFault-v0``."""

    #: ``decision`` (copy/reuse) or ``primitives`` (copy, reuse and kernel primitives).
    action_mode: ActionMode = ActionMode.decision
    #: Mask (and override) REUSE unless kernel-visible state proves exclusivity.
    shield: bool = False
    #: Episode budget: policy decisions per episode (the run's Budget.max_decisions).
    max_decisions: int = 256
    #: Optional episode budget in simulated milliseconds.
    max_time_ms: float | None = None
    #: Primitives mode: primitives allowed per fault before copy/reuse is forced.
    max_primitives: int = 4
    #: End the episode (terminated) at the first violation.
    terminate_on_violation: bool = False
    #: Reward weights.
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class AgentConfig:
    """The learning agent (stable-baselines3 via the ``cowlab_sb3`` plugin)."""

    #: ``ppo``, ``dqn`` or ``maskable_ppo``.
    algo: Algo = Algo.ppo
    #: Environment steps to train for.
    total_timesteps: int = 50_000
    #: Environments stepped in lockstep (in-process).
    n_envs: int = 4
    #: torch intra-op threads (1 is fastest for small networks on a few cores).
    torch_threads: int = 1
    #: torch device.
    device: str = "cpu"
    #: Hidden layer sizes of the policy (and value) network.
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    #: PPO's constructor arguments (used when ``algo`` is ppo), over cowlab's defaults.
    ppo: dict[str, Any] = field(default_factory=dict)
    #: DQN's constructor arguments (used when ``algo`` is dqn), over cowlab's defaults.
    dqn: dict[str, Any] = field(default_factory=dict)
    #: MaskablePPO's constructor arguments (when ``algo`` is maskable_ppo).
    maskable_ppo: dict[str, Any] = field(default_factory=dict)
    #: Extra constructor arguments of whichever algorithm is chosen, over its section.
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def algo_hyperparameters(self) -> dict[str, Any]:
        """The chosen algorithm's arguments: its section, then ``hyperparameters``."""
        return {**dict(getattr(self, self.algo.name)), **dict(self.hyperparameters)}


@dataclass
class EvalConfig:
    """Periodic validation during training and the final evaluation."""

    #: Final evaluation: runs per workload, on seeds EVAL_SEED_BASE + 0..seeds-1.
    seeds: int = 5
    #: Decisions per evaluation run.
    max_decisions: int = 2_000
    #: Workloads to evaluate on (empty: the training workloads).
    workloads: list[WorkloadEntry] = field(default_factory=list)
    #: Policies evaluated beside the agent.
    baselines: list[str] = field(
        default_factory=lambda: ["baseline", "patched", "patched-lru", "exclusive", "oracle"]
    )
    #: Parameters of baseline policies, by name.
    policy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Validate every this many training steps (0: only at the end).
    every_steps: int = 10_000
    #: Validation runs per workload, on seeds VALIDATION_SEED_BASE + 0..n-1.
    validation_seeds: int = 2


@dataclass
class ExecutorConfig:
    """Where evaluation runs execute."""

    #: ``process`` (a local process pool), ``inprocess`` (one run after another in this
    #: process) or ``ray`` (needs the ``ray`` extra): where ``cowlab eval CONFIG`` runs
    #: its sweep. ``cowlab train`` evaluates in its own process either way.
    kind: ExecutorKind = ExecutorKind.process
    #: Ray cluster address (``auto``), for ``kind: ray``.
    address: str = "auto"


@dataclass
class OutputConfig:
    """Where a run writes its files."""

    #: Run directory (model, checkpoints, logs, config, evaluation).
    dir: str = "runs/${name}"
    #: Write a checkpoint every this many steps (0: only at the end and on Ctrl-C).
    checkpoint_every: int = 10_000
    #: Write TensorBoard logs (when tensorboard is installed).
    tensorboard: bool = True
    #: Show a progress bar.
    progress: bool = True


@dataclass
class TrainConfig:
    """A training run: ``cowlab train CONFIG [key=value ...]``."""

    #: Run name (the default output directory is runs/<name>).
    name: str = "cowlab"
    #: Master seed: agent initialisation and the training episodes' seeds.
    seed: int = 0
    kernel: KernelSection = field(default_factory=KernelSection)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    machine: MachineConfig = field(default_factory=MachineConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# ------------------------------------------------------------------------------ checking


def _hint(name: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _type_words(tp: object) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    return str(tp)


def _is_interpolation(value: object) -> bool:
    return isinstance(value, str) and "${" in value


def _check_value(value: object, tp: object, key: str, where: str) -> None:
    """Check one raw YAML value against a schema annotation."""
    if _is_interpolation(value):
        return
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return
        errors = []
        for arg in args:
            try:
                _check_value(value, arg, key, where)
                return
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if value is None and tp is not Any:
        if dataclasses.is_dataclass(tp) or tp in (int, float, bool, str) or origin is not None:
            raise ConfigError(f"{where}: {key}: must not be null")
        return
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key}: expected a mapping, got {value!r}")
        _check_mapping(value, tp, key, where)  # type: ignore[arg-type]
        return
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = [m.name for m in tp]
        text = value.name if isinstance(value, enum.Enum) else value
        if text not in choices:
            raise ConfigError(
                f"{where}: {key}: expected one of {', '.join(choices)}, got {value!r}"
                + (_hint(text, choices) if isinstance(text, str) else "")
            )
        return
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        for i, v in enumerate(value):
            _check_value(v, item, f"{key}[{i}]", where)
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key}: expected a mapping, got {value!r}")
        _kt, vt = typing.get_args(tp) or (str, Any)
        for k, v in value.items():
            _check_value(v, vt, _join(key, k), where)
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
    }.get(tp)  # type: ignore[call-overload]
    if ok is not None and not ok(value):
        raise ConfigError(f"{where}: {key}: expected {_type_words(tp)}, got {value!r}")


def _check_mapping(data: Mapping[str, Any], schema: type[Any], prefix: str, where: str) -> None:
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, value in data.items():
        if key not in names:
            full = _join(prefix, key)
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{full}'{hint}")
        _check_value(value, hints[key], _join(prefix, key), where)


def schema_keys(schema: type[Any] = TrainConfig, prefix: str = "") -> list[str]:
    """Every key of the schema as a dotted path (``agent.total_timesteps``)."""
    keys: list[str] = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        full = _join(prefix, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += schema_keys(tp, full)  # type: ignore[arg-type]
        else:
            keys.append(full)
            (item,) = typing.get_args(tp)[:1] or (None,)
            if typing.get_origin(tp) is list and dataclasses.is_dataclass(item):
                keys += schema_keys(item, f"{full}[]")  # type: ignore[arg-type]
    return keys


# ------------------------------------------------------------------------------ loading


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml(path, what="config")
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a mapping of groups, got {type(data).__name__}"
        )
    return data


#: Old executor names still read from configs (with a DeprecationWarning).
DEPRECATED_EXECUTORS = {"local": "process"}


def _deprecations(layer: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``executor.kind: local`` -> ``process``, with a warning naming the source."""
    section = layer.get("executor")
    if isinstance(section, Mapping) and isinstance(section.get("kind"), str) and (
            section["kind"] in DEPRECATED_EXECUTORS):
        new = DEPRECATED_EXECUTORS[section["kind"]]
        warnings.warn(f"{where}: executor.kind: '{section['kind']}' is deprecated, use "
                      f"'{new}'", DeprecationWarning, stacklevel=4)
        layer = {**layer, "executor": {**section, "kind": new}}
    return layer


def _merge(base: DictConfig, layer: Mapping[str, Any], where: str) -> DictConfig:
    layer = _deprecations(layer, where)
    _check_mapping(layer, TrainConfig, "", where)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(dict(layer)))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "?"
        reason = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise ConfigError(f"{where}: {key}: {reason}") from None
    except (TypeError, ValueError) as exc:  # e.g. a list merged over a mapping
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None
    assert isinstance(merged, DictConfig)
    return merged


def _set_path(data: Any, parts: Sequence[str], value: object, where: str) -> None:
    """Set ``data[p0][p1]...`` to ``value``; a digit part indexes a list."""
    for i, part in enumerate(parts):
        at = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(data, list):
            if not part.isdigit():
                raise ConfigError(f"{where}: {'.'.join(parts[:i])} is a list: "
                                  f"expected an index, got '{part}'")
            index = int(part)
            if index >= len(data):
                raise ConfigError(f"{where}: {at}: index {index} out of range "
                                  f"({'.'.join(parts[:i])} has {len(data)} entries)")
            if last:
                data[index] = value
            else:
                data = data[index]
        elif isinstance(data, dict):
            if last:
                data[part] = value
            else:
                data = data.setdefault(part, {})
        else:
            raise ConfigError(f"{where}: {'.'.join(parts[:i])} is not a group (cannot "
                              f"set '{part}' in it)")


def _apply_override(node: DictConfig, item: str) -> DictConfig:
    """One ``key=value`` override over ``node``.

    ``a.b=v`` merges ``{a: {b: v}}``; ``workload.mix.0.params.pages=3`` sets an element
    of a list (a digit indexes it); ``agent.hyperparameters={}`` replaces the mapping
    (clears it) instead of merging an empty one into it.
    """
    where = f"override '{item}'"
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{where}: expected key=value (e.g. agent.total_timesteps=20000)")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]))
        assert isinstance(parsed, dict)
        value = parsed["value"]
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        problem = getattr(exc, "problem", None) or getattr(exc, "msg", None) or str(exc)
        raise ConfigError(f"{where}: not a YAML value: {str(problem).splitlines()[0]}"
                          ) from None
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"{where}: '{key}' is not a dotted key")
    if not any(p.isdigit() for p in parts) and value != {}:
        layer: dict[str, Any] = {}
        _set_path(layer, parts, value, where)
        return _merge(node, layer, where)
    current = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
    assert isinstance(current, dict)
    _set_path(current, parts, value, where)
    return _merge(OmegaConf.structured(TrainConfig), {str(k): v for k, v in current.items()},
                  where)


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    registry: PluginRegistry | None = None,
    check_plugins: bool = True,
) -> TrainConfig:
    """Schema <- YAML file (optional) <- ``key=value`` overrides, checked and resolved.

    Args:
        path: A YAML config file, or None for the schema's defaults.
        overrides: Dotted ``key=value`` strings (values parsed as YAML scalars).
        registry: Plugin registry used to check workload and policy names and
            parameters (the process-wide one by default).
        check_plugins: Also check everything that needs plugins and the kernel
            (:func:`validate`).

    Raises:
        ConfigError: With the source, the full key and the reason.
    """
    node = OmegaConf.structured(TrainConfig)
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        node = _merge(node, _read_yaml(Path(path)), source)
    for item in overrides:
        node = _apply_override(node, item)
        source = f"{source} + overrides"
    try:
        cfg = OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "?"
        reason = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise ConfigError(f"{source}: {key}: {reason}") from None
    assert isinstance(cfg, TrainConfig)
    if check_plugins:
        validate(cfg, source=source, registry=registry)
    return cfg


def validate(
    cfg: TrainConfig, *, source: str = "<config>", registry: PluginRegistry | None = None
) -> None:
    """Check values that need the kernel or the plugins: presets, facilities, machine,
    geometry, workload and policy names and their parameters, and value ranges."""
    reg = registry or get_registry()
    build_kernel_config(cfg.kernel, where=source)
    build_machine(cfg.machine, where=source)
    build_geometry(cfg.geometry, where=source)
    for key, entry in workload_entries(cfg.workload, where=source, prefix="workload"):
        _check_workload(reg, entry, key, source)
    for i, entry in enumerate(cfg.eval.workloads):
        _check_workload(reg, entry, f"eval.workloads[{i}]", source)
    for i, name in enumerate(cfg.eval.baselines):
        params = cfg.eval.policy_params.get(name, {})
        try:
            reg.make_policy(name, params, where=f"{source}: eval.baselines[{i}]")
        except PluginError as exc:
            raise ConfigError(str(exc)) from None
    for name in cfg.eval.policy_params:
        if name not in cfg.eval.baselines:
            raise ConfigError(
                f"{source}: eval.policy_params.{name}: '{name}' is not in eval.baselines"
                + _hint(name, cfg.eval.baselines)
            )
    positive = {
        "env.max_decisions": cfg.env.max_decisions,
        "agent.total_timesteps": cfg.agent.total_timesteps,
        "agent.n_envs": cfg.agent.n_envs,
        "agent.torch_threads": cfg.agent.torch_threads,
        "eval.seeds": cfg.eval.seeds,
        "eval.max_decisions": cfg.eval.max_decisions,
        "eval.validation_seeds": cfg.eval.validation_seeds,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{source}: {key}: must be at least 1, got {value}")
    for key, value in {
        "env.max_primitives": cfg.env.max_primitives,
        "eval.every_steps": cfg.eval.every_steps,
        "output.checkpoint_every": cfg.output.checkpoint_every,
    }.items():
        if value < 0:
            raise ConfigError(f"{source}: {key}: must not be negative, got {value}")
    if cfg.env.max_time_ms is not None and cfg.env.max_time_ms <= 0:
        raise ConfigError(
            f"{source}: env.max_time_ms: must be positive, got {cfg.env.max_time_ms}"
        )
    if any(n < 1 for n in cfg.agent.net_arch):
        raise ConfigError(f"{source}: agent.net_arch: layer sizes must be at least 1")
    if cfg.eval.seeds >= VALIDATION_SEED_BASE:
        raise ConfigError(f"{source}: eval.seeds: at most {VALIDATION_SEED_BASE - 1}")


def _check_workload(reg: PluginRegistry, entry: WorkloadEntry, key: str, source: str) -> None:
    try:
        reg.make("workload", entry.name, entry.params, where=f"{source}: {key}")
    except PluginError as exc:
        raise ConfigError(str(exc)) from None
    if not entry.weight > 0:
        raise ConfigError(f"{source}: {key}.weight: must be positive, got {entry.weight}")


# ------------------------------------------------------------------------------ builders


def workload_entries(
    section: WorkloadConfig | Mapping[str, Any],
    *,
    where: str = "<config>",
    prefix: str = "workload",
) -> list[tuple[str, WorkloadEntry]]:
    """The workloads of a section as ``(full key, entry)`` pairs."""
    if isinstance(section, Mapping):
        section = WorkloadConfig(
            name=section.get("name"),
            params=dict(section.get("params") or {}),
            mix=[e if isinstance(e, WorkloadEntry) else WorkloadEntry(**e)
                 for e in section.get("mix") or []],
        )
    if section.mix:
        if section.name is not None or section.params:
            raise ConfigError(
                f"{where}: {prefix}: give either name/params or mix, not both"
            )
        return [(f"{prefix}.mix[{i}]", e) for i, e in enumerate(section.mix)]
    if section.name is None:
        raise ConfigError(f"{where}: {prefix}: set {prefix}.name or {prefix}.mix")
    return [(prefix, WorkloadEntry(section.name, dict(section.params), 1.0))]


def build_kernel_config(section: KernelSection, *, where: str = "<config>") -> KernelConfig:
    """The kernel preset with the facility overrides applied."""
    try:
        base = get_preset(section.preset, where=f"{where}: kernel.preset")
        return base.with_overrides(dict(section.facilities), where=f"{where}: kernel.facilities")
    except PresetError as exc:
        raise ConfigError(str(exc)) from None


def build_machine(section: MachineConfig, *, where: str = "<config>") -> Machine:
    """The :class:`Machine` of a machine section."""
    try:
        return Machine(
            cpus=section.cpus,
            swap=section.swap,
            stable_writes=section.stable_writes,
            swap_slots=section.swap_slots,
        )
    except KernelError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_geometry(section: GeometryConfig, *, where: str = "<config>") -> Geometry:
    """The :class:`Geometry` of a geometry section."""
    try:
        if section.mthp_orders is None:
            geometry = Geometry(section.paging_levels, section.high_user_addresses)
        else:
            geometry = Geometry(
                section.paging_levels, section.high_user_addresses, tuple(section.mthp_orders)
            )
    except GeometryError as exc:
        raise ConfigError(f"{where}: geometry: {exc}") from None
    return DEFAULT_GEOMETRY if geometry == DEFAULT_GEOMETRY else geometry


def _plain(obj: object) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.name
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of ``gymnasium.make("cowlab/CowFault-v0", **kwargs)`` for a config."""
    env = cfg.env
    return {
        "kernel": _plain(cfg.kernel),
        "workload": _plain(cfg.workload),
        "machine": _plain(cfg.machine),
        "geometry": _plain(cfg.geometry),
        "action_mode": env.action_mode.name,
        "shield": env.shield,
        "max_decisions": env.max_decisions,
        "max_time_ms": env.max_time_ms,
        "max_primitives": env.max_primitives,
        "terminate_on_violation": env.terminate_on_violation,
        "reward": _plain(env.reward),
    }


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (loadable again with :func:`load_config`)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config to ``path``."""
    Path(path).write_text(to_yaml(cfg), encoding="utf-8")


def eval_seeds(n: int) -> list[int]:
    """The final evaluation's workload seeds (disjoint from training and validation)."""
    return [EVAL_SEED_BASE + i for i in range(n)]


def validation_seeds(n: int) -> list[int]:
    """The periodic validation's workload seeds."""
    return [VALIDATION_SEED_BASE + i for i in range(n)]
