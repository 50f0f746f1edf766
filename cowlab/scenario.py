"""Scripted scenario files: YAML steps turned into kernel operations.

A scenario names a kernel (a preset, or a preset plus facility overrides), an
optional geometry and machine, and a list of steps, each one operation::

    kernel: v5.19                  # or {preset: v5.18, lru_batch_size: 31}
    machine: {cpus: 2, swap: zram}
    steps:
      - {op: mmap, mm: parent, page: 0, pages: 4}
      - {op: write, mm: parent, page: 0}
      - {op: fork, mm: parent, child: child}

Every step is validated before anything runs (unknown op or field, wrong type,
missing field); operations the kernel refuses (unknown mm, page outside any
mapping, address above the geometry's limit) fail when reached. Either way the
error names the file, the step index and the reason: :class:`ScenarioError`.
The op names and fields are a public contract (docs/scenarios.md).
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cowlab.costfile import CostFileError, load_costs
from cowlab.geometry import DEFAULT_GEOMETRY, Geometry, GeometryError
from cowlab.kernel.costs import DEVICES, CostModel
from cowlab.kernel.engine import Engine, Thread, ThreadGen
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord, PolicyError
from cowlab.kernel.kernel import ADVICES, Kernel, Machine
from cowlab.kernel.mm import MM, PROTS
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig, PresetError
from cowlab.kernel.thp import HUGETLB_ORDERS, parse_thp
from cowlab.kernels import resolve_kernel
from cowlab.metrics import summarize
from cowlab.yamlfile import YamlFileError, read_yaml


class ScenarioError(ValueError):
    """Bad scenario input: the message names the file, the step and the reason."""


_REQ = object()  # marks a required field

# Field type names used in messages.
_INT, _STR, _BOOL, _NUM, _LIST = "integer", "string", "boolean", "number", "list"
_ANY = "64-bit integer or string"


@dataclass(frozen=True)
class OpSpec:
    """The fields an op takes: name -> (type name, default or _REQ)."""

    fields: dict[str, tuple[str, object]]
    help: str


OPS: dict[str, OpSpec] = {
    "mremap": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1), "new_page": (_INT, _REQ)},
        "move a range to new_page (MREMAP_MAYMOVE | MREMAP_FIXED)",
    ),
    "mmap": OpSpec(
        {
            "mm": (_STR, _REQ),
            "page": (_INT, _REQ),
            "pages": (_INT, 1),
            "thp": (_STR, "none"),
            "populate": (_BOOL, False),
            "prot": (_STR, "rw"),
            "cpu": (_INT, 0),
            "hugetlb": (_STR, "none"),
        },
        "map anonymous private memory (creates the mm on first use)",
    ),
    "munmap": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1)}, "unmap a range"
    ),
    "read": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1), "cpu": (_INT, 0)},
        "load from each page",
    ),
    "write": OpSpec(
        {
            "mm": (_STR, _REQ),
            "page": (_INT, _REQ),
            "pages": (_INT, 1),
            "cpu": (_INT, 0),
            "data": (_ANY, None),
        },
        "store to each page (a write attempt each); 'data' sets equal contents",
    ),
    "fork": OpSpec(
        {"mm": (_STR, _REQ), "child": (_STR, _REQ), "cpu": (_INT, 0)},
        "fork the mm; the child gets the given name",
    ),
    "exit": OpSpec({"mm": (_STR, _REQ)}, "the process exits (its GUP references stay until put)"),
    "madvise": OpSpec(
        {
            "mm": (_STR, _REQ),
            "page": (_INT, _REQ),
            "pages": (_INT, 1),
            "advice": (_STR, _REQ),
            "cpu": (_INT, 0),
        },
        "madvise: " + " | ".join(ADVICES),
    ),
    "mprotect": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1), "prot": (_STR, _REQ)},
        "mprotect: " + " | ".join(PROTS),
    ),
    "clear_softdirty": OpSpec({"mm": (_STR, _REQ)}, "echo 4 > /proc/pid/clear_refs"),
    "uffd_wp": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1), "enable": (_BOOL, _REQ)},
        "userfaultfd write-protect on or off",
    ),
    "gup": OpSpec(
        {
            "mm": (_STR, _REQ),
            "page": (_INT, _REQ),
            "pages": (_INT, 1),
            "kind": (_STR, _REQ),
            "write": (_BOOL, False),
            "longterm": (_BOOL, False),
            "fast": (_BOOL, False),
            "name": (_STR, _REQ),
            "cpu": (_INT, 0),
        },
        "take a GUP reference (kind: get) or pin (kind: pin) under a name",
    ),
    "put": OpSpec({"name": (_STR, _REQ)}, "drop a named GUP reference or pin"),
    "speculative": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1)},
        "another CPU's GUP-fast (or a PFN walker) holds a transient reference on each "
        "page across the next write step",
    ),
    "migrate": OpSpec(
        {
            "mm": (_STR, _REQ),
            "page": (_INT, _REQ),
            "pages": (_INT, 1),
            "duration_us": (_NUM, 20.0),
            "cpu": (_INT, 0),
        },
        "move_pages(): migrate the pages' folios; they stay behind migration entries "
        "(faults wait) for duration_us",
    ),
    "mlock": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1), "cpu": (_INT, 0)},
        "mlock(): VM_LOCKED and populated (write faults in a writable mapping)",
    ),
    "munlock": OpSpec(
        {"mm": (_STR, _REQ), "page": (_INT, _REQ), "pages": (_INT, 1)}, "munlock()"
    ),
    "ksm_merge": OpSpec(
        {"pages": (_LIST, _REQ)}, "merge pages of equal content: pages: [{mm: a, page: 0}, ...]"
    ),
    "lru_drain": OpSpec({"cpu": (_STR, _REQ)}, "lru_add_drain on one CPU, or all"),
    "io_complete": OpSpec({}, "finish all pending swap I/O"),
    "reclaim": OpSpec({"pages": (_INT, _REQ), "cpu": (_INT, 0)},
                      "memory pressure: reclaim up to 'pages' pages from the LRU"),
    "advance": OpSpec({"us": (_NUM, _REQ)}, "let simulated time pass (microseconds)"),
}

_TOP_KEYS = ("kernel", "geometry", "machine", "steps", "description", "name")
_MACHINE_KEYS = ("cpus", "swap", "stable_writes", "swap_slots", "ram_pages", "thp", "costs")


def _did_you_mean(key: str, known: list[str] | tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def _type_ok(kind: str, value: object) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _LIST:
        return isinstance(value, list)
    if kind == _ANY:
        # Page contents are one 64-bit word (signed or unsigned) or a string: larger
        # integers are the kernel's own tokens for writes without data.
        if isinstance(value, int) and not isinstance(value, bool):
            return -(1 << 63) <= value < 1 << 64
        return isinstance(value, str)
    return isinstance(value, str)


#: The most pages one step may cover (``pages`` of mmap, write, mprotect, madvise, gup,
#: reclaim, ...): the bound workload parameters have (2^20 pages, 4 GiB of 4 KiB pages).
#: ``cowlab scenario run --max-pages N`` raises or lowers it.
MAX_PAGES = 1 << 20


@dataclass
class Step:
    """One validated step: op name, its fields with defaults filled in, its index."""

    index: int
    op: str
    args: dict[str, Any]

    def where(self, source: str) -> str:
        """``FILE: step N (op)``."""
        return f"{source}: step {self.index} ({self.op})"


@dataclass
class Scenario:
    """A parsed scenario file."""

    source: str
    kernel: KernelConfig
    geometry: Geometry
    machine: Machine
    steps: list[Step]
    description: str = ""
    #: Costs loaded from ``machine.costs`` (None: the defaults).
    costs: CostModel | None = None

    @classmethod
    def load(cls, path: str | Path, *, kernel: str | None = None,
             max_pages: int = MAX_PAGES) -> Scenario:
        """Read and validate a scenario file; ``kernel`` overrides its preset;
        ``max_pages`` bounds the ``pages`` of every step (:data:`MAX_PAGES`)."""
        try:
            data = read_yaml(path, what="scenario")
        except YamlFileError as exc:
            raise ScenarioError(str(exc)) from None
        return cls.from_mapping(data, source=str(path), kernel=kernel, max_pages=max_pages)

    @classmethod
    def from_mapping(
        cls, data: object, *, source: str = "<scenario>", kernel: str | None = None,
        max_pages: int = MAX_PAGES,
    ) -> Scenario:
        """Validate an already-parsed scenario document."""
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: a scenario must be a mapping with a 'steps' list")
        for key in data:
            if key not in _TOP_KEYS:
                raise ScenarioError(
                    f"{source}: unknown key '{key}'{_did_you_mean(str(key), _TOP_KEYS)}"
                    f"; expected one of {', '.join(_TOP_KEYS)}"
                )
        config = _parse_kernel(data.get("kernel", "v5.19"), source, kernel)
        try:
            geometry = (
                Geometry.from_mapping(data["geometry"], where=f"{source}: geometry")
                if "geometry" in data
                else DEFAULT_GEOMETRY
            )
        except GeometryError as exc:
            raise ScenarioError(str(exc)) from None
        machine_doc = data.get("machine", {})
        costs = None
        if isinstance(machine_doc, dict) and "costs" in machine_doc:
            machine_doc = dict(machine_doc)
            costs = _load_costs(machine_doc.pop("costs"), source)
        machine = _parse_machine(machine_doc, source)
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ScenarioError(f"{source}: 'steps' must be a non-empty list of operations")
        steps = [_parse_step(i, raw, source) for i, raw in enumerate(raw_steps)]
        _check_page_bounds(steps, source, max_pages)
        description = data.get("description", "")
        return cls(source, config, geometry, machine, steps, str(description), costs)


def _load_costs(value: object, source: str) -> CostModel:
    """``machine.costs``: a cost file, relative to the scenario file's directory."""
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{source}: machine.costs: expected a file name, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = Path(source).parent / path
    try:
        return load_costs(path)
    except CostFileError as exc:
        raise ScenarioError(f"{source}: machine.costs: {exc}") from None


