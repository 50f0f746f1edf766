"""x86-64 page geometry, user address validation and PTE / swap-PTE encoding.

Everything here mirrors the x86-64 kernel headers closely enough that a
simulated page table holds the same bit patterns a real one would:

* present-PTE bits and ``PTE_PFN_MASK`` follow
  ``arch/x86/include/asm/pgtable_types.h`` (``_PAGE_BIT_*``);
* the swap-entry layout follows ``arch/x86/include/asm/pgtable_64.h``
  (``SWP_TYPE_BITS``, ``SWP_OFFSET_FIRST_BIT``, ``SWP_OFFSET_SHIFT``,
  ``__swp_entry`` / ``__swp_type`` / ``__swp_offset``) together with the swap
  flag aliases ``_PAGE_SWP_SOFT_DIRTY`` / ``_PAGE_SWP_UFFD_WP`` /
  ``_PAGE_SWP_EXCLUSIVE`` from ``arch/x86/include/asm/pgtable.h`` and
  ``pgtable_64_types.h``;
* the user address-space limits follow
  ``Documentation/arch/x86/x86_64/mm.rst`` (128 TiB below 2^47 with 4-level
  paging, 64 PiB below 2^56 with 5-level paging).

PTEs are plain Python ints holding 64-bit values and every PTE helper is a
module-level function on ints: they run on every simulated fault, so no object
is created per PTE and the hot helpers do not re-validate their input. One bit is
left out of a stored present PTE: NX (bit 63), which every user page here carries
(nothing is mapped executable). Kept, it would make every present PTE an integer
above 2^62, which the compiled build cannot hold unboxed, and every PTE operation a
big-integer operation; :func:`pte_hw` gives the value with NX, as the hardware page
table holds it.

    >>> pte = make_pte(0x1A3, write=True, dirty=True, soft_dirty=True)
    >>> describe_pte(pte)
    'present pfn=0x1a3 RW dirty accessed soft-dirty'
    >>> describe_pte(pte_wrprotect(pte))
    'present pfn=0x1a3 RO dirty accessed soft-dirty'
    >>> swp = make_swap_pte(0, 17, exclusive=True)
    >>> (swp_type(swp), swp_offset(swp), describe_pte(swp))
    (0, 17, 'swap type=0 offset=17 exclusive')
    >>> DEFAULT_GEOMETRY.description
    '4-level paging, 48-bit VA, user space below 2^47'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from mypy_extensions import mypyc_attr

# --------------------------------------------------------------------------
# Page geometry
# --------------------------------------------------------------------------

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
#: Entries per page-table page at every level (PTRS_PER_PTE / PMD / PUD).
PTRS_PER_TABLE: Final = 512
PMD_SHIFT: Final = 21
PMD_SIZE: Final = 1 << PMD_SHIFT
PUD_SHIFT: Final = 30
PUD_SIZE: Final = 1 << PUD_SHIFT
#: Order of a PMD-mapped THP (2 MiB = 512 base pages).
HPAGE_PMD_ORDER: Final = PMD_SHIFT - PAGE_SHIFT
HPAGE_PMD_NR: Final = 1 << HPAGE_PMD_ORDER
#: Anonymous mTHP orders the kernel supports: order 1 is excluded for anon
#: folios (THP_ORDERS_ALL_ANON), order 9 is the PMD order.
MTHP_ORDERS: tuple[int, ...] = tuple(range(2, HPAGE_PMD_ORDER + 1))
#: ``tlb_single_page_flush_ceiling``: a flush of up to this many pages
#: invalidates page by page, a larger one flushes the whole TLB.
TLB_SINGLE_PAGE_FLUSH_CEILING: Final = 33

_MASK64: Final = (1 << 64) - 1

# --------------------------------------------------------------------------
# Present-PTE bits (pgtable_types.h)
# --------------------------------------------------------------------------

_PAGE_PRESENT: Final = 1 << 0
_PAGE_RW: Final = 1 << 1
_PAGE_USER: Final = 1 << 2
_PAGE_ACCESSED: Final = 1 << 5
_PAGE_DIRTY: Final = 1 << 6
#: Bit 7 is PAT in a 4 KiB PTE; as in the kernel it means "huge" at PMD level.
_PAGE_PSE: Final = 1 << 7
_PAGE_GLOBAL: Final = 1 << 8
_PAGE_UFFD_WP: Final = 1 << 10
_PAGE_SOFT_DIRTY: Final = 1 << 11
_PAGE_NX: Final = 1 << 63

#: Physical frame numbers are 40 bits wide (52-bit physical addresses).
PFN_BITS: Final = 40
PFN_LIMIT: Final = 1 << PFN_BITS
#: Bits 12..51 of a present PTE hold the PFN.
PTE_PFN_MASK: Final = (PFN_LIMIT - 1) << PAGE_SHIFT

# Flags every PTE made by make_pte carries. User data pages are never executable here:
# NX is implied, not stored (see the module docstring and pte_hw()).
_PTE_BASE: Final = _PAGE_PRESENT | _PAGE_USER

# --------------------------------------------------------------------------
# Swap-PTE layout (pgtable_64.h)
# --------------------------------------------------------------------------

#: Swap-PTE flags reuse low bits that are meaningless once bit 0 is clear.
_PAGE_SWP_SOFT_DIRTY: Final = 1 << 1
_PAGE_SWP_UFFD_WP: Final = 1 << 2
_PAGE_SWP_EXCLUSIVE: Final = 1 << 3

SWP_TYPE_BITS: Final = 5
#: 2^SWP_TYPE_BITS swap types.  (The kernel reserves the top few for
#: migration, hwpoison, device-private and marker entries.)
MAX_SWAPFILES: Final = 1 << SWP_TYPE_BITS
#: The offset starts just above _PAGE_BIT_PROTNONE (bit 8).
SWP_OFFSET_FIRST_BIT: Final = 9
SWP_OFFSET_SHIFT: Final = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS
SWP_OFFSET_BITS: Final = 64 - SWP_OFFSET_SHIFT
_SWP_OFFSET_MASK: Final = (1 << SWP_OFFSET_BITS) - 1
_SWP_TYPE_SHIFT: Final = 64 - SWP_TYPE_BITS
#: Exclusive upper bound for offsets accepted by make_swap_pte.  The all-ones
#: 50-bit offset inverts to zero offset bits, which with type 0 and no flags
#: is the all-zero pte_none value, so it is refused.  (A real swap header's
#: ``last_page`` is 32 bits wide, so the kernel never gets near it.)
SWP_OFFSET_LIMIT: Final = _SWP_OFFSET_MASK


# Interpreted even in the compiled build (setup.py): pickles and introspects like any
# Python exception.
@mypyc_attr(native_class=False)
class GeometryError(ValueError):
    """An address, page range, PFN, swap entry or geometry setting is out of bounds."""


# --------------------------------------------------------------------------
# Present PTEs
# --------------------------------------------------------------------------


def _check_pfn(pfn: int) -> None:
    if not 0 <= pfn < PFN_LIMIT:
        raise GeometryError(
            f"pfn {pfn:#x} is outside 0..{PFN_LIMIT - 1:#x} ({PFN_BITS}-bit PFN, bits 12..51)"
        )


def make_pte(
    pfn: int,
    *,
    write: bool = False,
    dirty: bool = False,
    accessed: bool = True,
    soft_dirty: bool = False,
    uffd_wp: bool = False,
    huge: bool = False,
) -> int:
    """Build a present user PTE mapping ``pfn``.

    Present and user are always set; NX is implied (:func:`pte_hw` adds it).

    Args:
        pfn: Page frame number, 0 <= pfn < 2^40.
        write: Set ``_PAGE_RW``.
        dirty: Set ``_PAGE_DIRTY``.
        accessed: Set ``_PAGE_ACCESSED`` (the young bit).
        soft_dirty: Set ``_PAGE_SOFT_DIRTY``.
        uffd_wp: Set ``_PAGE_UFFD_WP``.
        huge: Set ``_PAGE_PSE`` (a PMD-level mapping).

    Returns:
        The 64-bit PTE value.

    Raises:
        GeometryError: If ``pfn`` does not fit in 40 bits.
    """
    _check_pfn(pfn)
    pte = _PTE_BASE | (pfn << PAGE_SHIFT)
    if write:
        pte |= _PAGE_RW
    if dirty:
        pte |= _PAGE_DIRTY
    if accessed:
        pte |= _PAGE_ACCESSED
    if soft_dirty:
        pte |= _PAGE_SOFT_DIRTY
    if uffd_wp:
        pte |= _PAGE_UFFD_WP
    if huge:
        pte |= _PAGE_PSE
    return pte


def pte_none(pte: int) -> bool:
    """True for the empty (all-zero) PTE."""
    return pte == 0


def pte_present(pte: int) -> bool:
    """True if the present bit (bit 0) is set."""
    return (pte & _PAGE_PRESENT) != 0


def pte_pfn(pte: int) -> int:
    """The PFN held in bits 12..51."""
    return (pte & PTE_PFN_MASK) >> PAGE_SHIFT


def pte_write(pte: int) -> bool:
    """True if the PTE is writable (``_PAGE_RW``)."""
    return (pte & _PAGE_RW) != 0


def pte_dirty(pte: int) -> bool:
    """True if the hardware dirty bit is set."""
    return (pte & _PAGE_DIRTY) != 0


def pte_young(pte: int) -> bool:
    """True if the accessed bit is set."""
    return (pte & _PAGE_ACCESSED) != 0


def pte_soft_dirty(pte: int) -> bool:
    """True if the soft-dirty bit is set."""
    return (pte & _PAGE_SOFT_DIRTY) != 0


def pte_uffd_wp(pte: int) -> bool:
    """True if the userfaultfd write-protect bit is set."""
    return (pte & _PAGE_UFFD_WP) != 0


def pte_huge(pte: int) -> bool:
    """True if ``_PAGE_PSE`` is set (a PMD-level huge mapping)."""
    return (pte & _PAGE_PSE) != 0


def pte_wrprotect(pte: int) -> int:
    """Clear ``_PAGE_RW``."""
    return pte & ~_PAGE_RW


def pte_mkwrite(pte: int) -> int:
    """Set ``_PAGE_RW``."""
    return pte | _PAGE_RW


def pte_mkdirty(pte: int) -> int:
    """Set the dirty bit and, as x86's ``pte_mkdirty`` does, the soft-dirty bit.

    Soft-dirty tracking relies on this: a write fault that dirties the PTE
    also marks it soft-dirty again after ``clear_refs``.
    """
    return pte | (_PAGE_DIRTY | _PAGE_SOFT_DIRTY)  # one operation on the PTE


def pte_mkclean(pte: int) -> int:
    """Clear the dirty bit (soft-dirty is left alone, as in the kernel)."""
    return pte & ~_PAGE_DIRTY


def pte_mkyoung(pte: int) -> int:
    """Set the accessed bit."""
    return pte | _PAGE_ACCESSED


def pte_mkold(pte: int) -> int:
    """Clear the accessed bit."""
    return pte & ~_PAGE_ACCESSED


def pte_mksoft_dirty(pte: int) -> int:
    """Set the soft-dirty bit."""
    return pte | _PAGE_SOFT_DIRTY


def pte_clear_soft_dirty(pte: int) -> int:
    """Clear the soft-dirty bit."""
    return pte & ~_PAGE_SOFT_DIRTY


def pte_mkuffd_wp(pte: int) -> int:
    """Set the uffd-wp bit and write-protect, as x86's ``pte_mkuffd_wp`` does."""
    return (pte | _PAGE_UFFD_WP) & ~_PAGE_RW


