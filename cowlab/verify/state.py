"""The canonical state hash: two states with the same hash behave the same from now on.

The hash is read from the kernel's own data structures: every live folio (flags, per-page
state, page contents, the whole reference ledger), every mm (its VMAs with their flags,
every present, swap and migration PTE, has_pinned, the CPUs it ran on, alive), GUP
references and pins, the swap device (swap map, owners of each swap PTE, the swapcache,
slot contents, the slot allocator, readahead state), the LRU lists and each CPU's folio
batches in their order, deferred splits, pending clock events (relative to now), the
engine's CPU availability, the number of processes created and the policy's state.

Renamings that cannot change what happens next are collapsed:

* PFNs: folios get canonical numbers in order of first appearance in a walk of the mms
  (in canonical order), pages ascending. A policy's view (FaultView) never shows a PFN,
  and the kernel only compares PFNs for identity.
* page contents: tokens are renumbered by first appearance (only equality matters: KSM).
* GUP names and ids: references are ordered by (mm, page, flags, folio); names are labels.
* mms and CPUs (``symmetry``): the serialisation is computed for every renaming of mms
  and CPUs that a cheap renaming-invariant signature cannot tell apart, and the smallest
  is kept. The op alphabet is symmetric (cowlab/verify/universe.py), so renamed states
  have renamed futures, *provided the policy does not look at CPU numbers or mm names*
  (FaultView exposes ``cpu``); ``Bounds.symmetry=False`` turns this off.

Swap slot numbers are kept as they are: readahead windows and large-folio slot clusters
depend on which slots are adjacent. Counters that are only statistics (``pgfault``,
``nr_decisions``, ...) and the absolute clock are left out.

Soundness needs completeness: every field of every kernel class is either serialised or
listed with the reason it is not (:data:`COVERAGE`); fields this module does not know
(another change added them) are serialised generically, and
``tests/verify/test_state.py`` fails until they are classified. A value the generic walk
cannot describe (an arbitrary object) is serialised by identity, so states holding one
never merge: when unsure, do not merge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import types
from collections.abc import Callable, Iterable
from typing import Any

from cowlab.geometry import PTE_PFN_MASK, pte_pfn
from cowlab.kernel.clock import Clock
from cowlab.kernel.engine import Engine
from cowlab.kernel.folio import GUP, LRU_BATCH, PIN, PMD, PTE, ZERO_PFN, Folio, LockHolder
from cowlab.kernel.gup import GupHandle
from cowlab.kernel.kernel import Kernel
from cowlab.kernel.lru import Lru
from cowlab.kernel.migrate import is_migration_entry
from cowlab.kernel.mm import MM, VMA
from cowlab.kernel.swap import SwapDevice
from cowlab.scenario import ScenarioRunner

#: Per class: field -> "state" (serialised) or the reason it is left out.
COVERAGE: dict[type, dict[str, str]] = {
    Kernel: {
        "config": "constant for a search", "geometry": "constant for a search",
        "machine": "constant for a search", "costs": "constant for a search",
        "clock": "state", "counters": "statistics only (no kernel code reads them)",
        "frames": "state", "_next_pfn": "PFNs are renamed", "mms": "state",
        "_next_mm": "mm ids are renamed", "swap": "state", "lru": "state", "gups": "state",
        "gup_names": "state", "next_gup_id": "GUP ids are renamed",
        "write_seq": "content tokens are renamed", "keep_records": "output only",
        "records": "output only", "record_hits": "output only (which stores make records)",
        "violations": "output only (checked per transition)",
        "deferred_split": "state", "migration_entries": "state",
        "watermarks": "constant for a search", "nr_decisions": "statistics only",
        "busy_ns": "reset by every operation", "defer_sleeps": "constant (engine mode)",
        "_in_op": "False between operations", "policy": "state",
        "_oracle": "constant for a search", "_decide": "bound method of the policy",
        "mlock_used": "generic: state (mlock.py's fast-path flag)",
        "speculative": "generic: state (transient GUP-fast references)",
    },
    Folio: {
        "anon": "state", "dirty": "state", "entire_mapcount": "state",
        "freed": "state", "hugetlb": "state", "ksm": "state", "_refs": "state",
        "lock": "state", "lru": "state", "lru_list": "state",
        "maybe_shared": "state", "mm_counts": "state", "mm_ids": "state",
        "order": "state", "pfn": "PFNs are renamed",
        # Per-page state and PTE mappings, serialised through the accessors
        # (data_list, mapcounts, pae_list, ledger_items).
        "_data": "state", "_data0": "state", "_mapcount": "state", "_mapcount0": "state",
        "_pae": "state", "_pae0": "state", "_pte_mm": "state", "_pte_page": "state",
        "_pte_sub": "state", "_ptes": "state",
        "lru_prev": "state (the order of the Lru's lists)",
        "lru_next": "state (the order of the Lru's lists)",
        "pincount": "state", "readahead": "state", "reclaim": "state", "refcount": "state",
        "swap_entry": "state", "writeback": "state",
        "lazyfree": "generic: state (MADV_FREE)",
    },
    MM: {"id": "mm ids are renamed", "name": "a label (the op alphabet is symmetric)",
         "vmas": "state", "pt": "state", "has_pinned": "state", "cpus": "state",
         "alive": "state", "vma_hint": "a lookup hint (checked on every use)"},
    VMA: {f: "state" for f in ("start", "end", "prot", "thp", "dontfork", "mergeable",
                               "uffd_wp", "softdirty", "hugetlb", "locked")},
    GupHandle: {"id": "GUP ids are renamed", "name": "a label (put is offered per name)",
                "mm_id": "state", "page": "state", "pfn": "state", "pin": "state",
                "write": "state", "longterm": "state", "fast": "state"},
    SwapDevice: {"_free": "state", "_next": "state", "cache": "state", "contents": "state",
                 "nr_slots": "constant for a search", "_sole": "state (owners_of)",
                 "_shared": "state (owners_of)",
                 "prev_offset": "state", "ra_hits": "state", "ra_last_win": "state",
                 "spec": "constant for a search", "swap_map": "state",
                 "type": "constant for a search"},
    Lru: {"active": "state", "batch_size": "constant for a search", "batches": "state",
          "inactive": "state", "new_anon_active": "constant for a search",
          "release": "bound method of the kernel",
          "owners": "constant for a search (the batches' ledger owners)"},
    Clock: {"_queue": "state", "_seq": "orders events only (kept as their order)",
            "now": "times are taken relative to now"},
    LockHolder: {"reason": "state", "release_at": "state"},
    Engine: {"kernel": "state", "clock": "the kernel's clock", "_ready": "state",
             "_seq": "orders ready threads only", "_next_tid": "thread ids are labels",
             "_cpus": "state: when each CPU is free (cpu_free_at, above); busy time "
                      "is statistics only",
             "threads": "finished threads (cleared after every step)",
             "steps": "statistics only", "_live": "state",
             "_blocked": "generic: state (threads parked with nothing to wake them)",
             "end_reason": "output only (why the last run ended)",
             "arg": "scratch: the time a thread body yields, read at once"},
    ScenarioRunner: {"scenario": "constant for a search", "kernel": "state",
                     "engine": "state", "mms": "state (which mms are live)",
                     "exited": "its size is the created count", "step_hook": "unused (None)",
                     "_step": "the step last applied (a label)",
                     "progress": "output only", "progress_every_s": "output only",
                     "_last_report": "output only", "_started": "output only"},
}


def class_fields(cls: type, sample: object | None = None) -> set[str]:
    """The fields an instance of ``cls`` has (slots, dataclass fields, tuple fields or,
    given a sample instance, its ``vars()``)."""
    if hasattr(cls, "_fields"):
        return set(cls._fields)
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    slots: set[str] = set()
    for klass in cls.__mro__:
        slots.update(getattr(klass, "__slots__", ()))
        # A class compiled by mypyc (the compiled kernel build, setup.py) lists its
        # attributes here instead of in __slots__ (with "__dict__" if it has one).
        slots.update(a for a in getattr(klass, "__mypyc_attrs__", ()) if a != "__dict__")
    if slots:
        return slots
    if sample is not None:
        return set(vars(sample))
    return set()


def _plain_python(cls: type) -> bool:
    """A class whose whole state is in Python attributes (no C-level storage)."""
    heap = 1 << 9  # Py_TPFLAGS_HEAPTYPE: defined by a class statement
    return all(k is object or k.__flags__ & heap for k in cls.__mro__)


def _known(cls: type) -> dict[str, str]:
    return COVERAGE[cls]


class _Canon:
    """One serialisation under one renaming of mms and CPUs."""

    def __init__(self, k: Kernel, mmap: dict[int, int], cpumap: dict[int, int]) -> None:
        self.k = k
        self.mmap = mmap
        self.cpumap = cpumap
        self.folios: dict[int, int] = {}
        self.order: list[Folio] = []
        self.tokens: dict[Any, int] = {}
        self.handles: dict[int, int] = {}

    def folio(self, f: Folio) -> int:
        i = self.folios.get(id(f))
        if i is None:
            i = self.folios[id(f)] = len(self.order)
            self.order.append(f)
        return i

    def token(self, value: Any) -> Any:
        try:
            i = self.tokens.get(value)
        except TypeError:
            return ("unhashable", id(value))
        if i is None:
            i = self.tokens[value] = len(self.tokens)
        return i

    def mm(self, mm_id: int) -> Any:
        return self.mmap.get(mm_id, ("raw-mm", mm_id))

    def cpu(self, cpu: Any) -> Any:
        return self.cpumap.get(cpu, cpu) if isinstance(cpu, int) else cpu

    # -- generic walk, for fields this module does not know -------------------------
    def generic(self, v: Any, depth: int = 0) -> Any:
        if v is None or isinstance(v, (bool, int, float, str, bytes)):
            return v
        if depth > 8:
            return ("deep", id(v))
        if isinstance(v, Folio):
            return ("F", self.folio(v))
        if isinstance(v, MM):
            return ("M", self.mm(v.id))
        if isinstance(v, (list, tuple)):
            return tuple(self.generic(x, depth + 1) for x in v)
        if isinstance(v, dict):
            return ("d", tuple((self.generic(a, depth + 1), self.generic(b, depth + 1))
                               for a, b in v.items()))
        if isinstance(v, (set, frozenset)):
            return ("s", tuple(sorted((self.generic(x, depth + 1) for x in v), key=repr)))
        if isinstance(v, random.Random):
            return ("rng", v.getstate())
        if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, type)):
            return ("fn", getattr(v, "__module__", ""), getattr(v, "__qualname__", repr(v)))
        if isinstance(v, types.MethodType):
            return ("method", v.__func__.__qualname__, self.generic(v.__self__, depth + 1))
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return (type(v).__qualname__,
                    tuple(self.generic(getattr(v, f.name), depth + 1)
                          for f in dataclasses.fields(v)))
        if _plain_python(type(v)):
            names = class_fields(type(v), v if hasattr(v, "__dict__") else None)
            return (type(v).__module__, type(v).__qualname__,
                    tuple((n, self.generic(getattr(v, n, None), depth + 1))
                          for n in sorted(names)))
        # Nothing to read: identity, so states holding it never merge.
        return ("opaque", type(v).__qualname__, id(v))

    def extra(self, obj: object, cls: type, handled: Iterable[str]) -> tuple[Any, ...]:
        """Fields of ``obj`` that COVERAGE does not know, serialised generically."""
        known = _known(cls)
        fields = class_fields(cls, obj if hasattr(obj, "__dict__") else None)
        # A field classified "generic: ..." is state that has no dedicated serialiser:
        # it goes through the generic walk like an unknown one.
        skip = set(handled) | {n for n, why in known.items() if not why.startswith("generic")}
        return tuple((n, self.generic(getattr(obj, n, None))) for n in sorted(fields - skip))

    # -- the kernel ---------------------------------------------------------------
    def pte(self, pte: int) -> Any:
        if not pte & 1:
            if is_migration_entry(pte):
                return ("mig", pte)
            return ("swp", pte)
        pfn = pte_pfn(pte)
        bits = pte & ~PTE_PFN_MASK
        if pfn == ZERO_PFN:
            return ("zero", bits)
        f = self.k.frames.get(pfn)
        if f is None:
            return ("dangling", pte)
        return (bits, self.folio(f), pfn - f.pfn)

    def vma(self, v: VMA) -> Any:
        return tuple(getattr(v, f.name) for f in dataclasses.fields(v))

    def mm_state(self, mm: MM) -> Any:
        return (
            self.mm(mm.id), mm.alive, mm.has_pinned,
            tuple(sorted(self.cpu(c) for c in mm.cpus)),
            tuple(self.vma(v) for v in mm.vmas),
            tuple((p, self.pte(mm.pt[p])) for p in sorted(mm.pt)),
            self.extra(mm, MM, ()),
        )

    def handle_key(self, h: GupHandle) -> Any:
        f = self.k.frames.get(h.pfn)
        return (repr(self.mm(h.mm_id)), h.page, h.pin, h.write, h.longterm, h.fast,
                h.pfn if f is None else self.folios.get(id(f), 1 << 60), h.pfn)

    def owner(self, kind: str, owner: Any) -> Any:
        if kind in (PTE, PMD):
            return (self.mm(owner[0]), owner[1])
        if kind == LRU_BATCH:
            return (self.cpu(owner[0]), owner[1])
        if kind in (GUP, PIN):
            return ("h", self.handles.get(owner, ("raw", owner)))
        return self.generic(owner)

    def folio_state(self, f: Folio) -> Any:
        now = self.k.clock.now
        lock = None
        if f.lock is not None:
            rel = f.lock.release_at
            lock = (f.lock.reason, None if rel is None else rel - now)
        ledger = sorted(((kind, self.owner(kind, owner), sub, n)
                         for (kind, owner, sub), n in f.ledger_items()), key=repr)
        return (
            f.order, f.nr_pages, f.refcount, tuple(ledger), tuple(f.mapcounts()),
            f.entire_mapcount, f.pincount, tuple(f.pae_list()),
            tuple(self.token(d) for d in f.data_list()), f.anon, f.hugetlb, f.ksm, f.dirty, f.lru,
            f.lru_list, f.writeback, f.reclaim, f.readahead, lock, f.swap_entry, f.freed,
            tuple(None if m is None else self.mm(m) for m in f.mm_ids), tuple(f.mm_counts),
            f.maybe_shared,
            self.extra(f, Folio, ("lock", "mm_ids")),
        )

    def event(self, cb: Callable[[], None]) -> Any:
        cells = []
        for cell in getattr(cb, "__closure__", None) or ():
            v = cell.cell_contents
            cells.append("K" if v is self.k else self.generic(v))
        return (getattr(cb, "__qualname__", repr(type(cb))), tuple(cells))

    def serialise(self, sim_runner: ScenarioRunner, created: int) -> Any:
        k = self.k
        mms = sorted(k.mms.values(), key=lambda m: self.mmap[m.id])
        out: list[Any] = [("created", created)]
        out.append(("mms", tuple(self.mm_state(m) for m in mms)))
        handles = sorted(k.gups.values(), key=self.handle_key)
        for i, h in enumerate(handles):
            self.handles[h.id] = i
        hs = []
        for h in handles:
            f = k.frames.get(h.pfn)
            where = ("raw", h.pfn) if f is None else (self.folio(f), h.pfn - f.pfn)
            hs.append((self.mm(h.mm_id), h.page, where, h.pin, h.write, h.longterm, h.fast,
                       self.extra(h, GupHandle, ())))
        out.append(("gups", tuple(hs)))
        out.append(("gup_names", tuple(sorted(
            tuple(self.handles.get(i, ("raw", i)) for i in ids) for ids in k.gup_names.values()
        ))))
        sw = k.swap
        out.append(("swap", (
            tuple((o, self.folio(f)) for o, f in sorted(sw.cache.items())),
            tuple(sorted(sw.swap_map.items())),
            tuple((o, tuple(sorted((repr(self.mm(m)), c) for m, c in own.items())))
                  for o, own in ((o, sw.owners_of(o)) for o in sorted(sw.swap_map))),
            tuple((o, self.token(c)) for o, c in sorted(sw.contents.items())),
            sw._next, tuple(sw._free), sw.ra_hits, sw.prev_offset, sw.ra_last_win,
            self.extra(sw, SwapDevice, ()),
        )))
        lru = k.lru
        cpus = sorted(range(len(lru.batches)), key=lambda c: self.cpumap.get(c, c))
        out.append(("lru", (
            tuple(self.folio(f) for f in lru.active.values()),
            tuple(self.folio(f) for f in lru.inactive.values()),
            tuple(tuple((name, tuple(self.folio(f) for f in q))
                        for name, q in lru.batches[c].items()) for c in cpus),
            self.extra(lru, Lru, ()),
        )))
        out.append(("deferred_split", tuple(self.folio(f) for f in k.deferred_split.values())))
        out.append(("migration", tuple(
            (pfn, tuple((repr(self.mm(m.id)), p) for m, p in entries))
            for pfn, entries in sorted(k.migration_entries.items()))))
        now = k.clock.now
        queue = sorted(k.clock._queue, key=lambda e: (e[0], e[1]))
        out.append(("events", tuple((at - now, self.event(cb)) for at, _s, cb in queue)))
        eng = sim_runner.engine
        out.append(("engine", (tuple(max(0, t - now) for t in eng.cpu_free_at),
                               len(eng._ready), eng._live, self.extra(eng, Engine, ()))))
        out.append(("live", tuple(sorted(self.mmap[m.id] for m in sim_runner.mms.values()))))
        out.append(("policy", policy_state(k.policy, self)))
        # Folios nothing above reached (none should exist): by PFN, so never merged wrongly.
        for pfn in sorted(k.frames):
            self.folio(k.frames[pfn])
        folios = []
        i = 0
        while i < len(self.order):  # folio_state may reach further folios (generic fields)
            folios.append(self.folio_state(self.order[i]))
            i += 1
        out.append(("folios", tuple(folios)))
        out.append(("kernel-extra", self.extra(k, Kernel, ())))
        return tuple(out)


def policy_state(policy: object, canon: _Canon) -> Any:
    """The policy's behaviour-relevant state: ``policy.verify_state()`` if it has one,
    else its attributes walked generically (an RNG by its state, a function by name)."""
    hook = getattr(policy, "verify_state", None)
    if callable(hook):
        return ("hook", canon.generic(hook()))
    return canon.generic(policy)


def _mm_signature(k: Kernel, mm: MM) -> Any:
    pt = mm.pt
    return (mm.alive, mm.has_pinned, len(mm.vmas), len(mm.cpus),
            tuple((p, pt[p] & ~PTE_PFN_MASK if pt[p] & 1 else -1) for p in sorted(pt)),
            tuple((v.start, v.end, v.prot, v.dontfork, v.mergeable, v.uffd_wp, v.softdirty)
                  for v in mm.vmas),
            sum(1 for h in k.gups.values() if h.mm_id == mm.id))


def _cpu_signature(k: Kernel, cpu: int) -> Any:
    return (tuple(len(q) for q in k.lru.batches[cpu].values()),
            sum(1 for m in k.mms.values() if cpu in m.cpus))


def _renamings(keys: dict[int, Any]) -> list[dict[int, int]]:
    """Every renaming that orders items by signature, permuting only within ties."""
    groups: dict[Any, list[int]] = {}
    for item, sig in sorted(keys.items(), key=lambda kv: (repr(kv[1]), kv[0])):
        groups.setdefault(repr(sig), []).append(item)
    ordered = [groups[s] for s in sorted(groups)]
    out = []
    for combo in itertools.product(*(itertools.permutations(g) for g in ordered)):
        flat = [x for g in combo for x in g]
        out.append({item: rank for rank, item in enumerate(flat)})
    return out


def canonical_form(runner: ScenarioRunner, created: int, *, symmetry: bool = True) -> Any:
    """The canonical serialisation of a state (the smallest over the renamings tried)."""
    k = runner.kernel
    if symmetry:
        mm_maps = _renamings({m.id: _mm_signature(k, m) for m in k.mms.values()})
        cpu_maps = _renamings({c: _cpu_signature(k, c) for c in range(k.machine.cpus)})
    else:
        mm_maps = [{m: i for i, m in enumerate(sorted(k.mms))}]
        cpu_maps = [{c: c for c in range(k.machine.cpus)}]
    best: Any = None
    best_key = ""
    for mmap in mm_maps:
        for cpumap in cpu_maps:
            form = _Canon(k, mmap, cpumap).serialise(runner, created)
            key = repr(form)
            if best is None or key < best_key:
                best, best_key = form, key
    return best


def state_hash(runner: ScenarioRunner, created: int, *, symmetry: bool = True) -> bytes:
    """A 128-bit digest of :func:`canonical_form`."""
    form = canonical_form(runner, created, symmetry=symmetry)
    return hashlib.blake2b(repr(form).encode(), digest_size=16).digest()
