"""The universe a bounded search explores: K processes, P pages, C CPUs, op families.

Every state of the search is reached from one initial state: process ``m0`` maps ``P``
private anonymous pages at page 0 and writes each once with the content ``0`` (so KSM
can merge pages that were never rewritten). From there, each transition is one
scenario step (the ops of ``cowlab scenario run``, docs/scenarios.md) drawn from the op
families of :data:`FAMILIES`, applied to every live process, page and CPU the family
ranges over. Processes are created only by ``fork`` (at most ``K`` in all, named
``m0 .. m{K-1}`` in creation order); GUP references are named ``g1, g2, ...`` in the
order they are taken.

The op alphabet is symmetric: an op offered on one process (page aside) or CPU is
offered on every other, which is what lets :mod:`cowlab.verify.state` merge states that
differ only by a renaming of processes or CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cowlab.geometry import Geometry

#: Op family -> what it adds to the alphabet (the help text and docs/verify.md).
FAMILIES: dict[str, str] = {
    "write": "write: every live mm x page x CPU",
    "read": "read: every live mm x page x CPU",
    "fork": "fork: every live mm (CPU 0) while fewer than K mms were created",
    "exit": "exit: every live mm",
    "munmap": "munmap of one page: every live mm x page",
    "mprotect": "mprotect to r and to rw: every live mm x page",
    "gup-get": "GUP FOLL_GET, R/O and R/W: every live mm x page (CPU 0)",
    "gup-pin": "FOLL_PIN, R/O and R/W: every live mm x page (CPU 0)",
    "gup-longterm": "FOLL_PIN|FOLL_LONGTERM, R/O and R/W: every live mm x page (CPU 0)",
    "put": "put / unpin: every live GUP reference",
    "pageout": "madvise(MADV_PAGEOUT): every live mm x page (CPU 0)",
    "dontfork": "madvise(MADV_DONTFORK): every live mm x page",
    "lru_drain": "lru_add_drain on each CPU, and lru_add_drain_all",
    "io_complete": "finish pending swap I/O (a no-op on the synchronous zram and pmem)",
    "ksm": "madvise(MADV_MERGEABLE) per mm x page, and ksm_merge of every pair of pages",
    "softdirty": "clear_refs 4 (clear soft-dirty): every live mm",
    "uffd_wp": "userfaultfd-wp on and off: every live mm x page",
    "thp": "the initial mapping is one mTHP folio of the largest enabled order that fits "
    "(presets with multi-size THP only)",
}

#: The families every search uses unless ``ops`` says otherwise (all of them; ``thp``
#: is dropped silently when the preset or geometry cannot provide it).
DEFAULT_OPS: tuple[str, ...] = tuple(FAMILIES)


class UniverseError(ValueError):
    """Bad bounds (unknown op family, depth < 1, ...): one line, exit status 2."""


@dataclass(frozen=True)
class Bounds:
    """How far a search goes and over which universe.

    ``depth`` counts the steps after the initial state; ``mms`` is the most processes
    ever created (the initial one included), ``pages`` the size of the initial mapping,
    ``cpus`` the machine's CPUs, ``ops`` the op families, ``swap`` the swap device.
    ``symmetry`` merges states that differ by a renaming of mms or CPUs (sound for
    policies that do not look at CPU numbers; see docs/verify.md).
    """

    depth: int = 4
    mms: int = 2
    pages: int = 1
    cpus: int = 2
    ops: tuple[str, ...] = DEFAULT_OPS
    swap: str = "zram"
    symmetry: bool = True
    #: Count every violation as a counterexample, also those no decision could have
    #: avoided (both answers violate); by default those are reported apart.
    strict: bool = False
    #: The op families asked for explicitly (an unavailable one is then an error).
    explicit_ops: bool = field(default=False, compare=False)

    def check(self) -> None:
        """Raise :class:`UniverseError` on bounds that make no sense."""
        from cowlab.kernel.costs import DEVICES

        for name, value, low, high in (("depth", self.depth, 1, 64), ("mms", self.mms, 1, 6),
                                       ("pages", self.pages, 1, 64),
                                       ("cpus", self.cpus, 1, 8)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise UniverseError(f"--{name}: expected an integer {low}..{high}, got {value!r}")
        if not self.ops:
            raise UniverseError("--ops: give at least one op family")
        for op in self.ops:
            if op not in FAMILIES:
                import difflib

                hint = difflib.get_close_matches(op, list(FAMILIES), n=1)
                raise UniverseError(
                    f"--ops: unknown op family {op!r}"
                    f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; known: "
                    f"{', '.join(FAMILIES)}"
                )
        if self.swap not in DEVICES:
            raise UniverseError(
                f"--swap: unknown device {self.swap!r}; known: {', '.join(DEVICES)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what executors ship to workers and ``--json`` prints)."""
        return {"depth": self.depth, "mms": self.mms, "pages": self.pages, "cpus": self.cpus,
                "ops": list(self.ops), "swap": self.swap, "symmetry": self.symmetry,
                "strict": self.strict}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bounds:
        """The reverse of :meth:`to_dict`."""
        return cls(int(data["depth"]), int(data["mms"]), int(data["pages"]),
                   int(data["cpus"]), tuple(data["ops"]), str(data["swap"]),
                   bool(data["symmetry"]), bool(data.get("strict", False)))


