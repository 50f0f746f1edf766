"""Every shipped workload reaches its own end (its threads finish) on every preset and
every swap device, and a run that cannot is refused rather than reported."""

from __future__ import annotations

import types
from typing import Any, cast

import pytest

from cowlab import hookimpl
from cowlab.kernel import PRESETS, Kernel, Machine, get_preset
from cowlab.kernel.costs import DEVICES
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.kernel.errors import StallError
from cowlab.plugins import PluginRegistry, RegisterFn, get_registry, load_registry
from cowlab.workloads import Budget, Workload
from cowlab.workloads.base import Run, machine_for

#: Small parameters, so the whole matrix runs in seconds; each still exercises the
#: workload's story (forks, pageouts, pins, merges, pressure) at least once.
SMALL: dict[str, dict[str, object]] = {
    "forceswap-v1": {"nops": 20, "npages": 2},
    "fork-snapshot-v1": {"pages": 64, "duration_ms": 3.0, "snapshot_period_ms": 0.5},
    "ksm-vms-v1": {"vms": 2, "pages": 64, "duration_ms": 3.0, "idle_ms": 0.5},
    "memcached-pressure-v1": {"pages": 512, "ram_pages": 400, "threads": 2,
                              "duration_ms": 3.0},
    "pinned-io-v1": {"duration_ms": 3.0, "heap_pages": 32},
    "softdirty-tracking-v1": {"pages": 128, "duration_ms": 3.0, "criu_period_ms": 0.5,
                              "qemu_period_ms": 1.0},
    "vmsplice-pipe-v1": {"pages": 128, "duration_ms": 3.0},
}
#: Workloads that pick their own swap device (the others run on the machine's).
OWN_SWAP = ("forceswap-v1", "memcached-pressure-v1")


def test_the_matrix_covers_every_shipped_workload() -> None:
    # mix-v1 runs one of the others, chosen by its seed.
    assert set(get_registry().names("workload")) - {"mix-v1"} == set(SMALL)


def run_to_end(workload_id: str, preset: str, device: str) -> tuple[Run, Kernel]:
    reg = get_registry()
    params = dict(SMALL[workload_id])
    if workload_id in OWN_SWAP:
        params["swap"] = device
    workload = cast(Workload, reg.make("workload", workload_id, params))
    config = get_preset(preset)
    kernel = Kernel(config, reg.make_policy(config.default_policy),
                    machine=machine_for(workload, Machine(swap=device)))
    run = Run(workload, kernel, 0, Budget(max_decisions=10**9))
    run.execute()
    return run, kernel


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("workload_id", list(SMALL))
def test_every_workload_reaches_its_own_end(workload_id: str, preset: str, device: str) -> None:
    run, kernel = run_to_end(workload_id, preset, device)
    assert run.engine.end_reason == "finished"
    assert not [t.name for t in run.engine.threads if t.alive and not t.daemon]
    assert kernel.check_invariants() == []


@pytest.mark.parametrize("preset", ["v5.7", "v5.8", "v5.9", "v5.18", "v5.19", "v6.9"])
@pytest.mark.parametrize("device", ["ssd", "nvme"])
def test_forceswap_times_one_write_fault_per_iteration_on_an_asynchronous_device(
    preset: str, device: str
) -> None:
    """The regression of issue 11: a page reused under writeback used to stay mapped, so
    most iterations faulted nowhere (10 decisions in 2,000 iterations on v5.19 + ssd)."""
    _run, kernel = run_to_end("forceswap-v1", preset, device)
    nops, npages = 20, 2
    assert kernel.nr_decisions == nops * npages
    assert kernel.counters["pswpout"] >= nops * npages


@pytest.mark.parametrize("device", list(DEVICES))
def test_forceswap_from_v6_11_maps_the_page_writable_on_the_read_and_never_asks(
    device: str,
) -> None:
    """c18160dba5ff: the read fault maps the exclusive page writable, so the timed write
    takes no fault; the run still swaps every page out every iteration."""
    run, kernel = run_to_end("forceswap-v1", "v6.11", device)
    assert kernel.nr_decisions == 0
    assert kernel.counters["pswpout"] >= 20 * 2
    assert run.engine.end_reason == "finished"


