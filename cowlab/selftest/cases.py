"""The anonymous test cases of cow.c, as procedures on the simulated kernel.

Every procedure follows the order of events of its cow.c counterpart (who forks, who
backs the memory up, who pins, who unmaps, who writes, who compares) and judges the
case the way cow.c does: by what an observer reads. The observers are the child's or
the parent's own memory (:meth:`Kernel.read`), a pipe filled by vmsplice() and the
buffer behind a longterm pin (both :meth:`Kernel.gup_read`, which follows the physical
page the reference took). Writes store distinct tokens (``("parent", page)``), so a
changed value is always detected. The simulator's violation detector is *not*
consulted here; :mod:`cowlab.selftest.runner` compares the two afterwards.

Procedures (upstream: tools/testing/selftests/mm/cow.c, earlier selftests/vm/cow.c):

* ``do_test_cow_in_parent()`` with ``child_memcmp_fn`` or ``child_vmsplice_memcmp_fn``:
  the child backs the memory up (and vmsplice()s it into a pipe and unmaps it), the
  parent (optionally mprotect()s R/O and back) writes, the child compares.
* ``do_test_vmsplice_in_parent()``: the parent backs up and vmsplice()s (before or
  after fork()), unmaps; the child writes and exits; the parent reads the pipe.
* ``do_test_iouring()``: a R/W longterm pin (io_uring fixed buffer), then either
  mprotect(R), clear_refs soft-dirty, mprotect(RW), or fork() with the child kept alive;
  the parent writes; the pinned buffer must show the write.
* ``do_test_ro_pin()``: fork() (child kept alive, or exited) or the mprotect/soft-dirty
  dance, then a R/O longterm pin (gup_test PIN_LONGTERM_TEST_START, optionally
  GUP-fast); the parent writes; the pin must show the write.
* ``do_test_anon_thp_collapse()``: a PTE-mapped THP, MADV_COLLAPSE before or after
  fork() (fully, lower or upper half shared via MADV_DONTFORK); the child compares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from cowlab.selftest.variants import Area, fill, is_pmd_mapped_thp

#: A case reports failure because an observer saw a write it must not see ("leak"), or
#: because a pin does not see a write it must see ("pin").
KIND_LEAK = "leak"
KIND_PIN = "pin"

NO_LEAK_CHILD = "No leak from parent into child"
LEAK_CHILD = "Leak from parent into child"
NO_LEAK_PARENT = "No leak from child into parent"
LEAK_PARENT = "Leak from child into parent"
RW_PIN = "Longterm R/W pin is reliable"
RO_PIN = "Longterm R/O pin is reliable"


@dataclass(frozen=True)
class Outcome:
    """What an observer saw: ``ok`` False means the case failed (or ``skip`` is set)."""

    ok: bool
    message: str
    skip: str | None = None


Procedure = Callable[[Area], Outcome]


@dataclass(frozen=True)
class Case:
    """One cow.c test case: its description (the ``[RUN]`` line), what a failure means,
    whether cow.c flags a hugetlb failure as expected (XFAIL), and the procedure."""

    desc: str
    family: str
    kind: str
    run: Procedure
    xfail_hugetlb: bool = False
    #: One of cow.c's anon_thp_test_cases: runs once, on a PMD-sized THP.
    thp_only: bool = False


def _mprotect_dance(a: Area) -> None:
    """mprotect(PROT_READ) + mprotect(PROT_READ|PROT_WRITE) of the whole area."""
    a.k.mprotect(a.mm, a.start, a.pages, "r")
    a.k.mprotect(a.mm, a.start, a.pages, "rw")


def _softdirty_dance(a: Area) -> None:
    """mprotect(PROT_READ), clear_refs soft-dirty, mprotect(PROT_READ|PROT_WRITE): the
    pages stay R/O in the page table so the next write faults."""
    a.k.mprotect(a.mm, a.start, a.pages, "r")
    a.k.clear_softdirty(a.mm)
    a.k.mprotect(a.mm, a.start, a.pages, "rw")


# ------------------------------------------------------------------ do_test_cow_in_parent
def cow_in_parent(a: Area, *, mprotect: bool, vmsplice: bool) -> Outcome:
    """Child backs up (vmsplice()s, unmaps); parent writes; child compares."""
    k, parent = a.k, a.mm
    pages = a.touched
    child = k.fork(parent, "child")
    old = [k.read(child, p) for p in pages]  # memcpy(old, mem, size)
    if vmsplice:
        old = [k.read(child, p) for p in a.pipe]  # the part the pipe will hold
        k.gup(child, a.start, a.pipe_pages, pin=False, write=False, name="pipe")
        k.munmap(child, a.start, a.pages)
    if mprotect:
        _mprotect_dance(a)
    fill(k, parent, pages, "parent")
    if vmsplice:
        new = k.gup_read("pipe")
        k.put("pipe")
    else:
        new = [k.read(child, p) for p in pages]
    k.exit_mm(child)
    if new == old:
        return Outcome(True, NO_LEAK_CHILD)
    return Outcome(False, LEAK_CHILD)


# ------------------------------------------------------------- do_test_vmsplice_in_parent
def vmsplice_in_parent(a: Area, *, before_fork: bool) -> Outcome:
    """Parent backs up and vmsplice()s, unmaps; child writes and exits; parent reads."""
    k, parent = a.k, a.mm
    for p in a.touched:  # memcpy(old, mem, size)
        k.read(parent, p)
    old = [k.read(parent, p) for p in a.pipe]  # the part the pipe will hold
    if before_fork:
        k.gup(parent, a.start, a.pipe_pages, pin=False, write=False, name="pipe")
    child = k.fork(parent, "child")
    if not before_fork:
        k.gup(parent, a.start, a.pipe_pages, pin=False, write=False, name="pipe")
    k.munmap(parent, a.start, a.pages)
    fill(k, child, a.touched, "child")
    k.exit_mm(child)
    new = k.gup_read("pipe")
    k.put("pipe")
    if new == old:
        return Outcome(True, NO_LEAK_PARENT)
    return Outcome(False, LEAK_PARENT)


# ------------------------------------------------------------------------ do_test_iouring
def iouring(a: Area, *, use_fork: bool) -> Outcome:
    """A R/W longterm pin (io_uring_register_buffers()); the parent writes; the buffer
    as the pin sees it (io_uring write_fixed to a file, read back) must match."""
    k, parent = a.k, a.mm
    _pin(a, "fixed-buffer", write=True)
    child = None
    if use_fork:
        child = k.fork(parent, "child")
    else:
        _softdirty_dance(a)
    fill(k, parent, a.touched, "parent")
    pinned = _pinned(a, "fixed-buffer")
    mem = [k.read(parent, p) for p in a.touched]
    if child is not None:
        k.exit_mm(child)
    _unpin(a, "fixed-buffer")
    return Outcome(pinned == mem, RW_PIN)


def _pin(a: Area, name: str, *, write: bool, fast: bool = False) -> None:
    """A longterm FOLL_PIN of the whole area (R/W: io_uring_register_buffers(); R/O:
    gup_test's PIN_LONGTERM_TEST_START). Of a sampled area (a 1 GiB hugetlb page, see
    :func:`~cowlab.selftest.variants.touched_pages`) only the touched pages are pinned:
    hugetlb pins, unshares and copies the huge page as a whole."""
    if not a.sampled:
        a.k.gup(a.mm, a.start, a.pages, pin=True, write=write, longterm=True, fast=fast,
                name=name)
        return
    for p in a.touched:
        a.k.gup(a.mm, p, 1, pin=True, write=write, longterm=True, fast=fast, name=f"{name}@{p}")


def _pinned(a: Area, name: str) -> list[object]:
    """What the pin shows at the touched pages (PIN_LONGTERM_TEST_READ, or the io_uring
    write_fixed of the buffer to a file read back)."""
    if not a.sampled:
        seen = dict(zip(range(a.start, a.start + a.pages), a.k.gup_read(name), strict=True))
        return [seen[p] for p in a.touched]
    return [a.k.gup_read(f"{name}@{p}")[0] for p in a.touched]


def _unpin(a: Area, name: str) -> None:
    if not a.sampled:
        a.k.put(name)
        return
    for p in a.touched:
        a.k.put(f"{name}@{p}")


# ------------------------------------------------------------------------- do_test_ro_pin
RO_PIN_SHARED = "shared"
RO_PIN_PREVIOUSLY_SHARED = "previously-shared"
RO_PIN_RO_EXCLUSIVE = "ro-exclusive"


def ro_pin(a: Area, *, test: str, fast: bool) -> Outcome:
    """Share (and maybe unshare by the child's exit) or write-protect the pages, take a
    R/O longterm pin (PIN_LONGTERM_TEST_START), write, read back through the pin."""
    k, parent = a.k, a.mm
    child = None
    if test in (RO_PIN_SHARED, RO_PIN_PREVIOUSLY_SHARED):
        child = k.fork(parent, "child")
        if test == RO_PIN_PREVIOUSLY_SHARED:
            k.exit_mm(child)
            child = None
    else:
        _softdirty_dance(a)
    _pin(a, "gup_test", write=False, fast=fast)
    fill(k, parent, a.touched, "parent")
    pinned = _pinned(a, "gup_test")
    mem = [k.read(parent, p) for p in a.touched]
    _unpin(a, "gup_test")
    if child is not None:
        k.exit_mm(child)
    return Outcome(pinned == mem, RO_PIN)


# -------------------------------------------------------------- do_test_anon_thp_collapse
COLLAPSE_UNSHARED = "unshared"
COLLAPSE_FULLY_SHARED = "fully-shared"
COLLAPSE_LOWER_SHARED = "lower-shared"
COLLAPSE_UPPER_SHARED = "upper-shared"


def thp_collapse(a: Area, *, test: str) -> Outcome:
    """PTE-map the THP, MADV_COLLAPSE before fork() or after COW-sharing all of it or one
    half, then the parent writes and the child compares what it shares."""
    k, parent = a.k, a.mm
    start, size = a.start, a.pages
    half = size // 2
    k.mprotect(parent, start + 1, 1, "r")
    k.mprotect(parent, start + 1, 1, "rw")
    if test == COLLAPSE_UNSHARED:
        skip = _collapse(a)
        if skip is not None:
            return skip
    elif test == COLLAPSE_LOWER_SHARED:
        k.madvise(parent, start + half, half, "dontfork")
    elif test == COLLAPSE_UPPER_SHARED:
        k.madvise(parent, start, half, "dontfork")
    child = k.fork(parent, "child")
    if test == COLLAPSE_LOWER_SHARED:
        shared = list(range(start, start + half))
    elif test == COLLAPSE_UPPER_SHARED:
        shared = list(range(start + half, start + size))
    else:
        shared = list(range(start, start + size))
    old = [k.read(child, p) for p in shared]
    if test in (COLLAPSE_LOWER_SHARED, COLLAPSE_UPPER_SHARED):
        k.madvise(parent, start, size, "dofork")
    if test != COLLAPSE_UNSHARED:
        skip = _collapse(a)
        if skip is not None:
            k.exit_mm(child)
            return skip
    fill(k, parent, a.touched, "parent")
    new = [k.read(child, p) for p in shared]
    k.exit_mm(child)
    # cow.c reports this case with ksft_test_result(): the same text passes or fails.
    return Outcome(new == old, NO_LEAK_CHILD)


def _collapse(a: Area) -> Outcome | None:
    a.k.madvise(a.mm, a.start, a.pages, "collapse")
    if is_pmd_mapped_thp(a.k, a.mm, a.start):
        return None
    return Outcome(False, "", skip="MADV_COLLAPSE failed: the range is not PMD-mapped afterwards")


def _bind(fn: Callable[..., Outcome], **kwargs: object) -> Procedure:
    """The procedure with its options bound (a partial, so cases pickle for workers)."""
    return functools.partial(fn, **kwargs)


#: cow.c's anon_test_cases, in order (with LOCAL_CONFIG_HAVE_LIBURING).
ANON_CASES: tuple[Case, ...] = (
    Case("Basic COW after fork()", "cow", KIND_LEAK,
         _bind(cow_in_parent, mprotect=False, vmsplice=False)),
    Case("Basic COW after fork() with mprotect() optimization", "cow-mprotect", KIND_LEAK,
         _bind(cow_in_parent, mprotect=True, vmsplice=False)),
    Case("vmsplice() + unmap in child", "vmsplice-child", KIND_LEAK,
         _bind(cow_in_parent, mprotect=False, vmsplice=True), xfail_hugetlb=True),
    Case("vmsplice() + unmap in child with mprotect() optimization", "vmsplice-child-mprotect",
         KIND_LEAK, _bind(cow_in_parent, mprotect=True, vmsplice=True), xfail_hugetlb=True),
    Case("vmsplice() before fork(), unmap in parent after fork()", "vmsplice-before-fork",
         KIND_LEAK, _bind(vmsplice_in_parent, before_fork=True), xfail_hugetlb=True),
    Case("vmsplice() + unmap in parent after fork()", "vmsplice-after-fork", KIND_LEAK,
         _bind(vmsplice_in_parent, before_fork=False), xfail_hugetlb=True),
    Case("R/O-mapping a page registered as iouring fixed buffer", "iouring-ro", KIND_PIN,
         _bind(iouring, use_fork=False)),
    Case("fork() with an iouring fixed buffer", "iouring-fork", KIND_PIN,
         _bind(iouring, use_fork=True)),
    Case("R/O GUP pin on R/O-mapped shared page", "ro-pin-shared", KIND_PIN,
         _bind(ro_pin, test=RO_PIN_SHARED, fast=False)),
    Case("R/O GUP-fast pin on R/O-mapped shared page", "ro-fast-pin-shared", KIND_PIN,
         _bind(ro_pin, test=RO_PIN_SHARED, fast=True)),
    Case("R/O GUP pin on R/O-mapped previously-shared page", "ro-pin-previously-shared",
         KIND_PIN, _bind(ro_pin, test=RO_PIN_PREVIOUSLY_SHARED, fast=False)),
    Case("R/O GUP-fast pin on R/O-mapped previously-shared page",
         "ro-fast-pin-previously-shared", KIND_PIN,
         _bind(ro_pin, test=RO_PIN_PREVIOUSLY_SHARED, fast=True)),
    Case("R/O GUP pin on R/O-mapped exclusive page", "ro-pin-exclusive", KIND_PIN,
         _bind(ro_pin, test=RO_PIN_RO_EXCLUSIVE, fast=False)),
    Case("R/O GUP-fast pin on R/O-mapped exclusive page", "ro-fast-pin-exclusive", KIND_PIN,
         _bind(ro_pin, test=RO_PIN_RO_EXCLUSIVE, fast=True)),
)

#: cow.c's anon_thp_test_cases: each runs once on a PMD-sized THP.
THP_CASES: tuple[Case, ...] = (
    Case("Basic COW after fork() when collapsing before fork()", "collapse-unshared",
         KIND_LEAK, _bind(thp_collapse, test=COLLAPSE_UNSHARED), thp_only=True),
    Case("Basic COW after fork() when collapsing after fork() (fully shared)",
         "collapse-fully-shared", KIND_LEAK, _bind(thp_collapse, test=COLLAPSE_FULLY_SHARED),
         thp_only=True),
    Case("Basic COW after fork() when collapsing after fork() (lower shared)",
         "collapse-lower-shared", KIND_LEAK, _bind(thp_collapse, test=COLLAPSE_LOWER_SHARED),
         thp_only=True),
    Case("Basic COW after fork() when collapsing after fork() (upper shared)",
         "collapse-upper-shared", KIND_LEAK, _bind(thp_collapse, test=COLLAPSE_UPPER_SHARED),
         thp_only=True),
)

ALL_CASES: tuple[Case, ...] = ANON_CASES + THP_CASES
