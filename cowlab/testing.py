"""Helpers for testing policies and the simulator (also a pytest plugin).

Plugin authors get, with ``pytest_plugins = ["cowlab.testing"]`` in their conftest
(or automatically: cowlab registers it under pytest's ``pytest11`` entry points):

* the ``cowlab_registry`` fixture: ``cowlab_registry(*plugins, entry_points=False)``
  builds a :class:`~cowlab.plugins.PluginRegistry` holding only the plugins given (module
  objects), so a test sees exactly the registrations it expects;
* :func:`check_policy_contract`: a quick contract check of a policy - its answers are
  :class:`~cowlab.Decision` objects, it is deterministic for a seed, and it never crashes
  on the random operation sequences the simulator's own property tests use;
* :func:`run_cow_selftest`: the kernel's cow.c suite against a policy (when the
  ``cowlab selftest`` module is available);
* :func:`assert_safe_up_to`: ``cowlab verify`` as an assertion - every op sequence up to
  a depth over a small universe commits no avoidable violation, else the assertion
  message is the shortest counterexample as a scenario file (docs/verify.md).

:func:`apply_ops` and :func:`op_strategy` / :func:`random_ops` are the machinery of those
property tests: random sequences of mmap/write/fork/exit/madvise/mprotect/GUP/...
operations over base pages and (``large=True``) a PMD THP, an mTHP and a hugetlb page,
checking every invariant after each step and that nothing leaks after teardown.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cowlab.kernel.decision import Decision
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import PolicyError
from cowlab.kernel.kernel import Kernel, Machine
from cowlab.kernel.mm import MM
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import PRESETS, get_preset

Op = tuple[Any, ...]


class InvariantError(AssertionError):
    """The simulator's state broke one of its invariants (a simulator bug)."""


class ContractError(AssertionError):
    """A policy broke the policy contract."""


PAGES = 4
#: Extra regions (with large=True): a PMD THP, an mTHP of order 2 (v6.8+ presets) and a
#: 2 MiB hugetlb page, each probed at a few pages.
THP_AT, MTHP_AT, HUGETLB_AT = 512, 1536, 2048
#: The pages the random operations touch: the base pages and a few in each large region.
PROBE_PAGES = [
    0,
    1,
    2,
    3,
    0,
    1,
    2,
    3,
    THP_AT,
    THP_AT + 1,
    THP_AT + 300,
    MTHP_AT,
    MTHP_AT + 3,
    MTHP_AT + 5,
    HUGETLB_AT,
    HUGETLB_AT + 7,
]


def op_strategy() -> Any:
    """A hypothesis strategy for one operation of :func:`apply_ops` (needs hypothesis)."""
    from hypothesis import strategies as st

    mm_index = st.integers(0, 7)  # index into the live mms (modulo their number)
    page = st.sampled_from(PROBE_PAGES)
    cpu = st.integers(0, 1)
    # one_of() picks among its (distinct) branches evenly: accesses and pageout get several.
    return st.one_of(
        st.tuples(st.just("write"), mm_index, page, st.just(0)),
        st.tuples(st.just("write"), mm_index, page, st.just(1)),
        st.tuples(st.just("write"), mm_index, st.just(0), cpu),
        st.tuples(st.just("read"), mm_index, page, st.just(0)),
        st.tuples(st.just("read"), mm_index, page, st.just(1)),
        st.tuples(st.just("madvise"), mm_index, page, st.just("pageout"), st.just(0)),
        st.tuples(
            st.just("madvise"), mm_index, st.just(0), st.just("pageout"), cpu, st.just(PAGES)
        ),
        st.tuples(st.just("fork"), mm_index),
        st.tuples(st.just("exit"), mm_index),
        st.tuples(
            st.just("madvise"),
            mm_index,
            page,
            st.sampled_from(["pageout", "pageout", "cold", "dontneed", "dontfork", "dofork"]),
            cpu,
        ),
        st.tuples(st.just("mprotect"), mm_index, page, st.sampled_from(["r", "rw"])),
        st.tuples(st.just("clear_softdirty"), mm_index),
        st.tuples(st.just("uffd_wp"), mm_index, page, st.booleans()),
        st.tuples(st.just("gup"), mm_index, page, st.sampled_from(["get", "pin"]), st.booleans()),
        st.tuples(st.just("put"), st.integers(0, 7)),
        st.tuples(st.just("drain"), st.sampled_from([0, 1, None])),
        st.tuples(st.just("io_complete")),
        st.tuples(st.just("advance"), st.integers(1, 300)),
        st.tuples(st.just("collapse"), mm_index),
        st.tuples(
            st.just("madvise"), mm_index, st.just(THP_AT), st.just("pageout"), cpu, st.just(512)
        ),
    )


