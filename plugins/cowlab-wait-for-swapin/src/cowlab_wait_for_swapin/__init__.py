"""wait-for-swapin: a research example of a third-party cowlab reuse policy.

This is not one of the kernel's rules and not a proposed kernel patch. It asks one
question of the simulator: since v5.9 do_wp_page() copies whenever ``folio_trylock()``
fails, so an exclusive page is copied just because somebody else holds its lock for a
moment. When the folio is in the swapcache and not under writeback, the holder is most
likely swap-in (a read still in flight, or another thread's do_swap_page() on the same
folio), which finishes within microseconds on zram or pmem. Sleeping on the lock, as
v5.8 and earlier always did, might then be cheaper than allocating, copying and
flushing the TLB. Everything else follows the v5.18 / v5.19 sequence of ``patched-lru``
and ``exclusive``:

1. PageAnonExclusive -> reuse (v5.19, 6c287605fd56);
2. KSM -> copy;
3. refcount above ``max_refcount`` -> copy (the cheap early exit, 53a05ad9f21d);
4. not on the LRU -> drain the local CPU's batch (d4c470970d45);
5. refcount > 1 + swapcache -> copy;
6. trylock; if it fails on a swapcache folio not under writeback, sleep with
   ``lock()``; otherwise copy with reason ``"lock"``;
7. free the swap entry under the lock and reuse only if the refcount is now 1.

Two things a real patch would have to add that the simulator does not ask for: after
sleeping, do_wp_page() must drop and retake the page-table lock and recheck that the
PTE did not change (as v5.8's ``lock_page()`` path did), and sleeping is not allowed
in every context that reaches do_wp_page().

Use it with ``cowlab scenario run FILE --policy wait-for-swapin``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cowlab import Decision, FaultView, hookimpl
from cowlab.plugins import RegisterFn

__all__ = ["COWLAB_HOOK_API", "WaitForSwapin", "WaitParams", "cowlab_register_policies"]

__version__ = "0.1.0"

#: The cowlab hook API this plugin is written against (see ``cowlab.HOOK_API_VERSION``).
COWLAB_HOOK_API = 1

REUSE = Decision.REUSE
COPY = Decision.COPY


@dataclass(frozen=True)
class WaitParams:
    """Parameters of the ``wait-for-swapin`` policy."""

    #: Copy at once, without taking any lock, when the refcount is above this (v5.18: 3).
    max_refcount: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.max_refcount, bool) or not isinstance(self.max_refcount, int):
            raise TypeError(f"max_refcount must be an int, got {self.max_refcount!r}")
        if self.max_refcount < 1:
            raise ValueError(
                f"max_refcount must be at least 1 (a mapped page holds one reference), "
                f"got {self.max_refcount}"
            )


class WaitForSwapin:
    """The v5.18 / v5.19 reuse sequence, sleeping on a swapcache folio's lock.

    Args:
        max_refcount: Early-exit threshold, see :class:`WaitParams`.

    Raises:
        ValueError: ``max_refcount`` is below 1.
    """

    name = "wait-for-swapin"

    def __init__(self, max_refcount: int = 3) -> None:
        self.params = WaitParams(max_refcount=max_refcount)
        self.max_refcount = self.params.max_refcount

    def reset(self, seed: int | None) -> None:
        """Stateless: nothing to forget, nothing random."""

    def decide(self, fault: FaultView) -> Decision:
        """Decide one write (or unshare) fault."""
        if fault.path == "swap":
            # Only kernels up to v5.17 ask from do_swap_page(). Map the page read-only
            # and let the write continue into do_wp_page(), which asks again on "wp".
            return COPY.because("swapcache")
        if fault.anon_exclusive:
            # PageAnonExclusive: nobody else can map the page; no lock, no refcount.
            return REUSE
        # PageKsm() doesn't necessarily raise the refcount.
        if fault.ksm:
            return COPY.because("ksm")
        if fault.refcount > self.max_refcount:
            return COPY.because("early")
        if not fault.lru:
            # Our own LRU-add batch may hold a reference; a remote CPU's cannot be
            # drained from here.
            fault.drain_lru()
        if fault.refcount > 1 + fault.swapcache:
            return COPY.because("early" if fault.lru else "lru")
        if not fault.trylock():
            if not fault.swapcache or fault.writeback:
                # Reclaim, writeback, migration...: the wait could be long. Copy.
                return COPY.because("lock")
            # Most likely a swap-in still in flight: sleep instead of copying.
            fault.lock()
        if fault.swapcache:
            fault.free_swap()
        # Recheck everything under the lock: the sleep may have let the world move on.
        if fault.ksm:
            return COPY.because("ksm")
        if fault.refcount != 1:
            if fault.swapcache:
                return COPY.because("writeback" if fault.writeback else "swapcache")
            return COPY.because("count")
        return REUSE


@hookimpl
def cowlab_register_policies(register: RegisterFn) -> None:
    """Register ``wait-for-swapin`` with its parameters."""
    register(
        "wait-for-swapin",
        WaitForSwapin,
        params=WaitParams,
        description="v5.19 sequence, but sleeps on the lock of a swapcache page (research)",
    )