def pte_clear_uffd_wp(pte: int) -> int:
    """Clear the uffd-wp bit (the RW bit is not restored)."""
    return pte & ~_PAGE_UFFD_WP


def pte_modify_pfn(pte: int, pfn: int) -> int:
    """Return ``pte`` pointing at ``pfn`` with every flag bit kept.

    Raises:
        GeometryError: If ``pfn`` does not fit in 40 bits.
    """
    _check_pfn(pfn)
    return (pte & ~PTE_PFN_MASK) | (pfn << PAGE_SHIFT)


# --------------------------------------------------------------------------
# Swap PTEs
# --------------------------------------------------------------------------


def make_swap_pte(
    type_: int,
    offset: int,
    *,
    exclusive: bool = False,
    soft_dirty: bool = False,
    uffd_wp: bool = False,
) -> int:
    """Build a swap PTE the way x86-64's ``__swp_entry`` lays it out.

    The type goes in bits 59..63 and the bit-inverted offset in bits 9..58;
    bit 0 (present) stays clear.  The result equals
    ``((~offset << 14) & mask64) >> 5 | (type << 59)`` plus the flag bits.

    Args:
        type_: Swap type (swap file index), 0 <= type_ < 32.
        offset: Slot within the swap file, 0 <= offset < ``SWP_OFFSET_LIMIT``
            (2^50 - 1; see that constant for why the all-ones offset is refused).
        exclusive: Set ``_PAGE_SWP_EXCLUSIVE`` (PG_anon_exclusive was set).
        soft_dirty: Set ``_PAGE_SWP_SOFT_DIRTY``.
        uffd_wp: Set ``_PAGE_SWP_UFFD_WP``.

    Returns:
        The 64-bit swap PTE value, never 0.

    Raises:
        GeometryError: If the type or offset is out of range.
    """
    if not 0 <= type_ < MAX_SWAPFILES:
        raise GeometryError(
            f"swap type {type_} is outside 0..{MAX_SWAPFILES - 1} "
            f"({SWP_TYPE_BITS} type bits, MAX_SWAPFILES={MAX_SWAPFILES})"
        )
    if not 0 <= offset < SWP_OFFSET_LIMIT:
        raise GeometryError(
            f"swap offset {offset:#x} is outside 0..{SWP_OFFSET_LIMIT - 1:#x} "
            f"({SWP_OFFSET_BITS}-bit offset; the all-ones offset would encode as pte_none)"
        )
    # Same bits as the kernel's shift-up-then-down, without the 64-bit masking step.
    pte = ((~offset & _SWP_OFFSET_MASK) << SWP_OFFSET_FIRST_BIT) | (type_ << _SWP_TYPE_SHIFT)
    if exclusive:
        pte |= _PAGE_SWP_EXCLUSIVE
    if soft_dirty:
        pte |= _PAGE_SWP_SOFT_DIRTY
    if uffd_wp:
        pte |= _PAGE_SWP_UFFD_WP
    return pte