def thp_order(bounds: Bounds, mthp: bool, geometry: Geometry) -> int:
    """The mTHP order of the initial mapping with the ``thp`` family, or 0 for none."""
    if "thp" not in bounds.ops or not mthp:
        return 0
    fits = [o for o in geometry.mthp_orders if 2 <= o < 9 and (1 << o) <= bounds.pages]
    return max(fits) if fits else 0


def thp_unavailable_reason(bounds: Bounds, mthp: bool, geometry: Geometry) -> str | None:
    """Why ``--ops thp`` cannot be honoured (None when it can)."""
    if "thp" not in bounds.ops or thp_order(bounds, mthp, geometry):
        return None
    if not mthp:
        return "the preset has no multi-size THP (v6.8+, 19eaf44954df)"
    smallest = min((o for o in geometry.mthp_orders if o >= 2), default=None)
    if smallest is None:
        return "the geometry enables no mTHP order"
    return f"--pages {bounds.pages} is smaller than the smallest mTHP ({1 << smallest} pages)"


def effective_ops(bounds: Bounds, mthp: bool, geometry: Geometry) -> tuple[str, ...]:
    """The families actually in use (``thp`` dropped when the preset cannot give it)."""
    if thp_unavailable_reason(bounds, mthp, geometry) is None:
        return bounds.ops
    return tuple(op for op in bounds.ops if op != "thp")


def initial_steps(bounds: Bounds, order: int) -> list[dict[str, Any]]:
    """The scenario steps that build the initial state."""
    mmap: dict[str, Any] = {"op": "mmap", "mm": "m0", "page": 0, "pages": bounds.pages}
    if order:
        mmap["thp"] = f"mthp-{order}"
    return [mmap] + [{"op": "write", "mm": "m0", "page": p, "data": 0}
                     for p in range(bounds.pages)]


@dataclass
class Alphabet:
    """What the ops offered in a state depend on besides the kernel."""

    ops: frozenset[str]
    pages: int
    cpus: int
    max_mms: int

    def steps(self, live: list[str], created: int, gup_names: list[str],
              next_gup: int) -> list[dict[str, Any]]:
        """Every step offered in a state, in a fixed order (the BFS order)."""
        ops = self.ops
        pages = range(self.pages)
        cpus = range(self.cpus)
        out: list[dict[str, Any]] = []
        add = out.append
        for mm in live:
            if "write" in ops:
                for p in pages:
                    for c in cpus:
                        add({"op": "write", "mm": mm, "page": p, "cpu": c})
            if "read" in ops:
                for p in pages:
                    for c in cpus:
                        add({"op": "read", "mm": mm, "page": p, "cpu": c})
        if "fork" in ops and created < self.max_mms:
            for mm in live:
                add({"op": "fork", "mm": mm, "child": f"m{created}"})
        gname = f"g{next_gup}"
        for mm in live:
            if "exit" in ops:
                add({"op": "exit", "mm": mm})
            for p in pages:
                if "munmap" in ops:
                    add({"op": "munmap", "mm": mm, "page": p})
                if "mprotect" in ops:
                    add({"op": "mprotect", "mm": mm, "page": p, "prot": "r"})
                    add({"op": "mprotect", "mm": mm, "page": p, "prot": "rw"})
                for fam, kind, longterm in (("gup-get", "get", False), ("gup-pin", "pin", False),
                                            ("gup-longterm", "pin", True)):
                    if fam in ops:
                        for write in (False, True):
                            add({"op": "gup", "mm": mm, "page": p, "kind": kind,
                                 "write": write, "longterm": longterm, "name": gname})
                if "pageout" in ops:
                    add({"op": "madvise", "mm": mm, "page": p, "advice": "pageout"})
                if "dontfork" in ops:
                    add({"op": "madvise", "mm": mm, "page": p, "advice": "dontfork"})
                if "ksm" in ops:
                    add({"op": "madvise", "mm": mm, "page": p, "advice": "mergeable"})
                if "uffd_wp" in ops:
                    add({"op": "uffd_wp", "mm": mm, "page": p, "enable": True})
                    add({"op": "uffd_wp", "mm": mm, "page": p, "enable": False})
            if "softdirty" in ops:
                add({"op": "clear_softdirty", "mm": mm})
        if "put" in ops:
            for name in gup_names:
                add({"op": "put", "name": name})
        if "lru_drain" in ops:
            for c in cpus:
                add({"op": "lru_drain", "cpu": c})
            if self.cpus > 1:
                add({"op": "lru_drain", "cpu": "all"})
        if "io_complete" in ops:
            add({"op": "io_complete"})
        if "ksm" in ops:
            spots = [(mm, p) for mm in live for p in pages]
            for i, a in enumerate(spots):
                for b in spots[i + 1:]:
                    add({"op": "ksm_merge", "pages": [{"mm": a[0], "page": a[1]},
                                                      {"mm": b[0], "page": b[1]}]})
        return out
