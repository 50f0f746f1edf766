"""GUP: get_user_pages() (FOLL_GET) and pin_user_pages() (FOLL_PIN) on anonymous memory.

A :class:`GupHandle` is a live reference or pin that follows the *physical* page it
took: if the mapping is later replaced by a copy, the handle still sees the old page,
which is how a pin becomes incoherent. Pins count GUP_PIN_COUNTING_BIAS (1024) on a
small folio (fc1d8e7cca2d) and set the mm's has_pinned flag (008cfe4418b3, v5.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowlab.geometry import pte_dirty, pte_pfn
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.folio import ZERO_PFN
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
    included (c89357e27f20). GUP-fast
    bails out to the slow path in exactly those cases, so ``fast`` gives the same result.
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
                elif pin and not write and cfg.gup_unshare and must_unshare(k, pte):
                    rec = k.handle_fault(mm, vma, p, cpu, write=False, record=True, unshare=True)
                else:
                    break
                if rec is not None:
                    records.append(rec)
            pte = mm.pt[p]
            pfn = pte_pfn(pte)
            if pfn == ZERO_PFN:
                raise KernelError(
                    f"mm {mm.name}: GUP of page {p} found the shared zero page; "
                    "write the page first"
                )
            folio = k.frames[pfn]
            handle = GupHandle(k.next_gup_id, name, mm.id, p, pfn, pin, write, longterm, fast)
            k.next_gup_id += 1
            k.gups[handle.id] = handle
            ids.append(handle.id)
            if pin:
                folio.pin(handle.id)
                mm.has_pinned = True
                k.counters["nr_foll_pin_acquired"] += 1
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
    return not folio.pae[pfn - folio.pfn]


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
        folio = k.frames[handle.pfn]
        if handle.pin:
            folio.unpin(hid)
            k.counters["nr_foll_pin_released"] += 1
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
        folio.data[handle.pfn - folio.pfn] = ("dma", k.write_seq)


def _gup_ids(k: Kernel, name: str) -> list[int]:
    if name not in k.gup_names:
        raise KernelError(f"no GUP reference named {name!r} is held")
    return k.gup_names[name]


def _handle_data(k: Kernel, hid: int) -> object:
    handle = k.gups[hid]
    folio = k.frames[handle.pfn]
    return folio.data[handle.pfn - folio.pfn]