def is_swap_pte(pte: int) -> bool:
    """True for a non-none, non-present PTE (``is_swap_pte``)."""
    return pte != 0 and (pte & _PAGE_PRESENT) == 0


def swp_type(pte: int) -> int:
    """The swap type in bits 59..63 (``__swp_type``)."""
    return (pte & _MASK64) >> _SWP_TYPE_SHIFT


def swp_offset(pte: int) -> int:
    """The swap offset, un-inverted from bits 9..58 (``__swp_offset``)."""
    return (~pte >> SWP_OFFSET_FIRST_BIT) & _SWP_OFFSET_MASK


def pte_swp_exclusive(pte: int) -> bool:
    """True if the swap PTE carries the exclusive marker."""
    return (pte & _PAGE_SWP_EXCLUSIVE) != 0


def pte_swp_soft_dirty(pte: int) -> bool:
    """True if the swap PTE is soft-dirty."""
    return (pte & _PAGE_SWP_SOFT_DIRTY) != 0


def pte_swp_uffd_wp(pte: int) -> bool:
    """True if the swap PTE is uffd write-protected."""
    return (pte & _PAGE_SWP_UFFD_WP) != 0


def pte_swp_mkexclusive(pte: int) -> int:
    """Set the swap exclusive marker."""
    return pte | _PAGE_SWP_EXCLUSIVE


