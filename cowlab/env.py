"""``cowlab/CowFault-v0``: the do_wp_page() reuse decision as a Gymnasium environment.

One episode is one run of a workload (drawn from a weighted mix with the env's
``np_random``) on a fresh simulated kernel. The kernel knows nothing of Gymnasium: the
run executes inside a greenlet whose policy is an internal bridge. At every write fault
the bridge switches back to the caller with the live :class:`~cowlab.kernel.fault.FaultView`
(``env.unwrapped.fault``); the action sent with :meth:`CowFaultEnv.step` becomes the
policy's answer, and the run continues to the next fault.

Action modes:

* ``decision``: Discrete(2); 0 = COPY, 1 = REUSE. One step per decision.
* ``primitives``: Discrete(7); copy, reuse, drain_lru, drain_lru_all, trylock, lock,
  free_swap (see :data:`PRIMITIVE_ACTIONS`). A primitive changes the kernel state and
  charges its cost to the fault; the same fault is observed again until copy or reuse.
  After ``max_primitives`` primitives in one fault only copy and reuse are allowed (a
  primitive action then counts as COPY). A primitive that is not allowed (masked: e.g.
  ``free_swap`` without the lock) is a no-op that still uses up one of the fault's
  primitives.

:meth:`CowFaultEnv.step` also accepts a :class:`~cowlab.Decision` (kept with its
reason for the ``anon_wp_copy_*`` counters), which lets a built-in policy be replayed
through the env exactly.

Observation: float32 vector over :data:`OBSERVATION_NAMES` (plus ``primitives_used``
in primitives mode; the names are in ``feature_names``), encoded by
:mod:`cowlab.envcore`: the kernel's :data:`~cowlab.kernel.fault.FEATURE_NAMES`,
counts relative to the folio's ``nr_pages`` where they count per folio and ``log1p``'d
(:data:`LOG_FEATURES`), ``order`` over
:data:`~cowlab.envcore.MAX_ORDER`, flags 0 or 1, then the 0/1 comparisons of
:data:`DERIVED_FEATURES`. Only kernel-visible state is observed: the ground truth goes
into ``info`` only.

Reward, per decided write fault, computed from the
:class:`~cowlab.kernel.fault.FaultRecord` the kernel appends for it:
``+safe_reuse`` if a truly exclusive page was reused, ``-latency_per_us`` per simulated
microsecond of the fault, ``-memory_per_page`` per page a copy allocates, and
``-violation`` per violation. Primitive steps earn 0 (their cost is in the fault's
latency). Up to v5.17 a write fault on a swap PTE may ask twice (do_swap_page, then
do_wp_page after a COPY): the fault's record, and so its reward, belongs to the second
decision; the first step earns 0 and its info has ``outcome`` None.

Episodes end when the run's budget is spent (``truncated``: ``max_decisions`` or
``max_time_ms``) or the workload finishes (``terminated``); with
``terminate_on_violation`` the first violation also terminates.

``shield``: REUSE is masked (and, if chosen anyway, replaced by COPY, with
``info["shielded"]``) unless the kernel-visible state proves exclusivity
(:func:`exclusive_proven`).

    >>> import gymnasium, cowlab
    >>> env = gymnasium.make("cowlab/CowFault-v0", workload={"name": "forceswap-v1",
    ...                      "params": {"swap": "pmem"}}, max_decisions=8)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.unwrapped.feature_names[0]
    ((27,), 'refcount')
    >>> obs, reward, terminated, truncated, info = env.step(1)
    >>> info["outcome"], info["exclusive"], info["violation"]
    ('reuse', True, None)
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from greenlet import greenlet

from cowlab.config import (
    TRAIN_SEEDS,
    ActionMode,
    ConfigError,
    GeometryConfig,
    KernelSection,
    MachineConfig,
    RewardConfig,
    WorkloadEntry,
    build_geometry,
    build_kernel_config,
    build_machine,
    workload_entries,
)
from cowlab.envcore import (
    COUNT_HIGH,
    DERIVED_FEATURES,
    LOG_FEATURES,
    LOG_INDEX,
    OBSERVATION_NAMES,
    PRIMITIVE_ACTIONS,
    Bridge,
    StepCore,
    apply_primitive,
    encode_features,
    exclusive_proven,
    observe,
    primitive_mask,
)
from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FEATURE_NAMES, FaultView, OracleFaultView
from cowlab.kernel.kernel import Kernel
from cowlab.plugins import PluginError, PluginRegistry, get_registry
from cowlab.workloads.base import Budget, Run, Workload, machine_for, resolve_workload

__all__ = [
    "DERIVED_FEATURES",
    "ENV_ID",
    "LOG_FEATURES",
    "OBSERVATION_NAMES",
    "PRIMITIVE_ACTIONS",
    "CowFaultEnv",
    "apply_primitive",
    "encode_features",
    "exclusive_proven",
    "observation_array",
    "observe",
    "primitive_mask",
]

#: The registered Gymnasium id.
ENV_ID = "cowlab/CowFault-v0"

def _all_allowed(n: int) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask.setflags(write=False)
    return mask


#: The mask with every action allowed, by number of actions (shared, read-only).
_ALL_ALLOWED = {n: _all_allowed(n) for n in (2, len(PRIMITIVE_ACTIONS))}

_FLOAT32 = np.dtype(np.float32)
#: struct.Struct("<n>f").pack by number of values.
_PACKERS: dict[int, Callable[..., bytes]] = {}


def observation_array(values: list[float]) -> np.ndarray:
    """``values`` as a new float32 array (writable, as ``np.array(values, np.float32)``
    makes, with the same values): packed by :mod:`struct`, which takes about 2/3 of the
    instructions numpy's conversion of a list takes."""
    n = len(values)
    pack = _PACKERS.get(n)
    if pack is None:
        pack = _PACKERS[n] = struct.Struct(f"{n}f").pack
    return np.frombuffer(bytearray(pack(*values)), _FLOAT32)