def random_ops(rng: random.Random, count: int) -> list[Op]:
    """``count`` operations for :func:`apply_ops` drawn from ``rng`` (no hypothesis)."""
    advices = ["pageout", "cold", "dontneed", "dontfork", "dofork"]
    ops: list[Op] = []
    for _ in range(count):
        mm, page, cpu = rng.randrange(8), rng.choice(PROBE_PAGES), rng.randrange(2)
        roll = rng.random()
        if roll < 0.35:
            ops.append(("write", mm, page, cpu))
        elif roll < 0.5:
            ops.append(("read", mm, page, cpu))
        elif roll < 0.6:
            ops.append(("madvise", mm, page, rng.choice(advices), cpu))
        elif roll < 0.65:
            ops.append(("fork", mm))
        elif roll < 0.69:
            ops.append(("exit", mm))
        elif roll < 0.73:
            ops.append(("mprotect", mm, page, rng.choice(["r", "rw"])))
        elif roll < 0.76:
            ops.append(("clear_softdirty", mm))
        elif roll < 0.79:
            ops.append(("uffd_wp", mm, page, rng.random() < 0.5))
        elif roll < 0.85:
            ops.append(("gup", mm, page, rng.choice(["get", "pin"]), rng.random() < 0.5))
        elif roll < 0.89:
            ops.append(("put", rng.randrange(8)))
        elif roll < 0.93:
            ops.append(("drain", rng.choice([0, 1, None])))
        elif roll < 0.96:
            ops.append(("advance", rng.randrange(1, 300)))
        elif roll < 0.98:
            ops.append(("collapse", mm))
        else:
            ops.append(("io_complete",))
    return ops