def pte_swp_clear_exclusive(pte: int) -> int:
    """Clear the swap exclusive marker."""
    return pte & ~_PAGE_SWP_EXCLUSIVE


def pte_swp_mksoft_dirty(pte: int) -> int:
    """Set the swap soft-dirty bit."""
    return pte | _PAGE_SWP_SOFT_DIRTY


def pte_swp_clear_soft_dirty(pte: int) -> int:
    """Clear the swap soft-dirty bit."""
    return pte & ~_PAGE_SWP_SOFT_DIRTY


def pte_swp_mkuffd_wp(pte: int) -> int:
    """Set the swap uffd-wp bit."""
    return pte | _PAGE_SWP_UFFD_WP


def pte_swp_clear_uffd_wp(pte: int) -> int:
    """Clear the swap uffd-wp bit."""
    return pte & ~_PAGE_SWP_UFFD_WP


def pte_hw(pte: int) -> int:
    """The 64-bit value a hardware page table holds for ``pte``: a present PTE with NX
    (bit 63) added, which every user page here has; a swap PTE or pte_none unchanged.

        >>> hex(pte_hw(make_pte(0x1A3, write=True)))
        '0x80000000001a3027'
    """
    return pte | _PAGE_NX if pte & _PAGE_PRESENT else pte


