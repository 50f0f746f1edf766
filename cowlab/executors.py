"""Where evaluation runs execute: in-process, a local process pool, or Ray.

Every executor runs the same function (:func:`cowlab.records.execute`) on the same
JSON-friendly run specs and yields ``(index, record)`` pairs as runs finish, in any
order; the caller (:func:`cowlab.evaluate.run_sweep`) writes each record as it arrives.
A record depends only on its spec, so the records are the same whichever executor ran
them (only ``wall_s`` differs).

* ``inprocess``: one run after another in this process (debugging, profilers, pdb).
* ``process`` (the default): a local pool of ``spawn``-ed worker processes, one per
  CPU; each worker limits torch to one intra-op thread, which is fastest for the small
  networks of learned agents and avoids oversubscribing the cores.
* ``ray``: tasks on a Ray cluster (``address`` of an existing cluster, ``auto``, or
  none to start a local instance); needs the ``ray`` extra (``pip install cowlab[ray]``).

    >>> ex = make_executor("inprocess")
    >>> [i for i, rec in ex.map_unordered([{"policy": "oracle", "kernel": "v5.19",
    ...     "workload": "forceswap-v1", "seed": 0, "max_decisions": 5}])]
    [0]
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorError",
    "InProcessExecutor",
    "ProcessPoolExecutor",
    "RayExecutor",
    "make_executor",
]

#: Executor names accepted by :func:`make_executor` (``local`` is ``process``).
EXECUTORS = ("inprocess", "process", "local", "ray")

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ExecutorError(RuntimeError):
    """An executor that cannot be used (ray not installed, cluster unreachable)."""


class Executor(Protocol):
    """Runs :func:`cowlab.records.execute` on specs (the interface every executor has)."""

    #: ``inprocess``, ``process`` or ``ray``.
    name: str
    #: How many runs execute at once.
    workers: int

    def map_unordered(
        self, specs: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(index into specs, record)`` as runs finish."""

    def close(self) -> None:
        """Release workers (idempotent)."""


def _single_thread_torch() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _worker_init() -> None:
    for var in _THREAD_VARS:
        os.environ[var] = "1"


#: Task functions a spec may name with ``"call"`` instead of being an evaluation run:
#: ``{"call": "verify.expand", ...}`` runs :func:`cowlab.verify.search.expand_chunk` (the
#: frontier partitions of ``cowlab verify``).
TASKS = {"verify.expand": ("cowlab.verify.search", "expand_chunk")}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The worker function: one record of one spec (or the task it names with
    ``"call"``, see :data:`TASKS`), with torch on one thread."""
    from cowlab.records import execute

    _single_thread_torch()
    if "call" in spec:
        import importlib

        module, func = TASKS[spec["call"]]
        result: dict[str, Any] = getattr(importlib.import_module(module), func)(spec)
        return result
    record = execute(spec)
    _single_thread_torch()  # a learned policy may have imported torch just now
    return record


class InProcessExecutor:
    """One run after another in the calling process."""

    name = "inprocess"
    workers = 1

    def map_unordered(
        self, specs: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield records in order."""
        for i, spec in enumerate(specs):
            yield i, run_spec(spec)

    def close(self) -> None:
        """Nothing to release."""


class ProcessPoolExecutor:
    """A local pool of spawned worker processes (the default executor)."""

    name = "process"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: cf.ProcessPoolExecutor | None = None

    def _ensure(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
        return self._pool

    def map_unordered(
        self, specs: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Submit every spec; yield records as workers finish them."""
        pool = self._ensure()
        futures = {pool.submit(run_spec, spec): i for i, spec in enumerate(specs)}
        try:
            for fut in cf.as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Ray tasks, one per run (``address``: an existing cluster; None: a local instance)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError(
                "executor 'ray' needs Ray: pip install 'cowlab[ray]'"
            ) from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except Exception as exc:  # connection errors come in many types
                raise ExecutorError(f"executor 'ray': cannot start or reach Ray "
                                    f"({address or 'local'}): {exc}") from exc
            self._started = True
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        self.workers = int(resources.get("CPU", 1))
        self._task = ray.remote(num_cpus=1)(run_spec)

    def map_unordered(
        self, specs: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Submit one task per spec; yield records as tasks finish."""
        ray = self._ray
        refs = {self._task.remote(spec): i for i, spec in enumerate(specs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield refs[ref], ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        """Shut down the Ray instance if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(kind: str = "process", *, workers: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor called ``kind`` (see :data:`EXECUTORS`).

    Raises:
        ExecutorError: Unknown kind, or Ray unavailable.
    """
    if kind == "inprocess":
        return InProcessExecutor()
    if kind in ("process", "local"):
        return ProcessPoolExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, workers)
    raise ExecutorError(f"unknown executor {kind!r}; known: {', '.join(EXECUTORS)}")
