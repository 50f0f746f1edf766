"""The host: its preset, its swap device class, and machine set-up that is always undone.

:class:`MachineSetup` is a context manager that sets THP/mTHP knobs for a run and
optionally creates and enables a swapfile; on the way out (normal end, an exception,
Ctrl-C, SIGTERM) it restores every knob it wrote and disables and deletes the swapfile.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import types
from collections.abc import Iterable
from pathlib import Path

from cowlab.kernel.presets import PRESETS

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
KSM_DIR = Path("/sys/kernel/mm/ksm")
HUGETLB_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
#: The KSM knobs the harness changes for ``ksm_merge`` (it restores them itself; these
#: are saved here too, in case the harness is killed before it can).
KSM_KNOBS = ("run", "pages_to_scan", "sleep_millisecs")
SWAPS = Path("/proc/swaps")


class SetupError(RuntimeError):
    """The machine cannot be set up as asked (exit status 2)."""


def parse_release(release: str) -> tuple[int, int]:
    """``(major, minor)`` of a kernel release string.

    >>> parse_release("6.18.44-fc-v1300")
    (6, 18)
    """
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise SetupError(f"cannot read a kernel version from {release!r}")
    return int(m.group(1)), int(m.group(2))


def preset_for(release: str) -> str:
    """The newest shipped preset at or below kernel ``release``.

    >>> preset_for("6.18.44"), preset_for("6.1.0-13-amd64"), preset_for("5.15.0")
    ('v6.15', 'v5.19', 'v5.12')
    """
    host = parse_release(release)
    best: tuple[tuple[int, int], str] | None = None
    for name in PRESETS:
        version = parse_release(name.lstrip("v"))
        if version <= host and (best is None or version > best[0]):
            best = (version, name)
    if best is None:
        raise SetupError(f"kernel {release} is older than every preset "
                         f"(oldest {next(iter(PRESETS))}); pass --kernel")
    return best[1]


def swap_device_class(swaps: str | None = None, *, stat_files: bool = True) -> str | None:
    """The simulator's device kind standing for the host's first active swap area:
    ``zram``, ``pmem``, ``nvme``, or ``ssd`` for any other block device or file;
    None when no swap is enabled. A swapfile is classed by the device holding it
    (``stat_files``; off for a result from another machine, where it is ``ssd``).

    >>> swap_device_class("Filename Type Size Used Priority\\n/dev/zram0 partition 8 0 -2")
    'zram'
    """
    text = SWAPS.read_text() if swaps is None else swaps
    lines = text.strip().splitlines()[1:]
    if not lines:
        return None
    name, kind = lines[0].split()[:2]
    dev = name.rsplit("/", 1)[-1]
    if kind == "file" and not stat_files:
        dev = ""
    elif kind == "file":
        try:
            st = os.stat(name)
            link = os.readlink(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            dev = link.rsplit("/", 1)[-1]
        except OSError:
            dev = ""
    for prefix in ("zram", "pmem", "nvme"):
        if dev.startswith(prefix):
            return prefix
    return "ssd"


def parse_size(text: str) -> int:
    """Bytes in a size such as ``256M`` or ``1G`` (K, M, G; plain bytes otherwise).

    >>> parse_size("256M")
    268435456
    """
    m = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise SetupError(f"--swapfile: expected a size such as 256M or 1G, got {text!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def _choice(path: Path) -> str:
    text = path.read_text().strip()
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else text


def thp_plan(orders: Iterable[int]) -> dict[Path, str]:
    """Knob values giving exactly the wanted large-folio orders to MADV_HUGEPAGE mappings:
    the top-level ``enabled`` at ``madvise``, each ``hugepages-<size>kB/enabled`` at
    ``madvise`` for a wanted order and ``never`` otherwise (order 9 is the PMD size)."""
    wanted = set(orders)
    plan: dict[Path, str] = {}
    if not (THP_DIR / "enabled").exists():
        return plan
    plan[THP_DIR / "enabled"] = "madvise"
    for d in sorted(THP_DIR.glob("hugepages-*kB")):
        if not (d / "enabled").exists():
            continue  # e.g. order 1: no anonymous mTHP of that size
        kb = int(d.name[len("hugepages-"):-2])
        order = (kb // 4).bit_length() - 1
        plan[d / "enabled"] = "madvise" if order in wanted else "never"
    return plan


class MachineSetup:
    """Set knobs and make a swapfile for a run; undo everything on exit, whatever happens."""

    def __init__(self, *, thp_orders: Iterable[int] | None = None, swapfile: int | None = None,
                 swap_dir: str | None = None, log: list[str] | None = None,
                 guard_ksm: bool = False, hugetlb_2m: int = 0) -> None:
        self.thp_orders = None if thp_orders is None else set(thp_orders)
        #: 2 MiB hugetlb pages to add to the pool for the run (given back afterwards).
        self.hugetlb_2m = hugetlb_2m
        self.guard_ksm = guard_ksm
        self.swapfile_size = swapfile
        self.swap_dir = swap_dir or "/var/tmp"
        self.saved: dict[Path, str] = {}
        self.swapfile: Path | None = None
        self.swap_on = False
        self.log = log if log is not None else []
        self._old_term: object = None

    def write_knob(self, path: Path, value: str) -> None:
        """Set a sysfs/procfs knob, remembering its value for :meth:`restore`."""
        try:
            if path not in self.saved:
                self.saved[path] = _choice(path)
            if _choice(path) != value:
                path.write_text(value)
                self.log.append(f"set {path} = {value} (was {self.saved[path]})")
        except OSError as exc:
            raise SetupError(f"cannot set {path} to {value}: {exc}") from None

    def __enter__(self) -> MachineSetup:
        self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            if self.thp_orders is not None:
                for path, value in thp_plan(self.thp_orders).items():
                    self.write_knob(path, value)
            if self.hugetlb_2m > 0 and HUGETLB_2M.exists():
                before = int(_choice(HUGETLB_2M))
                self.write_knob(HUGETLB_2M, str(before + self.hugetlb_2m))
            if self.guard_ksm:
                for name in KSM_KNOBS:
                    path = KSM_DIR / name
                    if path.exists():
                        self.saved.setdefault(path, _choice(path))
            if self.swapfile_size is not None:
                self._make_swapfile(self.swapfile_size)
        except BaseException:
            self.restore()
            raise
        return self

    def _make_swapfile(self, size: int) -> None:
        fd, name = tempfile.mkstemp(prefix="cowlab-real-", suffix=".swap", dir=self.swap_dir)
        self.swapfile = Path(name)
        try:
            os.fchmod(fd, 0o600)
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        for argv in (["mkswap", name], ["swapon", name]):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SetupError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
            if argv[0] == "swapon":
                self.swap_on = True
        self.log.append(f"swapfile {name} ({size >> 20} MiB) enabled")

    def restore(self) -> None:
        """Undo everything done so far (idempotent)."""
        errors = []
        if self.swap_on and self.swapfile is not None:
            proc = subprocess.run(["swapoff", str(self.swapfile)], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                errors.append(f"swapoff {self.swapfile}: {proc.stderr.strip()}")
            else:
                self.swap_on = False
        if self.swapfile is not None and not self.swap_on:
            self.swapfile.unlink(missing_ok=True)
            self.log.append(f"swapfile {self.swapfile} disabled and deleted")
            self.swapfile = None
        for path, value in reversed(list(self.saved.items())):
            try:
                if _choice(path) != value:
                    path.write_text(value)
                    self.log.append(f"restored {path} = {value}")
            except OSError as exc:
                errors.append(f"restoring {path} = {value}: {exc}")
        self.saved.clear()
        if errors:
            raise SetupError("machine set-up NOT fully restored: " + "; ".join(errors))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: types.TracebackType | None) -> None:
        try:
            self.restore()
        finally:
            signal.signal(signal.SIGTERM, self._old_term)  # type: ignore[arg-type]


def _raise_interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