# ------------------------------------------------------------------- a stalled workload
class Stuck:
    """A test workload whose thread faults on a folio locked forever (a lock leaked by a
    buggy kernel path): the engine must refuse the run."""

    id = "stuck-v1"

    def machine_overrides(self) -> dict[str, object]:
        return {"cpus": 2}

    def setup(self, run: Run) -> None:
        mm = run.mm("stuck")
        run.kernel.mmap(mm, 0, 1)
        run.spawn("spinner", self._spin, cpu=1, mm=mm, daemon=True)
        run.spawn("main", self._main, cpu=0, mm=mm)

    def _spin(self, t: Thread) -> ThreadGen:
        while True:
            yield from t.think(1_000)

    def _main(self, t: Thread) -> ThreadGen:
        assert t.mm is not None
        k = t.kernel
        yield from t.write(t.mm, 0)
        yield from t.fork(t.mm, "child")  # the next write is a wp fault
        folio = next(iter(k.frames.values()))
        k.lock_folio(folio, "leaked")  # nobody will ever unlock it
        yield from t.write(t.mm, 0)  # v5.7's rule sleeps on the page lock


@hookimpl
def cowlab_register_workloads(register: RegisterFn) -> None:
    register(Stuck.id, Stuck, description="test: a thread blocked forever")


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    plugin = types.ModuleType("test_stuck_workload")
    plugin.cowlab_register_workloads = cowlab_register_workloads  # type: ignore[attr-defined]
    return load_registry(extra_plugins=[("test_stuck_workload", plugin)])


def test_a_stalled_workload_raises_naming_the_blocked_thread(registry: PluginRegistry) -> None:
    from cowlab.workloads import run_workload

    workload = cast(Workload, registry.make("workload", "stuck-v1", {}))
    with pytest.raises(StallError) as info:
        run_workload(workload, get_preset("v5.7"), registry.make_policy("legacy"))
    (blocked,) = info.value.blocked
    assert blocked.name == "main" and blocked.mm == "stuck"
    assert "locked by leaked" in blocked.waits_on
    assert "thread main (mm stuck, cpu 0): blocked: folio pfn" in str(info.value)


def test_a_stalled_run_is_never_a_record(registry: PluginRegistry) -> None:
    from cowlab.records import RunSpec, execute

    spec = RunSpec(policy="legacy", kernel="v5.7", workload="stuck-v1", seed=4)
    with pytest.raises(StallError, match=r"workload stuck-v1 .*kernel v5.7.*seed 4"):
        execute(spec, registry=registry)


def test_the_cli_reports_a_stalled_run_with_its_location_and_exit_status_3(
    registry: PluginRegistry, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cowlab.cli import EXIT_STALLED, main

    monkeypatch.setattr("cowlab.cli.get_registry", lambda: registry)
    status = main(["workload", "run", "stuck-v1", "--kernel", "v5.7", "--seed", "2"])
    out: Any = capsys.readouterr()
    assert status == EXIT_STALLED == 3
    assert out.out == ""
    assert "workload stuck-v1 (kernel v5.7, policy legacy, seed 2): stalled" in out.err
    assert "thread main (mm stuck, cpu 0): blocked" in out.err
    assert "Traceback" not in out.err


def test_cowlab_eval_refuses_a_stalled_run_and_writes_no_record(
    registry: PluginRegistry, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Any,
) -> None:
    from cowlab.cli import EXIT_STALLED, main

    monkeypatch.setattr("cowlab.cli.get_registry", lambda: registry)
    monkeypatch.setattr("cowlab.records.get_registry", lambda: registry)
    out = tmp_path / "records.jsonl"
    status = main(["eval", "--policy", "legacy", "--workload", "stuck-v1", "--kernel", "v5.7",
                   "--seeds", "0", "--out", str(out), "--executor", "inprocess", "--quiet"])
    err = capsys.readouterr().err
    assert status == EXIT_STALLED
    assert "eval: run of workload stuck-v1" in err and "seed 0: stalled" in err
    assert "no record written" in err
    assert not out.exists() or out.read_text().strip() == ""