def _check_page_bounds(steps: list[Step], source: str, max_pages: int) -> None:
    """Refuse, before anything runs, a step whose ``pages`` exceeds ``max_pages`` (a
    write over 10^9 pages would run for minutes and grow past 4 GB)."""
    for step in steps:
        pages = step.args.get("pages")
        if isinstance(pages, int) and not isinstance(pages, bool) and pages > max_pages:
            raise ScenarioError(
                f"{step.where(source)}: field 'pages' is {pages}, over the limit of "
                f"{max_pages} pages per step (raise it with --max-pages)")


def _parse_kernel(value: object, source: str, override: str | None) -> KernelConfig:
    try:
        if override is not None:
            base = resolve_kernel(override, where="--kernel")
            overrides: Mapping[str, object] = value if isinstance(value, dict) else {}
            overrides = {k: v for k, v in overrides.items() if k != "preset"}
            return base.with_overrides(overrides, where=f"{source}: kernel")
        if isinstance(value, str):
            return resolve_kernel(value, where=f"{source}: kernel")
        if isinstance(value, dict):
            if "preset" not in value:
                raise ScenarioError(f"{source}: kernel: a mapping needs 'preset' (e.g. v5.18)")
            base = resolve_kernel(str(value["preset"]), where=f"{source}: kernel.preset")
            rest = {k: v for k, v in value.items() if k != "preset"}
            return base.with_overrides(rest, where=f"{source}: kernel")
    except PresetError as exc:
        raise ScenarioError(str(exc)) from None
    raise ScenarioError(f"{source}: kernel: expected a preset name or a mapping, got {value!r}")


