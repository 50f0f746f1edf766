"""The per-step work of ``cowlab/CowFault-v0`` (cowlab/env.py), compiled with the kernel:
the observation of a write fault (what the env and the ``sb3`` policy feed a network,
encoded from the kernel-visible :class:`~cowlab.kernel.fault.FaultView`), the reward of
a decided fault and the step's info dict, both from the kernel's
:class:`~cowlab.kernel.fault.FaultRecord`, the kernel-visible proof of exclusivity the
shield asks for, the primitives of ``primitives`` mode, and the run an env drives:
:class:`StepCore` (its state and each step's switch into the run) and :class:`Bridge`
(the kernel's policy on the run's side of the switch).

Part of the compiled build (setup.py), as the kernel is: in Python this work cost
about as much as the rest of an env step. :mod:`cowlab.env` re-exports the observation
names, :func:`exclusive_proven` and :func:`apply_primitive`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FEATURE_NAMES, FaultRecord, FaultView
from cowlab.workloads.base import Run

__all__ = [
    "COPY",
    "COUNT_HIGH",
    "DERIVED_FEATURES",
    "LOG_FEATURES",
    "LOG_INDEX",
    "MAX_ORDER",
    "OBSERVATION_NAMES",
    "PER_FOLIO_COUNTS",
    "PRIMITIVE_ACTIONS",
    "REUSE",
    "Bridge",
    "StepCore",
    "apply_primitive",
    "encode_features",
    "exclusive_proven",
    "observe",
    "primitive_mask",
    "settle",
    "step_info",
]

#: Counts in the observation: each is divided by the folio's ``nr_pages`` where it counts
#: per folio (so a fully mapped 2 MiB THP and a 4 KiB page read alike), then ``log1p``'d
#: (a pinned page's refcount is above 1024).
LOG_FEATURES: tuple[str, ...] = (
    "refcount",
    "mapcount",
    "large_mapcount",
    "swapcount",
    "pincount",
)
#: Of those, the per-folio counts divided by ``nr_pages`` first.
PER_FOLIO_COUNTS: tuple[str, ...] = ("refcount", "large_mapcount")
#: ``order`` is divided by this (a 1 GiB hugetlb folio, the largest, is order 18).
MAX_ORDER: Final = 18
#: Flags derived from the kernel-visible counts, appended after :data:`FEATURE_NAMES`:
#: the comparisons the kernel's own rules make, as 0/1 (a network need not learn an
#: exact threshold on a log-scaled count from a handful of rare faults).
DERIVED_FEATURES: tuple[str, ...] = (
    "sole_reference",  # refcount == 1: the writer's mapping is the only reference
    "mapped_more_than_once",  # mapcount > 1: another PTE or PMD maps the page
    "unexplained_references",  # refcount > mappings + swapcache: GUP, pipe, LRU batch...
)
#: The observation's features in ``decision`` mode (``primitives`` mode appends
#: ``primitives_used``).
OBSERVATION_NAMES: tuple[str, ...] = FEATURE_NAMES + DERIVED_FEATURES
#: Where each :data:`LOG_FEATURES` count sits in the observation.
LOG_INDEX: tuple[int, ...] = tuple(FEATURE_NAMES.index(n) for n in LOG_FEATURES)
_PER_FOLIO_INDEX = frozenset(FEATURE_NAMES.index(n) for n in PER_FOLIO_COUNTS)
_ORDER_INDEX: Final = FEATURE_NAMES.index("order")
#: (index, divided by ``nr_pages`` first) of each :data:`LOG_FEATURES` count.
_LOG_SCALING: Final = tuple((i, i in _PER_FOLIO_INDEX) for i in LOG_INDEX)
_REFCOUNT_INDEX: Final = FEATURE_NAMES.index("refcount")
_MAPCOUNT_INDEX: Final = FEATURE_NAMES.index("mapcount")
_LARGE_MAPCOUNT_INDEX: Final = FEATURE_NAMES.index("large_mapcount")
_SWAPCACHE_INDEX: Final = FEATURE_NAMES.index("swapcache")
#: The observation space's upper bound of a log-scaled count: log1p of any count the
#: simulator can hold stays far below it.
COUNT_HIGH: Final = 64.0

#: Actions of ``primitives`` mode, by index (``decision`` mode uses the first two).
PRIMITIVE_ACTIONS: tuple[str, ...] = (
    "copy",
    "reuse",
    "drain_lru",
    "drain_lru_all",
    "trylock",
    "lock",
    "free_swap",
)
#: The actions of ``decision`` mode (the first two of both modes).
COPY: Final = 0
REUSE: Final = 1

#: The answers of the COPY action and of a shielded REUSE (Decision is immutable).
_COPY_POLICY = Decision.COPY.because("policy")
_COPY_SHIELD = Decision.COPY.because("shield")

def encode_features(view: FaultView | Any) -> list[float]:
    """The observation of ``view`` in :data:`OBSERVATION_NAMES` order (without env extras).

    Counts are scaled as :data:`LOG_FEATURES` says, ``order`` by :data:`MAX_ORDER`, flags
    are 0 or 1, and the :data:`DERIVED_FEATURES` follow. ``view`` is a
    :class:`~cowlab.kernel.fault.FaultView` or a stand-in with its ``features()`` and
    ``nr_pages`` (a policy may be handed a wrapper, such as the leaderboard's probe:
    compiled code checks the real type of a parameter typed as a class).

    >>> from math import log1p
    >>> LOG_FEATURES[0], round(log1p(1024), 3), DERIVED_FEATURES[0]
    ('refcount', 6.932, 'sole_reference')
    """
    return _encode(view.features(), view.nr_pages)


def _encode(values: list[float], nr_pages: int) -> list[float]:
    # The derived flags compare the raw counts, read back from the features (floats of
    # integers far below 2**53: the comparisons are exact).
    refcount = values[_REFCOUNT_INDEX]
    mapcount = values[_MAPCOUNT_INDEX]
    held = values[_LARGE_MAPCOUNT_INDEX] + (nr_pages if values[_SWAPCACHE_INDEX] else 0)
    log1p = math.log1p
    for i, per_folio in _LOG_SCALING:
        values[i] = log1p(values[i] / nr_pages if per_folio else values[i])
    values[_ORDER_INDEX] /= MAX_ORDER
    values += (float(refcount == 1), float(mapcount > 1), float(refcount > held))
    return values


def observe(view: FaultView | Any, primitives: bool, used: int,
            max_primitives: int) -> list[float]:
    """The env's observation of ``view``: :func:`encode_features`, plus in ``primitives``
    mode the fraction of the fault's primitive budget used. The env and the ``sb3``
    policy both observe through this one function."""
    values = encode_features(view)
    if primitives:
        values.append(used / max_primitives if max_primitives else 1.0)
    return values


def exclusive_proven(view: FaultView | Any) -> bool:
    """Kernel-visible proof that reusing ``view``'s page leaks nothing.

    * PageAnonExclusive is set (v5.19+, 6c287605fd56); or
    * the v5.18 conditions on the ``wp``/``pmd`` path (53a05ad9f21d): not KSM and a
      refcount of exactly 1, i.e. the writer's own mapping is the only reference (after
      the policy freed the swapcache under the lock and drained the LRU batch, if it
      needed to). A decision runs atomically in the simulator, so no lock is needed to
      keep the count stable while it is read.

    On the pre-v5.18 ``swap`` path nothing but PageAnonExclusive counts as proof (a COPY
    there only maps the page read-only; do_wp_page asks again). A page pinned by the writer
    itself has refcount >= 1025, so the shield copies it: it prevents leaks, not
    ``pin_incoherent``, wherever the kernel's own state cannot tell.
    """
    if view.anon_exclusive:
        return True
    if view.path == "swap" or view.ksm:
        return False
    return view.refcount == 1


def settle(records: list[FaultRecord], safe_reuse: float, latency_per_us: float,
           memory_per_page: float, violation: float) -> tuple[float, FaultRecord | None]:
    """The reward of the decision just made, from the records the kernel appended since
    (the env's reward weights, docs/config.md), and the decided fault's record (None
    if there is none). Consumes ``records``: it is emptied."""
    if not records:
        return 0.0, None
    reward = 0.0
    found: FaultRecord | None = None
    for rec in records:
        outcome = rec.outcome
        if outcome != "reuse" and outcome != "copy":
            continue
        found = rec
        if rec.violation:
            reward -= violation
        elif outcome == "reuse" and rec.exclusive:
            reward += safe_reuse
        if outcome == "copy":
            reward -= memory_per_page
        reward -= latency_per_us * rec.latency_ns / 1000.0
    records.clear()
    return reward, found


def step_info(workload: str | None, run_seed: int | None, decisions: int,
              record: FaultRecord | None,
              primitive: str | None, shielded: bool) -> dict[str, Any]:
    """A step's info dict: the run, this step's ``primitive`` and ``shielded``, then the
    decided fault's record (outcome, fault, exclusive, violation, blockers,
    latency_ns; None, None, None, None, (), 0 without one)."""
    outcome: str | None = None
    fault: str | None = None
    exclusive: bool | None = None
    violation: str | None = None
    blockers: tuple[str, ...] = ()
    latency_ns = 0
    if record is not None:
        outcome, fault, exclusive = record.outcome, record.fault, record.exclusive
        violation, blockers, latency_ns = record.violation, record.blockers, record.latency_ns
    # One literal: the dict is made at its final size (filled key by key, it was
    # resized twice).
    return {
        "workload": workload,
        "run_seed": run_seed,
        "decisions": decisions,
        "primitive": primitive,
        "shielded": shielded,
        "outcome": outcome,
        "fault": fault,
        "exclusive": exclusive,
        "violation": violation,
        "blockers": blockers,
        "latency_ns": latency_ns,
    }


def primitive_mask(view: FaultView | Any, used: int, max_primitives: int,
                   shield: bool) -> list[bool]:
    """Allowed actions of ``primitives`` mode at ``view`` (see :data:`PRIMITIVE_ACTIONS`)."""
    reuse = exclusive_proven(view) if shield else True
    if used >= max_primitives:
        return [True, reuse, False, False, False, False, False]
    unlocked = not view.locked_by_policy
    return [
        True,
        reuse,
        True,
        True,
        unlocked,
        unlocked,
        view.locked_by_policy and view.swapcache,
    ]


def apply_primitive(view: FaultView | Any, name: str) -> None:
    """Apply the primitive action ``name`` to ``view`` (anything else is a no-op)."""
    if name == "drain_lru":
        view.drain_lru()
    elif name == "drain_lru_all":
        view.drain_lru_all()
    elif name == "trylock":
        view.trylock()
    elif name == "lock":
        view.lock()  # may raise Sleep: the kernel parks the thread and retries the fault
    elif name == "free_swap":
        view.free_swap()


class Bridge:
    """The kernel's policy while an env drives it (:class:`StepCore`): hands each fault
    to the env by switching to the greenlet that started the run, and applies the
    primitives the env answers with until a Decision comes."""

    def __init__(self) -> None:
        self.name = "agent"
        #: Receive the privileged view: the ground truth goes into ``info`` (never the obs).
        self.oracle = True
        #: The greenlet that started the run (the run's greenlet's parent), set by the env.
        self.parent: Any = None

    def reset(self, seed: int | None) -> None:
        """Stateless."""

    def decide(self, fault: FaultView) -> Decision:
        """Switch to the env with the fault; apply primitives until a Decision comes."""
        parent = self.parent
        assert parent is not None
        while True:
            answer = parent.switch(fault)
            if isinstance(answer, Decision):
                return answer
            assert isinstance(answer, str)
            apply_primitive(fault, answer)


class StepCore:
    """The state of one env's run and the work of its steps, compiled.

    :class:`cowlab.env.CowFaultEnv` keeps its run here (the greenlet the run executes
    in, the pending fault, the primitives used on it, the last observation and info),
    and its ``step()`` is :meth:`step`: the action read, the shield applied, the answer
    switched into the run (:meth:`advance`) and the step's result made, all in compiled
    code, where they cost a fraction of what the same lines cost as the env's Python
    (in ``cowlab train``'s env share: about 0.6 points of 14, with :class:`Bridge`).

    ``to_array`` turns an observation (a list of floats) into what the env returns (the
    env's float32 numpy array: this module knows nothing of numpy).
    """

    def __init__(self, safe_reuse: float, latency_per_us: float, memory_per_page: float,
                 violation: float, primitives: bool, max_primitives: int, shield: bool,
                 terminate_on_violation: bool, to_array: Callable[[list[float]], Any],
                 last_obs: Any) -> None:
        self.safe_reuse = safe_reuse
        self.latency_per_us = latency_per_us
        self.memory_per_page = memory_per_page
        self.violation = violation
        self.primitives = primitives
        #: Actions: the first two of :data:`PRIMITIVE_ACTIONS`, or all in ``primitives``.
        self.n_actions = len(PRIMITIVE_ACTIONS) if primitives else 2
        self.max_primitives = max_primitives
        self.shield = shield
        self.terminate_on_violation = terminate_on_violation
        self.to_array = to_array
        #: The greenlet the run executes in (None between runs).
        self.glet: Any = None
        self.run: Run | None = None
        self.workload: str | None = None
        self.run_seed: int | None = None
        #: The live view of the pending write fault (None between runs).
        self.fault: FaultView | None = None
        #: Primitives used on the pending fault (``primitives`` mode).
        self.used = 0
        self.last_obs: Any = last_obs
        self.last_info: dict[str, Any] = {}

    def start(self, glet: Any, run: Run, workload: str, run_seed: int) -> FaultView | None:
        """Run ``run`` in the new greenlet ``glet`` to its first write fault (None if it
        finished without one)."""
        self.glet = glet
        self.run = run
        self.workload = workload
        self.run_seed = run_seed
        self.used = 0
        self.fault = None
        return self._switch(None)

    def kill(self) -> None:
        """Abandon the run in progress: GreenletExit unwinds it where it is suspended."""
        glet = self.glet
        self.glet = None
        if glet is not None and not glet.dead:
            glet.throw()
        self.fault = None

    def _switch(self, value: object) -> FaultView | None:
        """Send ``value`` into the run; the next pending fault, or None at the end."""
        glet = self.glet
        assert glet is not None
        result = glet.switch(value) if value is not None else glet.switch()
        if result is None:
            # The run returned (Run.execute returns None; the bridge switches here only
            # with a fault): the greenlet is dead.
            self.fault = None
            return None
        assert isinstance(result, FaultView)
        if result is not self.fault:
            self.used = 0  # a new fault (or a fault retried after lock() slept)
        self.fault = result
        return result

    def observe(self, view: FaultView) -> Any:
        """The observation of ``view`` as the env returns it (kept as the last one)."""
        obs = self.last_obs = self.to_array(
            observe(view, self.primitives, self.used, self.max_primitives))
        return obs

    def first_info(self) -> dict[str, Any]:
        """The info of a reset: the run, no decision yet."""
        run = self.run
        info = self.last_info = step_info(self.workload, self.run_seed,
                                          run.kernel.nr_decisions if run is not None else 0,
                                          None, None, False)
        return info

    def step(self, action: object) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """The env's step (:meth:`cowlab.env.CowFaultEnv.step`): read ``action`` (an
        action number, or a :class:`Decision` to apply as it is), apply the shield, and
        :meth:`advance` the run with the answer."""
        view = self.fault
        if view is None:
            raise RuntimeError("step() called without a pending fault: call reset() first")
        primitive: str | None = None
        shielded = False
        answer: object
        if isinstance(action, Decision):
            answer = action
        else:
            a = int(action)  # type: ignore[call-overload]
            if a == COPY:
                answer = _COPY_POLICY
            elif a == REUSE:
                answer = Decision.REUSE
            elif 0 <= a < self.n_actions:
                answer, primitive = self._primitive(view, a)
            else:
                raise ValueError(f"action {action!r} is outside 0..{self.n_actions - 1}")
        if isinstance(answer, Decision):
            if self.shield and answer.is_reuse and not exclusive_proven(view):
                answer = _COPY_SHIELD
                shielded = True
            self.used = 0
        return self.advance(answer, primitive, shielded)

    def _primitive(self, view: FaultView, a: int) -> tuple[object, str | None]:
        """The answer to primitive action ``a`` (2.. of :data:`PRIMITIVE_ACTIONS`) and the
        primitive it counts as (None: the fault's budget is used up, a COPY)."""
        if self.used >= self.max_primitives:
            return _COPY_POLICY, None
        allowed = primitive_mask(view, self.used, self.max_primitives, False)[a]
        self.used += 1
        name = PRIMITIVE_ACTIONS[a]
        return (name if allowed else "noop"), name

    def advance(self, answer: object, primitive: str | None,
                shielded: bool) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Send ``answer`` (a Decision, or a primitive's name) into the run and run it to
        the next write fault: the step's ``(obs, reward, terminated, truncated, info)``.

        The reward is that of the decision just made, from the records the kernel
        appended since; :func:`settle` consumes them, so that an episode keeps no history
        of every write for Python's garbage collector to scan over and over.
        """
        nxt = self._switch(answer)
        run = self.run
        assert run is not None
        kernel = run.kernel
        reward, record = settle(kernel.records, self.safe_reuse, self.latency_per_us,
                                self.memory_per_page, self.violation)
        info = self.last_info = step_info(self.workload, self.run_seed, kernel.nr_decisions,
                                          record, primitive, shielded)
        if nxt is None:
            truncated = run.done
            return self.last_obs, reward, not truncated, truncated, info
        obs = self.observe(nxt)
        if self.terminate_on_violation and record is not None and record.violation:
            self.kill()
            return obs, reward, True, False, info
        return obs, reward, False, False, info