def describe_pte(pte: int) -> str:
    """Describe a PTE for render and debug output.

    Examples: ``"none"``, ``"present pfn=0x1a3 RW dirty accessed soft-dirty"``,
    ``"swap type=0 offset=17 exclusive"``.
    """
    if pte == 0:
        return "none"
    if pte & _PAGE_PRESENT:
        parts = ["present", f"pfn={pte_pfn(pte):#x}", "RW" if pte & _PAGE_RW else "RO"]
        if pte & _PAGE_DIRTY:
            parts.append("dirty")
        if pte & _PAGE_ACCESSED:
            parts.append("accessed")
        if pte & _PAGE_SOFT_DIRTY:
            parts.append("soft-dirty")
        if pte & _PAGE_UFFD_WP:
            parts.append("uffd-wp")
        if pte & _PAGE_PSE:
            parts.append("huge")
        return " ".join(parts)
    parts = ["swap", f"type={swp_type(pte)}", f"offset={swp_offset(pte)}"]
    if pte & _PAGE_SWP_EXCLUSIVE:
        parts.append("exclusive")
    if pte & _PAGE_SWP_SOFT_DIRTY:
        parts.append("soft-dirty")
    if pte & _PAGE_SWP_UFFD_WP:
        parts.append("uffd-wp")
    return " ".join(parts)


# --------------------------------------------------------------------------
# Address-space geometry
# --------------------------------------------------------------------------

_LOW_USER_BITS: Final = 47
_HIGH_USER_BITS: Final = 56

# Accepted from_mapping keys and the field each one sets.
_MAPPING_KEYS: dict[str, str] = {
    "paging_levels": "paging_levels",
    "levels": "paging_levels",
    "high_user_addresses": "high_user_addresses",
    "mthp_orders": "mthp_orders",
}


def _type_name(value: object) -> str:
    return type(value).__name__


def _validated_fields(
    paging_levels: object,
    high_user_addresses: object,
    mthp_orders: object,
    label: Callable[[str], str],
) -> tuple[int, bool, tuple[int, ...]]:
    """Check Geometry field values; ``label`` turns a field name into the name users see.

    Returns:
        The values normalised (orders as a sorted tuple).

    Raises:
        GeometryError: Naming the offending field through ``label``.
    """
    # bool is an int subclass; True must not pass for a level or an order.
    if not isinstance(paging_levels, int) or isinstance(paging_levels, bool):
        raise GeometryError(
            f"{label('paging_levels')}: expected an integer (4 or 5), "
            f"got {_type_name(paging_levels)} {paging_levels!r}"
        )
    if paging_levels not in (4, 5):
        raise GeometryError(
            f"{label('paging_levels')}: paging levels must be 4 or 5, not {paging_levels}"
        )
    if not isinstance(high_user_addresses, bool):
        raise GeometryError(
            f"{label('high_user_addresses')}: expected a boolean, "
            f"got {_type_name(high_user_addresses)} {high_user_addresses!r}"
        )
    if high_user_addresses and paging_levels != 5:
        raise GeometryError(
            f"{label('high_user_addresses')}: user addresses above 2^47 need 5-level paging "
            f"(paging_levels is {paging_levels})"
        )
    if not isinstance(mthp_orders, tuple | list):
        raise GeometryError(
            f"{label('mthp_orders')}: expected a list of integer orders, "
            f"got {_type_name(mthp_orders)} {mthp_orders!r}"
        )
    seen: set[int] = set()
    for i, order in enumerate(mthp_orders):
        if not isinstance(order, int) or isinstance(order, bool):
            raise GeometryError(
                f"{label('mthp_orders')}[{i}]: expected an integer order, "
                f"got {_type_name(order)} {order!r}"
            )
        if order not in MTHP_ORDERS:
            raise GeometryError(
                f"{label('mthp_orders')}: order {order} is not an anonymous mTHP order "
                f"(expected a subset of {MTHP_ORDERS[0]}..{MTHP_ORDERS[-1]})"
            )
        if order in seen:
            raise GeometryError(f"{label('mthp_orders')}: order {order} is listed twice")
        seen.add(order)
    return paging_levels, high_user_addresses, tuple(sorted(seen))