def _parse_machine(value: object, source: str) -> Machine:
    if not isinstance(value, dict):
        raise ScenarioError(f"{source}: machine: expected a mapping, got {value!r}")
    for key in value:
        if key not in _MACHINE_KEYS:
            raise ScenarioError(
                f"{source}: machine: unknown key '{key}'"
                f"{_did_you_mean(str(key), _MACHINE_KEYS)}; expected one of "
                f"{', '.join(_MACHINE_KEYS)}"
            )
    swap = value.get("swap", "zram")
    if not isinstance(swap, str) or swap not in DEVICES:
        raise ScenarioError(
            f"{source}: machine.swap: unknown device {swap!r}; expected one of {', '.join(DEVICES)}"
        )
    for key, kind in (("cpus", _INT), ("stable_writes", _BOOL), ("swap_slots", _INT),
                      ("ram_pages", _INT)):
        if key in value and value[key] is not None and not _type_ok(kind, value[key]):
            raise ScenarioError(f"{source}: machine.{key}: expected {kind}, got {value[key]!r}")
    try:
        return Machine(**value)
    except KernelError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def _parse_step(index: int, raw: object, source: str) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: step {index}: expected a mapping with 'op', got {raw!r}")
    op = raw.get("op")
    if not isinstance(op, str) or op not in OPS:
        if op is None:
            raise ScenarioError(f"{source}: step {index}: missing 'op'")
        raise ScenarioError(
            f"{source}: step {index}: unknown op '{op}'"
            f"{_did_you_mean(str(op), list(OPS))}; known ops: {', '.join(OPS)}"
        )
    spec = OPS[op]
    where = f"{source}: step {index} ({op})"
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "op":
            continue
        if key not in spec.fields:
            raise ScenarioError(
                f"{where}: unknown field '{key}'"
                f"{_did_you_mean(str(key), list(spec.fields))}; {op} takes "
                f"{', '.join(spec.fields) or 'no fields'}"
            )
        kind = spec.fields[key][0]
        if op == "lru_drain" and key == "cpu":
            if value != "all" and not _type_ok(_INT, value):
                raise ScenarioError(
                    f"{where}: field 'cpu': expected a CPU number or 'all', got {value!r}"
                )
        elif not _type_ok(kind, value):
            raise ScenarioError(f"{where}: field '{key}': expected {kind}, got {value!r}")
        args[key] = value
    for key, (_kind, default) in spec.fields.items():
        if key not in args:
            if default is _REQ:
                raise ScenarioError(f"{where}: missing field '{key}'")
            args[key] = default
    for key in ("page", "pages", "cpu"):
        if key in args and isinstance(args[key], int) and args[key] < (1 if key == "pages" else 0):
            raise ScenarioError(
                f"{where}: field '{key}' must be "
                f"{'at least 1' if key == 'pages' else 'non-negative'}, "
                f"got {args[key]}"
            )
    if op == "gup" and args["kind"] not in ("get", "pin"):
        raise ScenarioError(f"{where}: field 'kind' must be 'get' or 'pin', got {args['kind']!r}")
    if op == "mmap":
        try:
            parse_thp(args["thp"])
        except KernelError as exc:
            raise ScenarioError(f"{where}: field 'thp': {exc}") from None
        if args["hugetlb"] not in ("none", *HUGETLB_ORDERS):
            raise ScenarioError(f"{where}: field 'hugetlb' must be none, 2m or 1g, "
                                f"got {args['hugetlb']!r}")
    if op == "madvise" and args["advice"] not in ADVICES:
        raise ScenarioError(
            f"{where}: field 'advice': unknown advice {args['advice']!r}"
            f"{_did_you_mean(args['advice'], ADVICES)}; expected one of "
            f"{', '.join(ADVICES)}"
        )
    for key in ("prot",):
        if key in args and args[key] not in PROTS:
            raise ScenarioError(
                f"{where}: field 'prot' must be one of {', '.join(PROTS)}, got {args[key]!r}"
            )
    if op == "advance" and not (math.isfinite(args["us"]) and args["us"] >= 0):
        raise ScenarioError(f"{where}: field 'us' must be a finite non-negative number")
    if op == "migrate" and not (
        math.isfinite(args["duration_us"]) and 0 < args["duration_us"] <= 1e9
    ):
        raise ScenarioError(
            f"{where}: field 'duration_us' must be a positive number of microseconds "
            f"(at most 1e9), got {args['duration_us']!r}"
        )
    if op == "ksm_merge":
        if len(args["pages"]) < 2:
            raise ScenarioError(f"{where}: field 'pages' needs at least two pages to merge")
        for j, item in enumerate(args["pages"]):
            if (
                not isinstance(item, dict)
                or set(item) != {"mm", "page"}
                or not _type_ok(_STR, item["mm"])
                or not _type_ok(_INT, item["page"])
                or item["page"] < 0
            ):
                raise ScenarioError(
                    f"{where}: pages[{j}] must be {{mm: <name>, page: <non-negative int>}}, "
                    f"got {item!r}"
                )
    return Step(index, op, args)


