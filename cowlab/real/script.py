"""Translate a validated :class:`~cowlab.scenario.Scenario` into the harness's script.

The harness (``harness.c``) reads a line-based script: a header (``mms N``, ``pipes N``,
``rings N``, ``hash H``, ``name N``) and one ``S <step> <op> <integers...> [# reason]``
line per scenario step. mm names and GUP names become small integers here, so the C side
never parses strings. An op the harness cannot perform on any host becomes
``S <step> skip # <reason>``; host-dependent refusals (a missing CPU, no swap, a THP knob)
are decided by the harness itself at run time and reported the same way.

    >>> from cowlab.scenario import Scenario
    >>> sc = Scenario.from_mapping({"kernel": "v6.15", "steps": [
    ...     {"op": "mmap", "mm": "a", "page": 0, "pages": 2},
    ...     {"op": "write", "mm": "a", "page": 0, "pages": 2, "data": 7},
    ...     {"op": "speculative", "mm": "a", "page": 0}]}, source="s.yaml")
    >>> print(translate(sc).body())
    mms 1
    pipes 0
    rings 0
    S 0 mmap 0 0 2 3 -1 0 0 0
    S 1 write 0 0 2 0 1 7
    S 2 skip # a transient GUP-fast reference cannot be held on purpose from user space
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cowlab.scenario import Scenario, Step

#: madvise(2) advice numbers (include/uapi/asm-generic/mman-common.h).
ADVICE_CODES = {
    "dontneed": 4,
    "free": 8,
    "dontfork": 10,
    "dofork": 11,
    "mergeable": 12,
    "unmergeable": 13,
    "cold": 20,
    "pageout": 21,
    "collapse": 25,
}
PROT_CODES = {"none": 0, "r": 1, "rw": 3}
#: PMD THP is encoded as order 9 (2 MiB of 4 KiB pages).
PMD_ORDER = 9
#: log2 of a 2 MiB hugetlb page, as MAP_HUGE_2MB encodes it.
HUGETLB_2M_SHIFT = 21

#: Ops the harness never performs, with the reason printed for each such step.
UNSUPPORTED = {
    "speculative": "a transient GUP-fast reference cannot be held on purpose from user space",
    "migrate": "page migration (move_pages) is not performed by the harness",
    "reclaim": "memory-pressure reclaim of chosen pages cannot be triggered deterministically",
}
#: An ``io_complete`` waits this long in real time (write-back completion is not visible).
IO_COMPLETE_SLEEP_US = 100_000
#: Every harness run is killed after this many seconds (also baked into emitted programs).
DEFAULT_TIMEOUT_S = 120


def _int64(value: int) -> int:
    """``value`` wrapped to a signed 64-bit integer (what the harness stores)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def data_word(data: int | str) -> int:
    """The 64-bit word a ``write`` with ``data`` stores: the integer itself, or the
    FNV-1a hash of a string (equal data give equal pages, which is all KSM needs)."""
    if isinstance(data, int):
        return _int64(data)
    h = 0xCBF29CE484222325
    for byte in data.encode():
        h = ((h ^ byte) * 0x100000001B3) & ((1 << 64) - 1)
    return _int64(h)


@dataclass
class Script:
    """The translated scenario: the script text and the name tables."""

    name: str
    mms: list[str] = field(default_factory=list)
    pipes: list[str] = field(default_factory=list)
    rings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    #: step index -> reason, for the steps translated to ``skip``.
    skipped: dict[int, str] = field(default_factory=dict)
    ops: dict[int, str] = field(default_factory=dict)
    timeout_s: int = DEFAULT_TIMEOUT_S

    def body(self) -> str:
        """The part of the script that the hash covers."""
        head = [f"mms {len(self.mms)}", f"pipes {len(self.pipes)}", f"rings {len(self.rings)}"]
        return "\n".join(head + self.lines)

    @property
    def hash(self) -> str:
        """sha256 of :meth:`body`: ties a harness result to the scenario it ran."""
        return hashlib.sha256(self.body().encode()).hexdigest()

    def text(self) -> str:
        """The complete script the harness reads."""
        return (
            f"cowlab-real-script 1\nname {self.name}\nhash {self.hash}\n"
            f"timeout {self.timeout_s}\n{self.body()}\n"
        )


def translate(scenario: Scenario, *, timeout_s: int = DEFAULT_TIMEOUT_S) -> Script:
    """The harness script for ``scenario`` (already validated by :class:`Scenario`)."""
    base = scenario.source.rsplit("/", 1)[-1]
    script = Script(re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "scenario", timeout_s=timeout_s)
    mm_ix: dict[str, int] = {}
    pipe_ix: dict[str, int] = {}
    ring_ix: dict[str, int] = {}
    held: dict[str, str] = {}  # gup name -> "pipe" | "ring" | "skipped"

    def mm(name: str) -> int:
        if name not in mm_ix:
            mm_ix[name] = len(script.mms)
            script.mms.append(name)
        return mm_ix[name]

    def named(table: dict[str, int], names: list[str], name: str) -> int:
        if name not in table:
            table[name] = len(names)
            names.append(name)
        return table[name]

    for step in scenario.steps:
        script.ops[step.index] = step.op
        line = _translate_step(step, mm, lambda n: named(pipe_ix, script.pipes, n),
                               lambda n: named(ring_ix, script.rings, n), held)
        if isinstance(line, tuple):
            script.skipped[step.index] = line[0]
            script.lines.append(f"S {step.index} skip # {line[0]}")
        else:
            script.lines.append(f"S {step.index} {line}")
    return script


