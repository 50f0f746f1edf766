"""The harness on the host kernel (marker ``real``): skipped with the reason where it
cannot run (not Linux, not root, no C compiler). A few small scenarios only; the full
differential suite is the ``cowlab real suite`` command, not a test."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from cowlab.real.harness import run_harness
from cowlab.real.host import THP_DIR, MachineSetup, _choice
from cowlab.real.run import run_real
from cowlab.real.script import translate
from cowlab.scenario import Scenario

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness needs Linux"),
    pytest.mark.skipif(sys.platform.startswith("linux") and os.geteuid() != 0,
                       reason="the harness needs root (pagemap PFNs, sysfs knobs)"),
    pytest.mark.skipif(shutil.which("cc") is None and not os.environ.get("CC"),
                       reason="no C compiler (cc) on PATH"),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_fork_with_a_live_child_copies_then_reuses_on_the_real_kernel() -> None:
    comp = run_real("experiments/scenarios/fork-child-live.yaml")
    assert comp.differ == 0 and comp.agree == 12
    real = [(r.real or {}).get("outcome") for r in comp.rows]
    assert real == ["none"] * 4 + ["copy", "copy", "reuse", "reuse", "copy", "copy",
                                   "reuse", "reuse"]


def test_vmsplice_reference_of_the_writer_goes_stale_when_fork_forces_a_copy(
        tmp_path: Path) -> None:
    # The writer's own pipe reference, then fork: the parent's write copies the page
    # and the pipe keeps the old one, which both kernels call pin_incoherent.
    path = _write(tmp_path, """
kernel: v6.15
steps:
  - {op: mmap, mm: p, page: 0}
  - {op: write, mm: p, page: 0}
  - {op: gup, mm: p, page: 0, kind: get, name: pipe}
  - {op: fork, mm: p, child: c}
  - {op: write, mm: p, page: 0}
  - {op: put, name: pipe}
""")
    comp = run_real(path)
    last = comp.rows[-1]
    assert last.real is not None
    assert (last.real["fault"], last.real["outcome"], last.real["violation"]) == \
        ("wp", "copy", "pin_incoherent")
    assert last.status == "agree"


def test_io_uring_pin_stays_coherent_across_fork(tmp_path: Path) -> None:
    path = _write(tmp_path, """
kernel: v6.15
steps:
  - {op: mmap, mm: p, page: 0, pages: 2}
  - {op: write, mm: p, page: 0, pages: 2}
  - {op: gup, mm: p, page: 0, pages: 2, kind: pin, write: true, longterm: true, name: buf}
  - {op: fork, mm: p, child: c}
  - {op: write, mm: p, page: 0, pages: 2}
  - {op: write, mm: c, page: 0, pages: 2}
  - {op: put, name: buf}
""")
    comp = run_real(path)
    assert all(s["status"] == "ok" for s in comp.steps), comp.steps
    assert comp.differ == 0
    assert all((r.real or {}).get("violation") is None for r in comp.rows)


def test_skipped_steps_are_reported_and_exclude_later_writes(tmp_path: Path) -> None:
    path = _write(tmp_path, """
machine: {cpus: 1024}
steps:
  - {op: mmap, mm: a, page: 0}
  - {op: write, mm: a, page: 0, cpu: 1023}
  - {op: write, mm: a, page: 0}