@dataclass
class ScenarioResult:
    """What a scenario run produced."""

    scenario: Scenario
    policy: str
    attempts: list[FaultRecord]
    counters: dict[str, int]
    violations: list[FaultRecord]
    metrics: dict[str, Any]
    kernel: Kernel = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` document."""
        return {
            "scenario": self.scenario.source,
            "kernel": self.scenario.kernel.name,
            "policy": self.policy,
            "attempts": [r.to_dict() for r in self.attempts],
            "counters": dict(self.counters),
            "violations": [r.to_dict() for r in self.violations],
            "metrics": self.metrics,
        }


class ScenarioRunner:
    """Runs a :class:`Scenario`'s steps, in order, as one thread on the engine.

    Each step is an event on the kernel's one clock: it starts when the previous one has
    finished (its simulated cost included), so asynchronous I/O completes while later
    steps run, and a fault that must wait for a page lock sleeps and is retried.
    """

    def __init__(
        self,
        scenario: Scenario,
        policy: Policy,
        *,
        seed: int | None = 0,
        step_hook: Callable[[Kernel, Step], None] | None = None,
        progress: TextIO | None = None,
        progress_every_s: float = 2.0,
    ) -> None:
        self.scenario = scenario
        self.kernel = Kernel(
            scenario.kernel, policy, geometry=scenario.geometry, machine=scenario.machine,
            costs=scenario.costs, seed=seed,
        )
        self.engine = Engine(self.kernel)
        self.mms: dict[str, MM] = {}
        self.exited: set[str] = set()
        self.step_hook = step_hook
        self._step: Step | None = None
        #: Where a long run reports its progress (None: silent); the first line comes
        #: after ``progress_every_s`` seconds, so short runs print nothing.
        self.progress = progress
        self.progress_every_s = progress_every_s
        self._started = time.perf_counter()
        self._last_report = self._started

    def run(self) -> ScenarioResult:
        """Run every step; raise :class:`ScenarioError` naming the step on bad input."""
        k = self.kernel
        self.engine.spawn("scenario", self._body)
        try:
            self.engine.run()
        except (KernelError, GeometryError, PolicyError) as exc:
            where = self._step.where(self.scenario.source) if self._step else self.scenario.source
            raise ScenarioError(f"{where}: {exc}") from None
        name = getattr(k.policy, "name", type(k.policy).__name__)
        return ScenarioResult(
            self.scenario,
            name,
            list(k.records),
            k.counters.as_dict(),
            list(k.violations),
            summarize(k.records, k.counters.as_dict()),
            k,
        )

    def _body(self, thread: Thread) -> ThreadGen:
        k = self.kernel
        self._started = self._last_report = time.perf_counter()
        for step in self.scenario.steps:
            self._step = step
            before = len(k.records)
            yield from self._apply(thread, step)
            for rec in k.records[before:]:
                rec.step = step.index
            if self.step_hook is not None:
                self.step_hook(k, step)
            if self.progress is not None:
                self._report(step)

    def _report(self, step: Step, within: str = "done") -> None:
        """A progress line on :attr:`progress`, at most every ``progress_every_s``."""
        now = time.perf_counter()
        if now - self._last_report < self.progress_every_s:
            return
        self._last_report = now
        n = len(self.scenario.steps)
        print(f"{self.scenario.source}: step {step.index + 1}/{n} ({step.op}) {within}, "
              f"{len(self.kernel.records)} write attempts, {now - self._started:.0f} s",
              file=self.progress, flush=True)

    def _mm(self, name: str) -> MM:
        mm = self.mms.get(name)
        if mm is None:
            if name in self.exited:
                raise KernelError(f"mm '{name}' has exited")
            known = ", ".join(sorted(self.mms)) or "none yet (mmap creates one)"
            raise KernelError(f"unknown mm '{name}' (known: {known})")
        return mm

    def _apply(self, t: Thread, step: Step) -> ThreadGen:
        k = self.kernel
        a = step.args
        op = step.op
        call = t.call
        if op == "mmap":
            mm = self.mms.get(a["mm"])
            if mm is None:
                if a["mm"] in self.exited:
                    raise KernelError(f"mm '{a['mm']}' has exited")
                mm = self.mms[a["mm"]] = k.create_mm(a["mm"])
            yield from call(k.mmap, mm, a["page"], a["pages"], prot=a["prot"], thp=a["thp"],
                            populate=a["populate"], cpu=a["cpu"], hugetlb=a["hugetlb"])
        elif op == "mremap":
            yield from call(k.mremap, self._mm(a["mm"]), a["page"], a["pages"], a["new_page"])
        elif op == "munmap":
            yield from call(k.munmap, self._mm(a["mm"]), a["page"], a["pages"])
        elif op == "write":
            mm = self._mm(a["mm"])
            for p in range(a["page"], a["page"] + a["pages"]):
                yield from call(k.write, mm, p, a["cpu"], a["data"])
                if self.progress is not None:
                    self._report(step, f"page {p - a['page'] + 1}/{a['pages']}")
            # The speculative references of a `speculative` step end with this write.
            k.drop_speculative()
        elif op == "speculative":
            yield from call(k.speculative_ref, self._mm(a["mm"]), a["page"], a["pages"])
        elif op == "migrate":
            yield from call(k.migrate_pages, self._mm(a["mm"]), a["page"], a["pages"],
                            max(1, round(a["duration_us"] * 1000)), a["cpu"])
        elif op == "mlock":
            yield from call(k.mlock, self._mm(a["mm"]), a["page"], a["pages"], a["cpu"])
        elif op == "munlock":
            yield from call(k.munlock, self._mm(a["mm"]), a["page"], a["pages"])
        elif op == "read":
            mm = self._mm(a["mm"])
            for p in range(a["page"], a["page"] + a["pages"]):
                yield from call(k.read, mm, p, a["cpu"])
                if self.progress is not None:
                    self._report(step, f"page {p - a['page'] + 1}/{a['pages']}")
        elif op == "fork":
            if a["child"] in self.mms or a["child"] in self.exited:
                raise KernelError(f"mm name '{a['child']}' is already in use")
            parent = self._mm(a["mm"])
            self.mms[a["child"]] = yield from call(k.fork, parent, a["child"], a["cpu"])
        elif op == "exit":
            yield from call(k.exit_mm, self._mm(a["mm"]))
            del self.mms[a["mm"]]
            self.exited.add(a["mm"])
        elif op == "madvise":
            yield from call(k.madvise, self._mm(a["mm"]), a["page"], a["pages"], a["advice"],
                            a["cpu"])
        elif op == "mprotect":
            yield from call(k.mprotect, self._mm(a["mm"]), a["page"], a["pages"], a["prot"])
        elif op == "clear_softdirty":
            yield from call(k.clear_softdirty, self._mm(a["mm"]))
        elif op == "uffd_wp":
            yield from call(k.uffd_wp, self._mm(a["mm"]), a["page"], a["pages"], a["enable"])
        elif op == "gup":
            yield from call(k.gup, self._mm(a["mm"]), a["page"], a["pages"],
                            pin=a["kind"] == "pin", write=a["write"], longterm=a["longterm"],
                            fast=a["fast"], name=a["name"], cpu=a["cpu"])
        elif op == "put":
            yield from call(k.put, a["name"])
        elif op == "ksm_merge":
            pages = [(self._mm(item["mm"]), item["page"]) for item in a["pages"]]
            yield from call(k.ksm_merge, pages)
        elif op == "lru_drain":
            if a["cpu"] == "all":
                yield from call(k.lru_add_drain_all)
            else:
                k.check_cpu(a["cpu"])
                yield from call(k.lru_add_drain, a["cpu"])
        elif op == "reclaim":
            yield from call(k.reclaim, a["pages"], a["cpu"])
        elif op == "io_complete":
            # Wait until every pending I/O has completed.
            while (due := k.clock.next_event_time()) is not None:
                yield from t.sleep_until(due)
                k.clock.run_until(due)
        elif op == "advance":
            yield from t.sleep(int(a["us"] * 1000))
        else:  # pragma: no cover - OPS and this dispatch are kept in step by tests
            raise KernelError(f"op {op!r} has no implementation")


def run_scenario(
    path: str | Path, policy: Policy, *, kernel: str | None = None, seed: int | None = 0
) -> ScenarioResult:
    """Load and run a scenario file with ``policy``."""
    return ScenarioRunner(Scenario.load(path, kernel=kernel), policy, seed=seed).run()


def format_result(result: ScenarioResult) -> str:
    """The human-readable table printed by ``cowlab scenario run``."""
    lines = [
        f"scenario {result.scenario.source}: kernel {result.scenario.kernel.name}, "
        f"policy {result.policy}",
        "",
        f"{'step':>4}  {'mm':<10} {'page':>6} {'cpu':>3}  {'fault':<7} {'outcome':<7} "
        f"{'reason':<16} {'violation':<14} {'excl':<5} {'lat_us':>7}  blockers",
    ]
    for r in result.attempts:
        excl = "-" if r.exclusive is None else ("yes" if r.exclusive else "no")
        lines.append(
            f"{r.step:>4}  {r.mm:<10.10} {r.page:>6} {r.cpu:>3}  {r.fault:<7} {r.outcome:<7} "
            f"{r.reason or '-':<16.16} {r.violation or '-':<14} {excl:<5} "
            f"{r.latency_ns / 1000:>7.2f}  {','.join(r.blockers) or '-'}"
        )
    lines += ["", "counters:"]
    nonzero = [(k, v) for k, v in result.counters.items() if v]
    lines += [f"  {k:<24} {v}" for k, v in nonzero] or ["  (all zero)"]
    m = result.metrics
    rate = m["reuse_rate"]
    lines += [
        "",
        f"reuse rate over truly reusable faults: "
        f"{'n/a' if rate is None else f'{rate:.3f}'} ({m['truly_reusable']} reusable), "
        f"unnecessary copies: {m['unnecessary_copies']}",
        f"violations: {len(result.violations)}",
    ]
    for r in result.violations:
        lines.append(f"  step {r.step}: {r.violation} at mm {r.mm} page {r.page} ({r.outcome})")
    return "\n".join(lines)