def _translate_step(step: Step, m: Callable[[str], int], pipe: Callable[[str], int],
                    ring: Callable[[str], int], held: dict[str, str]) -> str | tuple[str]:
    """One script line (without the ``S <step>`` prefix), or ``(reason,)`` to skip."""
    a = step.args
    op = step.op
    if op in UNSUPPORTED:
        return (UNSUPPORTED[op],)
    if op == "mmap":
        if a["hugetlb"] == "1g":
            return ("1 GiB hugetlb pages need a reservation at boot on most machines; the "
                    "harness maps 2 MiB hugetlb pages only",)
        thp = a["thp"]
        order = -1 if thp == "none" else PMD_ORDER if thp == "pmd" else int(thp.split("-")[1])
        # the last field: log2 of the hugetlb page size (MAP_HUGE_2MB), 0 for none
        huge = HUGETLB_2M_SHIFT if a["hugetlb"] == "2m" else 0
        return (f"mmap {m(a['mm'])} {a['page']} {a['pages']} {PROT_CODES[a['prot']]} {order} "
                f"{int(a['populate'])} {a['cpu']} {huge}")
    if op == "munmap":
        return f"munmap {m(a['mm'])} {a['page']} {a['pages']}"
    if op == "mremap":
        return f"mremap {m(a['mm'])} {a['page']} {a['pages']} {a['new_page']}"
    if op == "mprotect":
        return f"mprotect {m(a['mm'])} {a['page']} {a['pages']} {PROT_CODES[a['prot']]}"
    if op == "read":
        return f"read {m(a['mm'])} {a['page']} {a['pages']} {a['cpu']}"
    if op == "write":
        has = a["data"] is not None
        word = data_word(a["data"]) if has else 0
        return f"write {m(a['mm'])} {a['page']} {a['pages']} {a['cpu']} {int(has)} {word}"
    if op == "fork":
        return f"fork {m(a['mm'])} {m(a['child'])} {a['cpu']}"
    if op == "exit":
        return f"exit {m(a['mm'])}"
    if op == "madvise":
        return (f"madvise {m(a['mm'])} {a['page']} {a['pages']} {ADVICE_CODES[a['advice']]} "
                f"{a['cpu']}")
    if op == "mlock":
        return f"mlock {m(a['mm'])} {a['page']} {a['pages']} {a['cpu']}"
    if op == "munlock":
        return f"munlock {m(a['mm'])} {a['page']} {a['pages']}"
    if op == "uffd_wp":
        return f"uffdwp {m(a['mm'])} {a['page']} {a['pages']} {int(a['enable'])}"
    if op == "clear_softdirty":
        return f"softdirty {m(a['mm'])}"
    if op == "gup":
        if a["kind"] == "get":
            if a["write"]:
                held[a["name"]] = "skipped"
                return ("vmsplice takes a read-only reference; the harness has no trigger for a "
                        "writable FOLL_GET",)
            held[a["name"]] = "pipe"
            return f"gupget {m(a['mm'])} {a['page']} {a['pages']} {pipe(a['name'])} {a['cpu']}"
        if not a["write"]:
            held[a["name"]] = "skipped"
            return ("io_uring fixed buffers pin with FOLL_WRITE; the harness has no read-only "
                    "long-term FOLL_PIN",)
        held[a["name"]] = "ring"
        return f"gupring {m(a['mm'])} {a['page']} {a['pages']} {ring(a['name'])} {a['cpu']}"
    if op == "put":
        kind = held.pop(a["name"], "skipped")
        if kind == "skipped":
            return ("the references were not taken (their gup step was skipped)",)
        if kind == "pipe":
            return f"put 0 {pipe(a['name'])}"
        return f"put 1 {ring(a['name'])}"
    if op == "ksm_merge":
        pairs = " ".join(f"{m(item['mm'])} {item['page']}" for item in a["pages"])
        return f"ksm {len(a['pages'])} {pairs}"
    if op == "lru_drain":
        return f"drain {-1 if a['cpu'] == 'all' else a['cpu']}"
    if op == "io_complete":
        return f"sleep {IO_COMPLETE_SLEEP_US}"
    if op == "advance":
        return f"sleep {round(a['us'])}"
    return (f"op {op!r} is not known to the harness",)  # pragma: no cover - OPS is covered