""")
    script = translate(Scenario.load(path, kernel="v6.15"))
    result = run_harness(script)
    assert result["steps"][1]["status"].startswith("skipped: cpu 1023 is not available")
    comp = run_real(path)
    assert comp.rows[-1].status == "excluded"


def test_swapfile_and_thp_knobs_are_restored_after_an_interrupt(tmp_path: Path) -> None:
    knob = THP_DIR / "hugepages-64kB" / "enabled"
    if not knob.exists():
        pytest.skip("no 64 kB mTHP knob on this kernel")
    before = _choice(knob)
    setup = MachineSetup(thp_orders={4}, swapfile=16 << 20, swap_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt), setup:
        assert _choice(knob) == "madvise"
        assert setup.swapfile is not None
        assert str(setup.swapfile) in Path("/proc/swaps").read_text()
        raise KeyboardInterrupt
    assert _choice(knob) == before
    assert list(tmp_path.iterdir()) == []
    assert "cowlab-real-" not in Path("/proc/swaps").read_text()


def test_emitted_harness_result_imports_and_agrees(tmp_path: Path) -> None:
    import subprocess

    from cowlab.real.harness import emit, find_compiler
    from cowlab.real.run import import_result

    scenario = Path("experiments/scenarios/cve-2020-29374.yaml")
    c_file = tmp_path / "t.c"
    c_file.write_text(emit(translate(Scenario.load(scenario))))
    exe = tmp_path / "t"
    subprocess.run([*find_compiler(), "-O2", "-pthread", str(c_file), "-o", str(exe)],
                   check=True, capture_output=True)
    out = subprocess.run([str(exe), "30"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    (tmp_path / "r.json").write_text(out)
    comp = import_result(tmp_path / "r.json", scenario)
    assert comp.kernel == "v6.15" or comp.kernel.startswith("v")
    assert comp.differ == 0 and comp.agree == 2


def test_uffd_wp_faults_are_resolved_by_the_monitor(tmp_path: Path) -> None:
    path = _write(tmp_path, """
kernel: v6.15
steps:
  - {op: mmap, mm: a, page: 0, pages: 2}
  - {op: write, mm: a, page: 0, pages: 2}
  - {op: uffd_wp, mm: a, page: 0, pages: 2, enable: true}
  - {op: write, mm: a, page: 0}
  - {op: uffd_wp, mm: a, page: 0, pages: 2, enable: false}
  - {op: write, mm: a, page: 1}
""")
    comp = run_real(path)
    assert all(s["status"] == "ok" for s in comp.steps), comp.steps
    resolved = comp.rows[2]
    assert resolved.real is not None and resolved.real["fault"] == "unknown"
    assert resolved.compared == ("violation",) and resolved.status == "agree"
    assert comp.differ == 0


def test_sigterm_during_setup_restores_the_knob(tmp_path: Path) -> None:
    import signal

    knob = THP_DIR / "hugepages-64kB" / "enabled"
    if not knob.exists():
        pytest.skip("no 64 kB mTHP knob on this kernel")
    before = _choice(knob)
    with pytest.raises(KeyboardInterrupt), MachineSetup(thp_orders={4}):
        assert _choice(knob) == "madvise"
        os.kill(os.getpid(), signal.SIGTERM)
    assert _choice(knob) == before


def test_harness_built_without_io_uring_headers_skips_pins(tmp_path: Path) -> None:
    import subprocess

    from cowlab.real.harness import emit, find_compiler

    path = _write(tmp_path, """
steps:
  - {op: mmap, mm: a, page: 0}
  - {op: write, mm: a, page: 0}
  - {op: gup, mm: a, page: 0, kind: pin, write: true, name: buf}
  - {op: write, mm: a, page: 0}
  - {op: put, name: buf}