@dataclass(frozen=True)
class Geometry:
    """The virtual address-space shape of one simulated process.

    Attributes:
        paging_levels: 4 (48-bit VA) or 5 (57-bit VA).
        high_user_addresses: With 5-level paging, whether user space may use
            addresses above 2^47.  Like the kernel, which only hands out such
            addresses when mmap is given a high hint, the limit stays at 2^47
            unless this is requested.  Requires ``paging_levels=5``.
        mthp_orders: Enabled anonymous mTHP orders, a subset of 2..9; stored
            sorted.

    The user limit is the full 2^47 (or 2^56) bytes; the kernel's
    ``TASK_SIZE_MAX`` additionally keeps the topmost page unmapped, which does
    not matter for copy-on-write decisions.
    """

    paging_levels: int = 4
    high_user_addresses: bool = False
    mthp_orders: tuple[int, ...] = MTHP_ORDERS
    # Cached because check_range runs on hot paths.
    _user_limit: int = field(init=False, repr=False, compare=False)
    _max_pages: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _, high, orders = _validated_fields(
            self.paging_levels,
            self.high_user_addresses,
            self.mthp_orders,
            lambda name: f"Geometry.{name}",
        )
        limit = 1 << (_HIGH_USER_BITS if high else _LOW_USER_BITS)
        # Frozen dataclass: normalised and cached values go in via object.__setattr__.
        object.__setattr__(self, "mthp_orders", orders)
        object.__setattr__(self, "_user_limit", limit)
        object.__setattr__(self, "_max_pages", limit >> PAGE_SHIFT)

    @property
    def va_bits(self) -> int:
        """Virtual address width: 48 with 4-level paging, 57 with 5-level."""
        return 48 if self.paging_levels == 4 else 57

    @property
    def user_limit(self) -> int:
        """Exclusive upper bound of user addresses, in bytes (2^47 or 2^56)."""
        return self._user_limit

    @property
    def max_pages(self) -> int:
        """Number of user pages: ``user_limit >> PAGE_SHIFT``."""
        return self._max_pages

    @property
    def description(self) -> str:
        """One-line summary, e.g. ``"4-level paging, 48-bit VA, user space below 2^47"``."""
        text = f"{self.paging_levels}-level paging, {self.va_bits}-bit VA, "
        if self.high_user_addresses:
            return text + f"user space below 2^{_HIGH_USER_BITS}"
        if self.paging_levels == 5:
            return text + f"user space below 2^{_LOW_USER_BITS} (high addresses not requested)"
        return text + f"user space below 2^{_LOW_USER_BITS}"

    def _limit_label(self) -> str:
        if self.high_user_addresses:
            return f"2^{_HIGH_USER_BITS}, 5-level paging with high user addresses"
        if self.paging_levels == 5:
            return f"2^{_LOW_USER_BITS}, 5-level paging without high user addresses"
        return f"2^{_LOW_USER_BITS}, 4-level paging"

    def check_range(self, first_page: int, pages: int = 1) -> None:
        """Check that pages ``first_page .. first_page + pages - 1`` are user pages.

        Raises:
            GeometryError: If ``first_page`` is negative, ``pages`` < 1, or the
                range reaches the user address limit; the message names the
                first page beyond the limit, its address, the limit and the
                paging mode.
        """
        if first_page < 0:
            raise GeometryError(f"page {first_page} is negative; page indices start at 0")
        if pages < 1:
            raise GeometryError(f"a page range must cover at least 1 page, not {pages}")
        if first_page + pages > self._max_pages:
            bad = max(first_page, self._max_pages)
            where = ""
            if pages > 1:
                last = first_page + pages - 1
                where = f"pages {first_page:#x}..{last:#x} ({pages} pages): "
            raise GeometryError(
                f"{where}page {bad:#x} (address {bad << PAGE_SHIFT:#x}) is above the user "
                f"address limit {self._user_limit:#x} ({self._limit_label()})"
            )

    def page_address(self, page: int) -> int:
        """Start address of user page ``page``.

        Raises:
            GeometryError: If the page is not below the user limit.
        """
        self.check_range(page)
        return page << PAGE_SHIFT

    def address_page(self, addr: int) -> int:
        """Index of the user page containing ``addr`` (need not be aligned).

        Raises:
            GeometryError: If the address is negative or not below the user limit.
        """
        if addr < 0:
            raise GeometryError(f"address {addr} is negative")
        if addr >= self._user_limit:
            raise GeometryError(
                f"address {addr:#x} is above the user address limit "
                f"{self._user_limit:#x} ({self._limit_label()})"
            )
        return addr >> PAGE_SHIFT

    def pmd_index(self, page: int) -> int:
        """Index of the PMD entry covering ``page`` within its 512-entry table."""
        return (page >> HPAGE_PMD_ORDER) & (PTRS_PER_TABLE - 1)

    def pte_index(self, page: int) -> int:
        """Index of ``page``'s PTE within its 512-entry page table."""
        return page & (PTRS_PER_TABLE - 1)

    def pmd_aligned(self, page: int, order: int) -> bool:
        """True if ``page`` is aligned to a block of 2^order pages.

        Raises:
            GeometryError: If ``order`` is negative.
        """
        if order < 0:
            raise GeometryError(f"order {order} is negative")
        return (page & ((1 << order) - 1)) == 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str = "geometry") -> Geometry:
        """Build a Geometry from a parsed YAML mapping.

        Accepted keys: ``paging_levels`` (alias ``levels``),
        ``high_user_addresses`` and ``mthp_orders`` (a list); missing keys keep
        their defaults.

        Args:
            data: The mapping, e.g. the ``geometry:`` section of a config.
            where: Location used as the prefix of error messages.

        Raises:
            GeometryError: For a non-mapping, an unknown key, both
                ``paging_levels`` and ``levels``, a wrong type (naming
                ``{where}.{key}`` and the expected type) or a bad value.
        """
        if not isinstance(data, Mapping):
            raise GeometryError(f"{where}: expected a mapping, got {_type_name(data)}")
        expected = ", ".join(repr(k) for k in sorted(_MAPPING_KEYS))
        values: dict[str, object] = {}
        key_for: dict[str, str] = {}
        for key, value in data.items():
            name = _MAPPING_KEYS.get(key) if isinstance(key, str) else None
            if name is None:
                raise GeometryError(f"{where}: unknown key {key!r} (expected one of {expected})")
            if name in values:
                raise GeometryError(
                    f"{where}: give either 'paging_levels' or its alias 'levels', not both"
                )
            values[name] = value
            key_for[name] = key
        defaults = cls()
        levels, high, orders = _validated_fields(
            values.get("paging_levels", defaults.paging_levels),
            values.get("high_user_addresses", defaults.high_user_addresses),
            values.get("mthp_orders", defaults.mthp_orders),
            lambda name: f"{where}.{key_for.get(name, name)}",
        )
        return cls(paging_levels=levels, high_user_addresses=high, mthp_orders=orders)


#: The geometry used when a scenario does not configure one.
DEFAULT_GEOMETRY = Geometry()
