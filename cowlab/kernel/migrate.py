"""Page migration (compaction, NUMA balancing): migration entries and the page lock held
across the copy (mm/migrate.c migrate_pages(), mm/rmap.c try_to_migrate()).

Migration happens in two steps so that it takes simulated time:

1. :func:`start_migration` isolates the folio from the LRU (a reference, PG_lru clear),
   locks it, and replaces every PTE mapping it by a *migration entry* (a non-present PTE
   holding the PFN). From v5.19 the entry records whether the page was exclusive
   (SWP_MIGRATION_READ_EXCLUSIVE, 6c287605fd56's series), and the page loses
   PageAnonExclusive meanwhile. A fault on a migration entry waits for the migration to
   finish (migration_entry_wait()); a trylock on the folio fails.
2. :func:`finish_migration` checks that nobody else holds a reference
   (folio_migrate_mapping(): the refcount must be exactly the isolation's, plus the
   swapcache's), copies the data into a new folio, hands it the old one's swapcache
   slots if it had any, and maps it where the entries were,
   restoring PageAnonExclusive from the entry; otherwise it puts the old folio back.
   Either way the lock is released.

The encoding follows the kernel's: migration entries are swap entries whose type is one
of the highest swap types, with the PFN as the offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from cowlab.geometry import (
    make_pte,
    make_swap_pte,
    pte_dirty,
    pte_soft_dirty,
    pte_uffd_wp,
    pte_write,
    swp_offset,
    swp_type,
)
from cowlab.kernel.folio import ISOLATED, Folio

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel

#: Swap types reserved for migration entries (above every real swap file).
SWP_MIGRATION_READ: Final = 29
SWP_MIGRATION_READ_EXCLUSIVE: Final = 30
SWP_MIGRATION_WRITE: Final = 31
MIGRATION_TYPES = (SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE)


def is_migration_entry(pte: int) -> bool:
    """A non-present PTE that is a migration entry (not a swap entry)."""
    return pte != 0 and not pte & 1 and swp_type(pte) in MIGRATION_TYPES


def migration_pfn(pte: int) -> int:
    """The PFN a migration entry refers to."""
    return swp_offset(pte)


def start_migration(k: Kernel, folio: Folio, release_at: int) -> bool:
    """Isolate, lock and unmap ``folio`` to migration entries; False if it cannot be
    migrated now (not on the LRU, locked, under writeback, KSM, or large). A swapcache
    folio is migrated like any other (migrate_folio() moves its swapcache slots)."""
    if (
        not folio.lru
        or folio.lock is not None
        or folio.writeback
        or folio.ksm
        or folio.order
    ):
        return False
    if k.config.anon_exclusive and folio.maybe_dma_pinned() and folio.any_pae():
        # try_to_migrate_one(): page_try_share_anon_rmap() refuses to unmap a possibly
        # pinned exclusive page, so the migration fails before it starts.
        k.counters.pgmigrate_fail += 1
        return False
    k.lru.del_from_list(folio)
    folio.get(ISOLATED, "migration")
    k.lock_folio(folio, "migration", release_at)
    cfg = k.config
    entries = k.migration_entries.setdefault(folio.pfn, [])
    for mm_id, page, sub in folio.pte_mappings():
        mm = k.mms[mm_id]
        pte = mm.pt[page]
        if pte_write(pte):
            typ = SWP_MIGRATION_WRITE
        elif cfg.anon_exclusive and folio.pae_of(sub):
            typ = SWP_MIGRATION_READ_EXCLUSIVE
        else:
            typ = SWP_MIGRATION_READ
        if cfg.anon_exclusive:
            folio.set_pae(sub, False)
        if pte_dirty(pte):
            folio.dirty = True
        mm.pt[page] = make_swap_pte(
            typ, folio.pfn + sub, soft_dirty=pte_soft_dirty(pte), uffd_wp=pte_uffd_wp(pte)
        )
        folio.unmap_pte(mm_id, page, sub)
        entries.append((mm, page))
        k.flush_tlb(mm, None)
    k.counters.pgmigrate_started += 1
    return True


def finish_migration(k: Kernel, folio: Folio, cpu: int) -> bool:
    """Complete a migration begun by :func:`start_migration`; True if the page moved."""
    entries = [(mm, page, mm.pt[page]) for mm, page in k.migration_entries.pop(folio.pfn, [])]
    # folio_migrate_mapping(): only our isolation reference and the swapcache's may remain
    # (folio_expected_refs()); the new folio then takes over the swapcache slots.
    in_swapcache = folio.swap_entry is not None
    moved = folio.refcount == 1 + (folio.nr_pages if in_swapcache else 0)
    target = folio
    if moved:
        target = k.alloc_folio(folio.order)
        target.set_data_list(folio.data_list())
        target.dirty = folio.dirty
        target.readahead = folio.readahead
        if in_swapcache:
            k.swap.migrate_cache(folio, target)
        k.charge(k.costs.alloc_ns + k.costs.copy_ns(folio.nr_pages))
        k.counters.pgmigrate_success += 1
    else:
        k.counters.pgmigrate_fail += 1
    cfg = k.config
    for mm, page, pte in entries:
        # A process that exited or unmapped meanwhile took its entry with it.
        sub = swp_offset(pte) - folio.pfn
        typ = swp_type(pte)
        writable = typ == SWP_MIGRATION_WRITE
        if cfg.anon_exclusive and typ in (SWP_MIGRATION_WRITE, SWP_MIGRATION_READ_EXCLUSIVE):
            target.set_pae(sub, True)
        mm.pt[page] = make_pte(
            target.pfn + sub,
            write=writable,
            dirty=writable,
            soft_dirty=bool(pte & 2),
            uffd_wp=bool(pte & 4),
        )
        target.map_pte(mm.id, page, sub)
    k.unlock_folio(folio)
    if moved:
        k.lru.add(target, cpu)
    else:
        k.lru.add(folio, cpu)
    k.put_ref(folio, ISOLATED, "migration")
    return moved