""")
    src = emit(translate(Scenario.load(path))).replace("#if defined(__has_include)", "#if 0")
    (tmp_path / "t.c").write_text(src)
    exe = tmp_path / "t"
    subprocess.run([*find_compiler(), "-O2", "-pthread", str(tmp_path / "t.c"), "-o", str(exe)],
                   check=True, capture_output=True)
    import json

    out = json.loads(subprocess.run([str(exe), "30"], check=True, capture_output=True,
                                    text=True, timeout=60).stdout)
    assert out["steps"][2]["status"] == ("skipped: io_uring unavailable (the harness was built "
                                         "without <linux/io_uring.h>)")


def test_exit_of_a_forked_mm_is_complete_before_the_next_step() -> None:
    # The child is not the controller's own child: its exit must still be awaited, or the
    # parent's store may find the page still mapped twice and copy it.
    # Page 3 was written on CPU 1 and waits in that CPU's LRU batch, whose extra
    # reference makes the simulator copy; on a real machine anything else running on CPU 1
    # can fill and flush that batch first (then Linux reuses), so only pages 0-2, whose
    # outcome depends on the exit alone, must agree on every run.
    for _ in range(3):
        comp = run_real("experiments/scenarios/fork-child-exited.yaml")
        last = [r for r in comp.rows if r.step == 5]
        assert [(r.real or {}).get("excl_before") for r in last] == [1, 1, 1, 1]
        assert [r.status for r in last if r.page != 3] == ["agree"] * 3


def test_ksm_knobs_are_restored_even_if_the_harness_is_killed() -> None:
    from cowlab.real.host import KSM_DIR

    knob = KSM_DIR / "pages_to_scan"
    if not knob.exists():
        pytest.skip("no KSM on this kernel")
    before = knob.read_text().strip()
    with MachineSetup(guard_ksm=True):
        knob.write_text(str(int(before) + 1))  # what a killed harness would leave
    assert knob.read_text().strip() == before


def test_ctrl_c_stops_the_harness_and_restores_the_machine(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    knob = THP_DIR / "hugepages-64kB" / "enabled"
    if not knob.exists():
        pytest.skip("no 64 kB mTHP knob on this kernel")
    before = _choice(knob)
    path = _write(tmp_path, """
steps:
  - {op: mmap, mm: a, page: 0, pages: 16, thp: mthp-4}
  - {op: fork, mm: a, child: b}
  - {op: advance, us: 20000000}
  - {op: write, mm: a, page: 0}
""")
    proc = subprocess.Popen([sys.executable, "-m", "cowlab.cli", "real", "run", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while _choice(knob) != "madvise" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the harness is sleeping in the advance step
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert _choice(knob) == before
    leftover = subprocess.run(["pgrep", "-f", "cowlab/real/harness-"], capture_output=True,
                              text=True).stdout.split()
    assert leftover == []


def test_time_limit_kills_a_harness_that_runs_too_long(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from cowlab.cli import main

    path = _write(tmp_path, """
steps:
  - {op: mmap, mm: a, page: 0}
  - {op: fork, mm: a, child: b}
  - {op: advance, us: 30000000}
  - {op: write, mm: a, page: 0}
""")
    assert main(["real", "run", str(path), "--timeout", "1"]) == 2
    assert "time limit reached" in capsys.readouterr().err


def test_hugetlb_vmsplice_leak_is_seen_on_the_real_kernel(tmp_path: Path) -> None:
    # cow.c's "vmsplice() + unmap in child" on hugetlb, an expected failure upstream: the
    # parent reuses the huge page the child's pipe still holds. Both kernels say leak.
    from cowlab.real.host import HUGETLB_2M

    if not HUGETLB_2M.exists():
        pytest.skip("no 2 MiB hugetlb pages on this kernel")
    before = HUGETLB_2M.read_text().strip()
    path = _write(tmp_path, """
kernel: v6.15
steps:
  - {op: mmap, mm: parent, page: 0, pages: 512, hugetlb: 2m}
  - {op: write, mm: parent, page: 0}
  - {op: fork, mm: parent, child: child}
  - {op: gup, mm: child, page: 0, kind: get, name: pipe}
  - {op: munmap, mm: child, page: 0, pages: 512}
  - {op: write, mm: parent, page: 0}
  - {op: write, mm: parent, page: 0}
  - {op: put, name: pipe}
""")
    comp = run_real(path)
    assert all(s["status"] == "ok" for s in comp.steps), comp.steps
    reuse, after = comp.rows[-2], comp.rows[-1]
    assert reuse.real is not None and after.real is not None
    assert (reuse.real["fault"], reuse.real["outcome"], reuse.real["violation"]) == \
        ("wp", "reuse", "leak")
    assert reuse.status == "agree"
    # the next store takes no fault: no second decision, no second violation
    assert (after.real["fault"], after.real["violation"]) == ("none", None)
    assert after.real["observers"]
    assert HUGETLB_2M.read_text().strip() == before