def _as_entries(workload: object) -> list[WorkloadEntry]:
    if isinstance(workload, str):
        return [WorkloadEntry(workload)]
    if isinstance(workload, WorkloadEntry):
        return [workload]
    if isinstance(workload, Mapping):
        if "mix" in workload or "params" in workload or "name" in workload:
            try:
                return [e for _, e in workload_entries(workload, where="env")]
            except TypeError as exc:
                raise ConfigError(f"env: workload: {exc}") from None
        raise ConfigError(f"env: workload: expected name, params or mix, got {dict(workload)!r}")
    if isinstance(workload, Sequence):
        entries: list[WorkloadEntry] = []
        for item in workload:
            entries += _as_entries(item)
        return entries
    raise ConfigError(f"env: workload: expected a name, a mapping or a list, got {workload!r}")


def _section(cls: type[Any], value: object, key: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"env: {key}: expected a mapping, got {value!r}")
    try:
        return cls(**value)
    except TypeError as exc:
        raise ConfigError(f"env: {key}: {exc}") from None


class CowFaultEnv(gym.Env[np.ndarray, np.int64]):
    """The copy-or-reuse decision of do_wp_page() as an environment (module docstring)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        *,
        kernel: str | Mapping[str, Any] = "v5.19",
        workload: object = "forceswap-v1",
        machine: Mapping[str, Any] | None = None,
        geometry: Mapping[str, Any] | None = None,
        action_mode: str | ActionMode = "decision",
        shield: bool = False,
        max_decisions: int = 256,
        max_time_ms: float | None = None,
        max_primitives: int = 4,
        terminate_on_violation: bool = False,
        reward: Mapping[str, float] | None = None,
        render_mode: str | None = None,
        registry: PluginRegistry | None = None,
    ) -> None:
        """See the module docstring; every argument mirrors a key of the training config
        (``kernel``, ``workload``, ``machine``, ``geometry`` and the ``env`` group)."""
        ksec = KernelSection(preset=kernel) if isinstance(kernel, str) else _section(
            KernelSection, kernel, "kernel"
        )
        self.kernel_config = build_kernel_config(ksec, where="env")
        self.machine = build_machine(_section(MachineConfig, machine, "machine"), where="env")
        self.geometry = build_geometry(_section(GeometryConfig, geometry, "geometry"), where="env")
        self.reward_weights: RewardConfig = _section(RewardConfig, reward, "reward")
        try:
            self.action_mode = (
                action_mode if isinstance(action_mode, ActionMode) else ActionMode[action_mode]
            )
        except KeyError:
            raise ConfigError(
                f"env: action_mode: expected decision or primitives, got {action_mode!r}"
            ) from None
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"env: render_mode: only 'ansi' is supported, got {render_mode!r}")
        if max_decisions < 1:
            raise ConfigError(f"env: max_decisions: must be at least 1, got {max_decisions}")
        self.registry = registry or get_registry()
        self.entries = _as_entries(workload)
        if not self.entries:
            raise ConfigError("env: workload: the mix is empty")
        # Names and parameters are validated now, once; a reset only builds the workload.
        self._workload_makers: list[Callable[[], object]] = []
        for entry in self.entries:
            try:
                self._workload_makers.append(self.registry.maker(
                    "workload", entry.name, entry.params, where=f"env: workload {entry.name}"))
            except PluginError as exc:
                raise ConfigError(str(exc)) from None
            if not entry.weight > 0:
                raise ConfigError(f"env: workload {entry.name}: weight must be positive")
        total = sum(e.weight for e in self.entries)
        weights = np.array([e.weight / total for e in self.entries], dtype=np.float64)
        # What Generator.choice(n, p=weights) searches: the weights' cumulative sums,
        # normalised by the last (see _pick_workload).
        cdf = weights.cumsum()
        cdf /= cdf[-1]
        self._cdf: list[float] = cdf.tolist()
        self.shield = bool(shield)
        self.max_primitives = int(max_primitives)
        self.terminate_on_violation = bool(terminate_on_violation)
        self.budget = Budget(
            max_decisions=int(max_decisions),
            max_time_ns=None if max_time_ms is None else int(max_time_ms * 1_000_000),
        )
        self.render_mode = render_mode

        primitives = self.action_mode is ActionMode.primitives
        self.feature_names: tuple[str, ...] = OBSERVATION_NAMES + (
            ("primitives_used",) if primitives else ()
        )
        high = np.ones(len(self.feature_names), dtype=np.float32)
        for i in LOG_INDEX:
            high[i] = COUNT_HIGH
        self.observation_space = gym.spaces.Box(
            low=np.zeros_like(high), high=high, dtype=np.float32
        )
        self.action_names = PRIMITIVE_ACTIONS if primitives else PRIMITIVE_ACTIONS[:2]
        self.action_space = gym.spaces.Discrete(len(self.action_names))

        w = self.reward_weights
        #: The run and its per-step work (compiled with the kernel: cowlab/envcore.py).
        self._core = StepCore(
            float(w.safe_reuse), float(w.latency_per_us), float(w.memory_per_page),
            float(w.violation), primitives, self.max_primitives, self.shield,
            self.terminate_on_violation,
            observation_array, np.zeros(len(self.feature_names), dtype=np.float32))
        self._bridge = Bridge()

    @property
    def fault(self) -> FaultView | None:
        """The live FaultView of the pending write fault (None between episodes)."""
        return self._core.fault

    @property
    def run(self) -> Run | None:
        """The run of the episode (the last one's until the next reset)."""
        return self._core.run

    @property
    def workload_name(self) -> str | None:
        """The mix entry the episode's run was drawn from."""
        return self._core.workload

    @property
    def run_seed(self) -> int | None:
        """The seed of the episode's run."""
        return self._core.run_seed

    # -- helpers -----------------------------------------------------------------------
    def _make_workload(self, index: int) -> Workload:
        try:
            made = self._workload_makers[index]()
        except PluginError as exc:
            raise ConfigError(str(exc)) from None
        return made  # type: ignore[return-value]

    def _start(self, index: int, run_seed: int) -> FaultView | None:
        # mix-v1 and friends pick their component from the run's seed.
        core = self._core
        if core.run is not None:
            core.run.close()  # the last run's memory goes back now (Run.close)
        workload = resolve_workload(self._make_workload(index), run_seed)
        kernel = Kernel(
            self.kernel_config,
            self._bridge,
            geometry=self.geometry,
            machine=machine_for(workload, self.machine),
            seed=run_seed,
            keep_records=True,
            record_hits=False,  # step() settles only the decided faults
        )
        run = Run(workload, kernel, run_seed, self.budget)
        glet = greenlet(run.execute)
        self._bridge.parent = glet.parent
        return core.start(glet, run, self.entries[index].name, run_seed)

    # -- Gymnasium API -------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new run and return the observation of its first write fault.

        ``options`` may pin ``workload`` (index or name in the mix) and ``run_seed``.
        """
        super().reset(seed=seed)
        core = self._core
        core.kill()
        options = options or {}
        for attempt in range(16):
            index = self._pick_workload(options.get("workload"))
            run_seed = options.get("run_seed")
            if run_seed is None or attempt:
                run_seed = int(self.np_random.integers(TRAIN_SEEDS))
            view = self._start(index, int(run_seed))
            if view is not None:
                info = core.first_info()
                return core.observe(view), info
        raise RuntimeError(
            f"workload {self.workload_name} finished 16 runs in a row without a decision"
        )

    def _pick_workload(self, chosen: object) -> int:
        if chosen is None:
            if len(self.entries) == 1:
                return 0
            # np_random.choice(len(entries), p=weights), bit for bit (one uniform double,
            # searched on the right in the normalised cumulative weights;
            # tests/test_env.py checks it against numpy's), without choice()'s checks of
            # p at every reset, which cost more than the rest of a reset's Python.
            return bisect.bisect_right(self._cdf, self.np_random.random())
        if isinstance(chosen, str):
            names = [e.name for e in self.entries]
            if chosen not in names:
                raise ValueError(f"reset option workload={chosen!r} is not in the mix {names}")
            return names.index(chosen)
        if not isinstance(chosen, (int, np.integer)):
            raise ValueError(f"reset option workload={chosen!r}: expected an index or a name")
        index = int(chosen)
        if not 0 <= index < len(self.entries):
            raise ValueError(f"reset option workload={index} is outside 0..{len(self.entries) - 1}")
        return index

    def step(
        self, action: np.int64 | int | Decision
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Answer (or, in primitives mode, act on) the pending fault; run to the next one.

        The hottest call of a training run, so all of it is compiled code
        (:meth:`StepCore.step <cowlab.envcore.StepCore.step>`: the action, the shield,
        the switch into the run, the reward, the info and the next observation); each
        line of Python less per step is measurable in ``cowlab train``'s env share
        (experiments/bench/bench_env.py).
        """
        return self._core.step(action)

    def action_masks(self) -> np.ndarray:
        """Allowed actions at the pending fault (for MaskablePPO); all True between runs.

        Where every action is allowed (between runs; every fault of ``decision`` mode
        without the shield) this is one shared read-only array: numpy makes a new one
        in about as many instructions as the rest of the env's step.
        """
        view = self.fault
        if view is None:
            return _ALL_ALLOWED[len(self.action_names)]
        if self.action_mode is ActionMode.decision:
            if not self.shield or exclusive_proven(view):
                return _ALL_ALLOWED[2]
            return np.array([True, False], dtype=bool)
        return np.array(
            primitive_mask(view, self._core.used, self.max_primitives, self.shield), dtype=bool
        )

    def render(self) -> str | None:
        """``ansi``: the faulting folio's kernel-visible state and the last outcome."""
        if self.render_mode != "ansi":
            return None
        view = self.fault
        if view is None:
            return "no pending fault (episode over; call reset())\n"
        mm = view._mm.name
        truth = view.truth if isinstance(view, OracleFaultView) else None
        flags = ", ".join(
            f"{name}={value:g}" for name, value in zip(FEATURE_NAMES, view.features(), strict=True)
        )
        info = self._core.last_info
        last = info.get("outcome")
        lines = [
            f"{self.workload_name} seed {self.run_seed} decision "
            f"{self.run.kernel.nr_decisions if self.run else 0}: "
            f"write fault by mm {mm} on page {view.page} (cpu {view.cpu}, path {view.path})",
            f"  folio: {flags}",
            f"  last outcome: {last}"
            + (f" (violation {info['violation']})" if info.get("violation") else ""),
        ]
        if truth is not None:
            lines.append(f"  ground truth (not observed): exclusive={truth.exclusive}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Abandon the run in progress and release it (:meth:`Run.close`)."""
        core = self._core
        core.kill()
        if core.run is not None:
            core.run.close()
        super().close()