def apply_ops(
    k: Kernel,
    ops: list[tuple[Any, ...]],
    *,
    pins_only: bool = False,
    check_each: bool = True,
    safe: bool = False,
    large: bool = False,
) -> None:
    """Run ``ops`` (skipping those that do not apply), checking invariants as it goes,
    then tear everything down and check nothing leaked."""
    first = k.create_mm("m0")
    k.mmap(first, 0, PAGES)
    if large:
        k.mmap(first, THP_AT, 512, thp="pmd")
        k.mmap(first, HUGETLB_AT, 512, hugetlb="2m")
        if k.config.mthp:
            k.mmap(first, MTHP_AT, 16, thp="mthp-2")
    live: list[MM] = [first]
    held: list[str] = []
    for n, op in enumerate(ops):
        kind = op[0]
        has_mm = kind not in ("put", "drain", "io_complete", "advance")
        mm = live[op[1] % len(live)] if has_mm else None
        vma = mm.find_vma(op[2]) if mm is not None and len(op) > 2 else None
        if kind in ("write", "read"):
            if (
                mm is not None
                and vma is not None
                and vma.readable
                and (kind == "read" or vma.writable)
            ):
                if kind == "write":
                    k.write(mm, op[2], op[3])
                else:
                    k.read(mm, op[2], op[3])
        elif kind == "fork" and mm is not None:
            live.append(k.fork(mm, f"m{n + 1}"))
        elif kind == "exit" and mm is not None and len(live) > 1:
            live.remove(mm)
            k.exit_mm(mm)
        elif kind == "collapse" and mm is not None and mm.covered(THP_AT, THP_AT + 512):
            k.madvise(mm, THP_AT, 512, "collapse")
        elif vma is not None and vma.hugetlb and kind in ("madvise", "mprotect", "uffd_wp"):
            continue  # hugetlb ranges must be huge-page aligned: not what these ops pick
        elif kind == "madvise" and mm is not None and vma is not None:
            length = op[5] if len(op) > 5 else 1
            if mm.covered(op[2], op[2] + length):
                k.madvise(mm, op[2], length, op[3], op[4])
        elif kind == "mprotect" and mm is not None and vma is not None:
            k.mprotect(mm, op[2], 1, op[3])
        elif kind == "clear_softdirty" and mm is not None:
            k.clear_softdirty(mm)
        elif kind == "uffd_wp" and mm is not None and vma is not None:
            k.uffd_wp(mm, op[2], 1, op[3])
        elif kind == "gup" and mm is not None and vma is not None and vma.readable:
            write = op[4] and vma.writable
            if mm.pt.get(op[2], 0) == 0 and vma.writable:
                k.write(mm, op[2])
            try:
                k.gup(mm, op[2], 1, pin=op[3] == "pin" or pins_only, write=write, name=f"g{n}")
                held.append(f"g{n}")
            except KernelError as exc:
                if "zero page" not in str(exc):
                    raise
        elif kind == "put" and held:
            k.put(held.pop(op[1] % len(held)))
        elif kind == "drain":
            if op[1] is None:
                k.lru_add_drain_all()
            else:
                k.lru_add_drain(op[1])
        elif kind == "io_complete":
            k.io_complete()
        elif kind == "advance":
            k.advance(op[1] * 1000)
        if check_each:
            problems = k.check_invariants(safe_run=safe)
            if problems:
                raise InvariantError(f"after op {n} {op}: {problems}")
    for mm in live:
        k.exit_mm(mm)
    for name in held:
        k.put(name)
    k.io_complete()
    k.lru_add_drain_all()
    k.reclaim_unmapped_swapcache()
    if k.frames:
        leaked = [f.describe() for f in {id(f): f for f in k.frames.values()}.values()]
        raise InvariantError(f"leaked frames after teardown: {leaked}")
    if k.swap.swap_map or k.swap.cache:
        raise InvariantError("leaked swap slots after teardown")
    problems = k.check_invariants()
    if problems:
        raise InvariantError(f"after teardown: {problems}")


# -- the policy contract ------------------------------------------------------------------
class _Recorder:
    """Wraps a policy: checks every answer is a Decision and records the sequence."""

    def __init__(self, policy: Policy) -> None:
        self.inner = policy
        self.name = getattr(policy, "name", type(policy).__name__)
        self.oracle = bool(getattr(policy, "oracle", False))
        self.answers: list[tuple[str, str | None]] = []

    def reset(self, seed: int | None) -> None:
        self.inner.reset(seed)

    def decide(self, fault: Any) -> Decision:
        answer = self.inner.decide(fault)
        if isinstance(answer, Decision):
            self.answers.append((answer.kind, answer.reason))
        return answer  # the kernel refuses anything else with a PolicyError


def check_policy_contract(
    make_policy: Callable[[], Policy],
    *,
    presets: tuple[str, ...] = ("v5.9", "v5.18", "v5.19", "v6.15"),
    seeds: tuple[int, ...] = (0, 1, 2),
    ops: int = 60,
) -> int:
    """Check a policy against the contract; returns how many decisions it made.

    For every preset and seed, the same random operation sequence is run twice with a
    fresh policy from ``make_policy``: every answer must be a Decision, the two runs must
    give the same decisions (determinism for a seed), and the simulator's invariants must
    hold throughout (a policy may be wrong - violations are allowed - but it must not
    crash or corrupt anything). Raises :class:`ContractError` or :class:`InvariantError`.
    """
    decisions = 0
    for preset in presets:
        for seed in seeds:
            runs = []
            for _ in range(2):
                recorder = _Recorder(make_policy())
                kernel = Kernel(
                    get_preset(preset), recorder, machine=Machine(swap="ssd"), seed=seed
                )
                try:
                    apply_ops(
                        kernel,
                        random_ops(random.Random(seed), ops),
                        large=True,
                        check_each=False,
                    )
                except PolicyError as exc:
                    raise ContractError(f"{preset}, seed {seed}: {exc}") from exc
                runs.append(recorder.answers)
            if runs[0] != runs[1]:
                raise ContractError(
                    f"policy {recorder.name!r} is not deterministic for seed {seed} on "
                    f"{preset}: two runs of the same operations answered differently"
                )
            decisions += len(runs[0])
    return decisions


