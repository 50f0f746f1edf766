"""Replayable evaluation records: one JSON line per (policy, kernel, workload, seed).

A record is everything needed to reproduce one workload run and everything it
measured (CompilerGym-style): the cowlab version, the distribution and version of every
plugin that contributed (the policy's, the workload's, a plugin kernel preset's), the
resolved run config (:class:`RunSpec`), the policy's identity (for a learned agent the
sha256 of its model file), the code fingerprint (``code``: cowlab's build id and a
content hash of the policy's and the workload's plugin code, :mod:`cowlab.version`),
the metrics and debug counters, the sha256 of the full write-attempt sequence and the
kernel facilities the policy read on a preset that lacks them (:mod:`cowlab.probe`).
:func:`execute` makes a record from a spec; :func:`validate_record` replays one and
names the first fields that differ. :func:`staleness` says why a stored record no
longer describes the code that would run it now (a sweep reruns such records).

The wall time of a run is not part of the record file: :func:`execute` returns it as
``wall_s`` and the writer moves it to a sidecar (``records.jsonl.timing.jsonl``), so
two files with the same runs are byte-identical and diffs show only results.

Records files are append-only JSON Lines. :class:`RecordWriter` appends each line with a
single ``os.write`` on an ``O_APPEND`` descriptor followed by ``fsync``, so a crash can
at worst leave a torn last line, which :func:`read_records` detects and drops (with a
warning) and :func:`repair` truncates before a sweep resumes.

    >>> spec = RunSpec(policy="exclusive", kernel="v5.19", workload="forceswap-v1",
    ...                workload_params={"swap": "pmem"}, seed=0, max_decisions=20)
    >>> rec = execute(spec)
    >>> rec["metrics"]["decisions"], rec["policy"]["kind"], validate_record(rec)
    (20, 'kernel', [])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cowlab import __version__
from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.errors import KernelError, StallError
from cowlab.kernel.fault import PolicyError
from cowlab.kernel.kernel import Machine
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.kernels import resolve_kernel
from cowlab.plugins import PluginError, PluginRegistry, Registration, get_registry
from cowlab.probe import ProbedPolicy
from cowlab.version import build_id, code_hash
from cowlab.workloads.base import Budget, Workload, run_workload

__all__ = [
    "RECORD_FORMAT",
    "REFERENCE_POLICIES",
    "VOLATILE_FIELDS",
    "RecordError",
    "RecordWriter",
    "RunError",
    "RunSpec",
    "execute",
    "policy_kind",
    "read_records",
    "record_digest",
    "record_key",
    "repair",
    "run_guard",
    "staleness",
    "validate_record",
]

#: Version tag of the record layout (a change of layout gets a new tag).
RECORD_FORMAT = "cowlab-record-v1"

#: Fields that legitimately differ between two runs of the same spec (not validated,
#: not digested, never written to the records file).
VOLATILE_FIELDS = frozenset({"wall_s"})
#: Provenance that validate does not compare (a replay under newer code reproduces the
#: results or not; which code made the record is reported by :func:`staleness`).
PROVENANCE_FIELDS = frozenset({"code"})
#: Top-level fields added to the format after records existed without them: a stored
#: record without one still validates (it is compared only when the record has it).
ADDED_FIELDS = frozenset({"absent_facility_reads"})

#: Trivial bounds, labelled ``reference`` in tables.
REFERENCE_POLICIES = frozenset({"always-copy", "always-reuse", "random"})

_HOME_DIST = "cowlab"


class RecordError(ValueError):
    """A records file or record that cannot be used (bad JSON in the middle, bad fields)."""


class RunError(RuntimeError):
    """A run that failed: a policy's ``reset``/``decide`` raised (even ``SystemExit``), or
    the simulated kernel rejected the run. The message names the run (policy, workload,
    kernel, seed); it is a plain message, so it crosses process boundaries (pickles)."""


#: Set to get the original traceback of a failing run instead of a :class:`RunError`.
TRACEBACK_ENV = "COWLAB_TRACEBACK"


@contextlib.contextmanager
def run_guard(what: str, *, passthrough: tuple[type[BaseException], ...] = ()
              ) -> Iterator[None]:
    """Turn any failure of a policy or workload run into a :class:`RunError` naming ``what``.

    ``SystemExit`` raised by plugin code is an error too (a policy must not end the
    process: it would exit with status 0 and no output). ``KeyboardInterrupt`` and the
    exception types in ``passthrough`` (already located errors) pass unchanged.
    """
    passing: tuple[type[BaseException], ...] = (RunError, *passthrough)
    try:
        yield
    except passing:
        raise
    except SystemExit as exc:
        raise RunError(f"{what}: plugin code raised SystemExit({exc.code!r}); a policy or "
                       "workload must not exit the process") from None
    except (KernelError, PolicyError, PluginError) as exc:
        raise RunError(f"{what}: {exc}") from None
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        raise RunError(f"{what}: {type(exc).__name__}: {exc} "
                       f"(set {TRACEBACK_ENV}=1 for the traceback)") from None


@dataclass(frozen=True)
class RunSpec:
    """The resolved config of one run: what a record replays.

    Attributes:
        policy: Policy name (``exclusive``, ``sb3:path/model.zip``, a plugin's name).
        kernel: Kernel preset (``v5.19``) or a plugin preset's name.
        workload: Registered workload id (``forceswap-v1``).
        seed: Workload (and policy) seed.
        max_decisions: The run's budget in policy decisions.
        policy_params: The policy's parameters.
        facilities: Facility overrides applied to the preset.
        workload_params: The workload's parameters.
        machine: Machine fields (``cpus``, ``swap``...) over the defaults.
        geometry: Geometry fields (``paging_levels``...) over the defaults.
    """

    policy: str
    kernel: str
    workload: str
    seed: int
    max_decisions: int = 2_000
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    facilities: Mapping[str, Any] = field(default_factory=dict)
    workload_params: Mapping[str, Any] = field(default_factory=dict)
    machine: Mapping[str, Any] = field(default_factory=dict)
    geometry: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the record's ``config``); :meth:`from_dict` inverts it."""
        return {
            "policy": self.policy,
            "policy_params": dict(self.policy_params),
            "kernel": self.kernel,
            "facilities": dict(self.facilities),
            "workload": self.workload,
            "workload_params": dict(self.workload_params),
            "seed": self.seed,
            "max_decisions": self.max_decisions,
            "machine": dict(self.machine),
            "geometry": dict(self.geometry),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """The spec of a record's ``config``.

        Raises:
            RecordError: Missing or unknown keys.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecordError(f"config: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise RecordError(f"config: {exc}") from None

    @property
    def key(self) -> str:
        """Identity of the run within a records file (resume skips finished keys)."""
        return record_key(self.to_dict())


def record_key(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a run config: two configs are the same run iff keys are equal."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


# ----------------------------------------------------------------------------- running


def _registration_name(registry: PluginRegistry, policy: str) -> str:
    """``sb3:path`` -> ``sb3``; any registered name -> itself."""
    if policy in registry.names("policy"):
        return policy
    return policy.partition(":")[0]


def _plugin_entry(reg: Registration) -> dict[str, Any]:
    return {"plugin": reg.plugin, "dist": reg.dist, "version": reg.version}


def policy_kind(registry: PluginRegistry, policy_name: str, policy: object) -> str:
    """``oracle``, ``learned``, ``reference``, ``third-party`` or ``kernel``.

    Args:
        registry: The registry the policy came from.
        policy_name: Its name as given (``sb3:PATH`` included).
        policy: The policy object (``oracle = True`` marks an oracle).
    """
    if getattr(policy, "oracle", False):
        return "oracle"
    reg = registry.get("policy", _registration_name(registry, policy_name))
    if reg.name == "sb3":
        return "learned"
    if reg.dist is None or reg.dist.replace("_", "-").lower() != _HOME_DIST:
        return "third-party"
    if reg.name in REFERENCE_POLICIES:
        return "reference"
    return "kernel"


def _file_sha256(path: str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def still_current(record: Mapping[str, Any]) -> bool:
    """Whether a stored record still describes the policy it names: a learned agent's
    record is stale once the model file at that path has changed (retrained), so a
    resumed sweep must run it again instead of reusing it."""
    identity = record.get("policy")
    if not isinstance(identity, Mapping) or "sha256" not in identity:
        return True
    config = record.get("config", {})
    path = dict(config.get("policy_params") or {}).get("path")
    if path is None:
        path = str(config.get("policy", "")).partition(":")[2]
    return bool(path) and _file_sha256(str(path)) == identity["sha256"]


def code_fingerprint(config: Mapping[str, Any], registry: PluginRegistry | None = None
                     ) -> dict[str, Any]:
    """What code a run of ``config`` executes now: cowlab's build and the content hash of
    the packages that define its policy and workload factories (``code`` of a record)."""
    reg = registry or get_registry()
    policy = str(config.get("policy", ""))
    out: dict[str, Any] = {"cowlab_build": build_id()}
    try:
        pol = reg.get("policy", _registration_name(reg, policy))
        out["policy"] = code_hash(getattr(pol.factory, "__module__", "") or "")
    except PluginError:
        out["policy"] = None
    try:
        wl = reg.get("workload", str(config.get("workload", "")))
        out["workload"] = code_hash(getattr(wl.factory, "__module__", "") or "")
    except PluginError:
        out["workload"] = None
    return out


def staleness(record: Mapping[str, Any], registry: PluginRegistry | None = None
              ) -> str | None:
    """Why ``record`` no longer describes what its config would run now (None: current).

    A record is stale when cowlab's version or build changed, when the code of the
    policy's or the workload's plugin package changed (an edited ``decide`` in an
    editable install), or when a learned agent's model file changed (retrained).
    """
    if record.get("cowlab_version") != __version__:
        return f"cowlab version {record.get('cowlab_version')} -> {__version__}"
    config = record.get("config")
    if not isinstance(config, Mapping):
        return "no config"
    if not still_current(record):
        return "model file changed"
    stored = record.get("code")
    if not isinstance(stored, Mapping):
        return "no code fingerprint (written by an older cowlab)"
    now = code_fingerprint(config, registry)
    if stored.get("cowlab_build") != now["cowlab_build"]:
        return "cowlab build changed"
    if stored.get("policy") != now["policy"]:
        return f"code of policy {config.get('policy')!r} changed"
    if stored.get("workload") != now["workload"]:
        return f"code of workload {config.get('workload')!r} changed"
    return None


def _kernel_config(spec: RunSpec, registry: PluginRegistry) -> tuple[KernelConfig, list[Any]]:
    base = resolve_kernel(spec.kernel)
    contributors: list[Any] = []
    if spec.kernel in registry.names("kernel"):
        contributors.append(registry.get("kernel", spec.kernel))
    config = base.with_overrides(dict(spec.facilities)) if spec.facilities else base
    return config, contributors


def _policy_cache_key(spec: RunSpec) -> str:
    return json.dumps([spec.policy, dict(spec.policy_params)], sort_keys=True, default=str)


# Policies are built once per process (an sb3 model loads in about a second); the
# kernel calls reset(seed) at the start of every run, so reuse does not change results.
_POLICIES: dict[str, object] = {}


def execute(spec: RunSpec | Mapping[str, Any], *, registry: PluginRegistry | None = None
            ) -> dict[str, Any]:
    """Run one spec and return its record (a JSON-friendly dict).

    This is the one function every executor runs; it depends only on the spec, so the
    record is the same (apart from ``wall_s``) wherever it runs.

    Args:
        spec: The run, or its ``to_dict()`` form (what executors ship to workers).
        registry: Plugin registry (default: the process-wide one).
    """
    if not isinstance(spec, RunSpec):
        spec = RunSpec.from_dict(spec)
    reg = registry or get_registry()
    start = time.perf_counter()
    config, contributors = _kernel_config(spec, reg)
    cache_key = _policy_cache_key(spec)
    what = (f"run of {spec.policy} on {spec.workload} / {spec.kernel} / seed {spec.seed}")
    try:
        with run_guard(what, passthrough=(StallError,)):
            policy = _POLICIES.get(cache_key)
            if policy is None:
                policy = _POLICIES[cache_key] = reg.make_policy(
                    spec.policy, dict(spec.policy_params), where="policy")
            workload = cast(Workload, reg.make("workload", spec.workload,
                                               dict(spec.workload_params), where="workload"))
            machine = Machine(**dict(spec.machine))
            geometry = Geometry(**dict(spec.geometry)) if spec.geometry else DEFAULT_GEOMETRY
            # Count reads of facilities this preset lacks (cowlab/probe.py); an oracle
            # reads the ground truth instead and is run as it is.
            probe = None if getattr(policy, "oracle", False) else ProbedPolicy(policy)
            result = run_workload(
                workload,
                config,
                cast(Policy, probe or policy),
                seed=spec.seed,
                budget=Budget(max_decisions=spec.max_decisions),
                machine=machine,
                params=dict(spec.workload_params),
                geometry=geometry,
            )
    except StallError as exc:
        # A stalled run is an error, never a record: its figures would describe a run
        # that did not happen.
        raise StallError(
            f"run of workload {spec.workload} {dict(spec.workload_params) or ''} on kernel "
            f"{spec.kernel}, policy {spec.policy}, seed {spec.seed}: {exc.message}",
            exc.blocked,
            exc.time_ns,
        ) from None
    pol_reg = reg.get("policy", _registration_name(reg, spec.policy))
    wl_reg = reg.get("workload", spec.workload)
    plugins: dict[str, dict[str, Any]] = {}
    for r in (pol_reg, wl_reg, *contributors):
        plugins.setdefault(r.plugin, _plugin_entry(r))
    identity: dict[str, Any] = {
        "name": spec.policy,
        "registration": pol_reg.name,
        "kind": policy_kind(reg, spec.policy, policy),
        "origin": reg.origin("policy", pol_reg.name),
    }
    path = dict(spec.policy_params).get("path")
    if path is None and pol_reg.name != spec.policy:
        path = spec.policy.partition(":")[2]
    if path:
        identity["sha256"] = _file_sha256(str(path))
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "cowlab_version": __version__,
        "plugins": [plugins[k] for k in sorted(plugins)],
        "config": spec.to_dict(),
        "policy": identity,
        "metrics": result.metrics,
        "counters": dict(sorted(result.counters.items())),
        "decisions": result.decisions,
        "sim_time_ns": result.sim_time_ns,
        "decision_hash": result.decision_hash,
        "absent_facility_reads": probe.absent_reads() if probe is not None else {},
        "code": code_fingerprint(spec.to_dict(), reg),
    }
    record["digest"] = record_digest(record)
    record["wall_s"] = round(time.perf_counter() - start, 6)
    return record


def record_digest(record: Mapping[str, Any]) -> str:
    """sha256 of a record's canonical JSON without ``wall_s`` and ``digest``.

    It binds the config to the results: a hand edit that happens to replay cleanly (a
    seed the workload ignores, say) still no longer matches the digest.
    """
    import hashlib

    body = {k: v for k, v in record.items() if k not in VOLATILE_FIELDS and k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- validation


def _diff(a: object, b: object, path: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b), key=str):
            if (k in VOLATILE_FIELDS or k in PROVENANCE_FIELDS or k == "digest") and not path:
                continue
            if not path and k in ADDED_FIELDS and k not in a:
                continue
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(sub)
            else:
                _diff(a[k], b[k], sub, out)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out)
        return
    if a != b or isinstance(a, bool) != isinstance(b, bool):
        out.append(path or "<record>")


def validate_record(record: Mapping[str, Any], *, registry: PluginRegistry | None = None
                    ) -> list[str]:
    """Replay a record; return the dotted names of the fields that differ (empty: reproduced).

    Everything but ``wall_s`` and the provenance ``code`` is compared: a hand-edited
    metric, hash, version or config value shows up as a differing field, and any edit
    breaks the record's ``digest`` (reported first), even one that replays cleanly.

    Raises:
        RecordError: The record has no usable ``config``.
    """
    config = record.get("config")
    if not isinstance(config, Mapping):
        raise RecordError("record has no 'config' mapping")
    replay = execute(RunSpec.from_dict(config), registry=registry)
    diffs: list[str] = []
    _diff(dict(record), replay, "", diffs)
    # The digest is checked against the record itself (the replay's digest covers its
    # own provenance, which may differ): any hand edit breaks it.
    if record.get("digest") != record_digest(json.loads(json.dumps(record))):
        diffs.insert(0, "digest (the record was edited after it was written)")
    return diffs


# -------------------------------------------------------------------------------- files


def _parse_lines(data: bytes, path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a file's bytes and the length of its well-formed prefix."""
    records: list[dict[str, Any]] = []
    good = 0
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line.strip():
            if not last:
                good += len(line) + 1
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            if last:  # a torn tail: the crash happened mid-write
                warnings.warn(
                    f"{path}: dropping a torn last line ({len(line)} bytes) left by an "
                    "interrupted write", RuntimeWarning, stacklevel=3)
                break
            raise RecordError(f"{path}:{i + 1}: not a JSON record: {exc}") from None
        if last:  # complete JSON without its newline: keep it, the writer always adds one
            records.append(rec)
            good += len(line)
            break
        records.append(rec)
        good += len(line) + 1
    return records, good


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file; a torn last line is dropped with a warning.

    Raises:
        RecordError: A line other than the last is not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        return []
    records, _ = _parse_lines(p.read_bytes(), p)
    return records


def repair(path: str | Path) -> list[dict[str, Any]]:
    """Read a records file and truncate a torn last line so appends start on a clean line."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    records, good = _parse_lines(data, p)
    if good < len(data) or (data and not data.endswith(b"\n")):
        with open(p, "r+b") as f:
            f.truncate(good)
            if good and not data[:good].endswith(b"\n"):
                f.seek(good)
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
    return records


def _line(record: Mapping[str, Any]) -> bytes:
    """A record's line in a records file: canonical JSON without the volatile fields."""
    body = {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}
    return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()


def timing_path(path: str | Path) -> Path:
    """The sidecar of a records file that keeps each run's wall time (not compared)."""
    p = Path(path)
    return p.with_name(p.name + ".timing.jsonl")


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in the canonical order of a records file: by :func:`record_key`."""
    return sorted(records, key=lambda r: record_key(r.get("config", {})))


def rewrite(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace a records file by ``records`` atomically (temp file, fsync, os.replace).

    The records are written in canonical order (:func:`sort_records`) without their
    volatile fields, so the file is a function of the set of runs it holds, whatever
    order an executor finished them in.
    """
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        for record in sort_records(records):
            f.write(_line(record))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


class RecordWriter:
    """Append records to a JSON Lines file, one atomic ``os.write`` + ``fsync`` per line.

    A record's ``wall_s`` goes to the timing sidecar (:func:`timing_path`), not the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._timing = timing_path(self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a single line (and its wall time to the sidecar)."""
        line = _line(record)
        written = os.write(self._fd, line)
        if written != len(line):  # pragma: no cover - regular files write fully
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        if "wall_s" in record:
            with open(self._timing, "a", encoding="utf-8") as f:
                f.write(json.dumps({"digest": record.get("digest"),
                                    "wall_s": record["wall_s"]}) + "\n")

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_files(paths: list[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(file, line number, record)`` for every record of every file."""
    for path in paths:
        for i, rec in enumerate(read_records(path), start=1):
            yield path, i, rec
