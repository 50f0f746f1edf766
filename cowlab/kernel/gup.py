"""GUP: get_user_pages() (FOLL_GET) and pin_user_pages() (FOLL_PIN) on anonymous memory.

A :class:`GupHandle` is a live reference or pin that follows the *physical* page it
took: if the mapping is later replaced by a copy, the handle still sees the old page,
which is how a pin becomes incoherent. Pins count GUP_PIN_COUNTING_BIAS (1024) on a
small folio (fc1d8e7cca2d) and set the mm's has_pinned flag (008cfe4418b3, v5.9).

**The shared zero page.** A read GUP of untouched anonymous memory finds the zero page
(do_anonymous_page() mapped it on the read fault, follow_page_pte() returns it): GUP on it
is allowed and the handle sees zeroes. The zero page is never freed or reused, so its
references are not kept in any ledger. A later write by the process allocates a new page
(do_wp_page() -> wp_page_copy(), no reuse decision), after which the GUP holder no longer
sees what the process maps: a ``pin_incoherent`` violation when the writer itself holds
it. From v6.2 (84209e87c696 "mm/gup: reliable R/O long-term pinning in COW mappings")
gup_must_unshare() is true for a R/O FOLL_LONGTERM pin of a non-anonymous page in a COW
mapping, the zero page included: an unshare fault first replaces it by a new exclusive
page mapped read-only, and the pin lands there (facility
``gup_longterm_unshares_zero_page``).

**GUP-fast's speculative reference.** gup_fast_pte_range() takes its reference
(try_grab_folio()) *before* it rechecks that the PTE did not change, and drops it when
the recheck fails or the page needs the slow path; PFN walkers (compaction's
isolate_migratepages_block(), page_idle, /proc/kpageflags) take get_page_unless_zero()
references the same way. For that short window the folio's refcount is one higher: a
write fault on another CPU in that window sees it, and a refcount rule (v5.9's
09854ba94c6a and later, until PageAnonExclusive in v5.19) copies a page nobody else can
see. :func:`take_speculative` takes such references (holder kind ``speculative``, a
blocker in the ground truth, never an observer); :func:`drop_speculative` drops them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowlab.geometry import pte_dirty, pte_pfn
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.folio import SPECULATIVE, ZERO_PFN
from cowlab.kernel.mm import MM

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


@dataclass
class GupHandle:
    """A live GUP reference (FOLL_GET) or pin (FOLL_PIN) taken by ``mm`` on one page.

    The reference follows the *physical* page: if the mm's mapping is later
    replaced by a copy, the handle still points at the old page, which is how a
    pin becomes incoherent.
    """

    id: int
    name: str
    mm_id: int
    page: int  # virtual page number in mm
    pfn: int  # physical page the reference holds
    pin: bool
    write: bool
    longterm: bool
    fast: bool


def get_user_pages(
    k: Kernel,
    mm: MM,
    page: int,
    pages: int,
    *,
    pin: bool,
    write: bool,
    longterm: bool = False,
    fast: bool = False,
    name: str,
    cpu: int = 0,
) -> list[FaultRecord]:
    """get_user_pages() / pin_user_pages() (and the -fast variants) on anon memory.

    Faults in as needed: a write fault for a R/W request on a read-only PTE; in v5.8 a
    write fault for any request on a COW mapping, read-only private mappings included,
    after which FOLL_COW follows the dirty read-only copy (17839856fd58); in v5.19+ an
    unshare fault for a R/O pin on a page that is not PageAnonExclusive, KSM pages
    included (c89357e27f20); from v6.2 an unshare fault for a R/O longterm pin of the
    zero page (84209e87c696). GUP-fast bails out to the slow path in exactly those cases,
    so ``fast`` gives the same result; its transient reference is :func:`take_speculative`.
    """
    if name in k.gup_names:
        raise KernelError(f"a GUP reference named {name!r} is already held")
    k.check_cpu(cpu)
    k.charge(k.costs.syscall_ns)
    cfg = k.config
    records: list[FaultRecord] = []
    ids: list[int] = []
    # Registered at once so that an interrupted request (a fault that must sleep and be
    # retried, an error) can drop exactly the references it took so far.
    k.gup_names[name] = ids
    try:
        for p in range(page, page + pages):
            vma = k.vma_or_error(mm, p)
            if not vma.readable or (write and not vma.writable):
                raise KernelError(
                    f"mm {mm.name}: GUP of page {p}: mapping is PROT_{vma.prot.upper()} (EFAULT)"
                )
            # v5.8 (17839856fd58) should_force_cow_break(): any GUP on a COW mapping
            # (private and VM_MAYWRITE, so PROT_READ memory too) is done as a write.
            force_write = write or (cfg.gup_cow_break and vma.is_cow_mapping)
            # FOLL_COW: set by faultin_page() once a write fault in a VMA without VM_WRITE
            # broke COW; can_follow_write_pte() then accepts the dirty read-only PTE.
            foll_cow = False
            mm.cpus.add(cpu)
            for _attempt in range(4):
                pte = mm.pt.get(p, 0)
                if not pte & 1:
                    rec = k.handle_fault(mm, vma, p, cpu, write=force_write, record=force_write)
                    foll_cow = force_write and not vma.writable
                elif force_write and not pte & 2 and not (foll_cow and pte_dirty(pte)):
                    rec = k.handle_fault(mm, vma, p, cpu, write=True, record=True)
                    foll_cow = not vma.writable
                elif (
                    pin
                    and not write
                    and longterm
                    and cfg.gup_longterm_unshares_zero_page
                    and pte_pfn(pte) == ZERO_PFN
                ):
                    # v6.2+ (84209e87c696): a R/O longterm pin unshares the zero page.
                    rec = k.handle_fault(mm, vma, p, cpu, write=False, record=True, unshare=True)
                elif pin and not write and cfg.gup_unshare and must_unshare(k, pte):
                    rec = k.handle_fault(mm, vma, p, cpu, write=False, record=True, unshare=True)
                else:
                    break
                if rec is not None:
                    records.append(rec)
            pte = mm.pt[p]
            pfn = pte_pfn(pte)
            handle = GupHandle(k.next_gup_id, name, mm.id, p, pfn, pin, write, longterm, fast)
            k.next_gup_id += 1
            k.gups[handle.id] = handle
            ids.append(handle.id)
            if pfn == ZERO_PFN:
                # The shared zero page: allowed (a R/W request faulted it away above);
                # it is never freed, so its reference is not kept in a ledger.
                if pin:
                    mm.has_pinned = True
                    k.counters.nr_foll_pin_acquired += 1
                continue
            folio = k.frames[pfn]
            if pin:
                folio.pin(handle.id)
                mm.has_pinned = True
                k.counters.nr_foll_pin_acquired += 1
            else:
                folio.get("gup", handle.id)
    except BaseException:
        del k.gup_names[name]
        _drop_handles(k, ids)
        raise
    return records


def must_unshare(k: Kernel, pte: int) -> bool:
    """gup_must_unshare() (c89357e27f20, v5.19+): a R/O pin needs a PageAnonExclusive page.

    KSM pages count as anonymous and can never be exclusive, so a R/O pin on one always
    unshares first: do_wp_page() copies a KSM page, and the pin lands on the copy.
    """
    pfn = pte_pfn(pte)
    if pfn == ZERO_PFN:
        return False
    folio = k.frames[pfn]
    return not folio.pae_of(pfn - folio.pfn)


def put_user_pages(k: Kernel, name: str) -> None:
    """put_page() / unpin_user_page() of every page a named GUP request took."""
    ids = k.gup_names.pop(name, None)
    if ids is None:
        known = ", ".join(sorted(k.gup_names)) or "none"
        raise KernelError(f"no GUP reference named {name!r} is held (held: {known})")
    _drop_handles(k, ids)


def _drop_handles(k: Kernel, ids: list[int]) -> None:
    for hid in ids:
        handle = k.gups.pop(hid)
        if handle.pfn == ZERO_PFN:
            if handle.pin:
                k.counters.nr_foll_pin_released += 1
            continue
        folio = k.frames[handle.pfn]
        if handle.pin:
            folio.unpin(hid)
            k.counters.nr_foll_pin_released += 1
            if folio.refcount == 0:
                k.release_folio(folio)
        else:
            k.put_ref(folio, "gup", hid)


def gup_read(k: Kernel, name: str) -> list[object]:
    """What the holder of a GUP reference reads through it (the pinned pages)."""
    return [_handle_data(k, hid) for hid in _gup_ids(k, name)]


def gup_write(k: Kernel, name: str) -> None:
    """The device writes through a R/W pin (DMA): new data in the pinned pages."""
    for hid in _gup_ids(k, name):
        handle = k.gups[hid]
        if not handle.write:
            raise KernelError(f"GUP reference {name!r} is read-only")
        k.write_seq += 1
        folio = k.frames[handle.pfn]
        folio.set_data(handle.pfn - folio.pfn, ("dma", k.write_seq))


def _gup_ids(k: Kernel, name: str) -> list[int]:
    if name not in k.gup_names:
        raise KernelError(f"no GUP reference named {name!r} is held")
    return k.gup_names[name]


def zero_page_pinned_by(k: Kernel, mm: MM, page: int) -> bool:
    """Does ``mm`` hold a GUP reference or pin on the zero page at ``page``?"""
    return any(
        h.pfn == ZERO_PFN and h.mm_id == mm.id and h.page == page for h in k.gups.values()
    )


def take_speculative(k: Kernel, mm: MM, page: int, pages: int) -> int:
    """A transient GUP-fast / PFN-walker reference on each present page of the range
    (see the module docstring); returns how many were taken."""
    taken = 0
    for p in range(page, page + pages):
        k.vma_or_error(mm, p)
        pte = mm.pt.get(p, 0)
        if not pte & 1 or pte_pfn(pte) == ZERO_PFN:
            continue  # gup_fast_pte_range() bails out on a non-present PTE
        folio = k.frames[pte_pfn(pte)]
        k.next_gup_id += 1
        token = k.next_gup_id
        folio.get(SPECULATIVE, token)
        k.speculative.append((folio, token))
        taken += 1
    return taken


def drop_speculative(k: Kernel) -> None:
    """The speculative references go away (the recheck failed, or the walker is done)."""
    held, k.speculative = k.speculative, []
    for folio, token in held:
        k.put_ref(folio, SPECULATIVE, token)


def _handle_data(k: Kernel, hid: int) -> object:
    handle = k.gups[hid]
    if handle.pfn == ZERO_PFN:
        return 0
    folio = k.frames[handle.pfn]
    return folio.data_of(handle.pfn - folio.pfn)