def run_cow_selftest(policy: str, kernel: str = "v5.19") -> Any:
    """Run the cow.c suite against ``policy`` on ``kernel``; returns the suite's results
    (see :mod:`cowlab.selftest`)."""
    import importlib

    try:
        selftest = importlib.import_module("cowlab.selftest")
    except ImportError as exc:  # pragma: no cover - the selftest ships with cowlab
        raise RuntimeError("cowlab.selftest is not available in this version") from exc
    return selftest.run_suite(kernel=kernel, policy=policy)


# -- pytest fixtures ------------------------------------------------------------------------
@pytest.fixture
def cowlab_registry() -> Iterator[Callable[..., Any]]:
    """``cowlab_registry(*plugins, entry_points=False)``: a registry with only the given
    plugins (module objects or objects with ``@hookimpl`` functions)."""
    from cowlab.plugins import load_registry

    def make(*plugins: object, entry_points: bool = False) -> Any:
        named = [(getattr(p, "__name__", type(p).__name__), p) for p in plugins]
        return load_registry(entry_points=entry_points, extra_plugins=named, disable=())

    yield make


@pytest.fixture
def cowlab_kernel() -> Callable[..., Kernel]:
    """``cowlab_kernel(preset, policy, **machine)``: a fresh simulated kernel."""

    def make(preset: str, policy: Policy, **machine: Any) -> Kernel:
        if preset not in PRESETS and f"v{preset}" not in PRESETS:
            get_preset(preset)  # raises with a did-you-mean message
        return Kernel(get_preset(preset), policy, machine=Machine(**machine))

    return make


__all__ = [
    "HUGETLB_AT",
    "MM",
    "MTHP_AT",
    "PAGES",
    "PROBE_PAGES",
    "THP_AT",
    "ContractError",
    "InvariantError",
    "KernelError",
    "apply_ops",
    "check_policy_contract",
    "cowlab_kernel",
    "cowlab_registry",
    "op_strategy",
    "random_ops",
    "run_cow_selftest",
]


def assert_safe_up_to(policy: str | Policy, kernel: str = "v5.19", *, depth: int = 3,
                      mms: int = 2, pages: int = 1, cpus: int = 2,
                      ops: tuple[str, ...] | None = None, strict: bool = False) -> Any:
    """Assert that ``policy`` is safe up to ``depth`` steps on ``kernel`` over the given
    universe (``cowlab verify``); returns the :class:`~cowlab.verify.VerifyResult`.

    ``policy`` is a registered name or a policy object. On failure the AssertionError's
    message holds the shortest counterexample as a scenario YAML document, ready for
    ``cowlab scenario run``::

        def test_my_rule_is_safe_to_depth_3():
            assert_safe_up_to("my-rule", "v5.19", depth=3)
    """
    from cowlab.verify import DEFAULT_OPS, Bounds, to_scenario, verify

    bounds = Bounds(depth=depth, mms=mms, pages=pages, cpus=cpus,
                    ops=DEFAULT_OPS if ops is None else tuple(ops), strict=strict,
                    explicit_ops=ops is not None)
    result = verify(policy, kernel, bounds)
    if result.status == "counterexample":
        raise AssertionError(f"{result.headline()}\n{to_scenario(result)}")
    if result.status != "safe":
        raise AssertionError(result.headline())
    return result

