"""The compiled and the pure-Python kernel builds (setup.py, cowlab/_build.py).

CI installs the compiled build and runs the suite against it; these tests check that
the build in use is the one cowlab says it is, and that a pure-build subprocess
(``COWLAB_PURE=1``) produces bit-identical records, scenario results and env
observations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cowlab.geometry
import cowlab.kernel.kernel
from cowlab import _build
from cowlab.plugins import get_registry
from cowlab.records import RunSpec, execute
from cowlab.scenario import format_result, run_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "experiments" / "scenarios").glob("*.yaml"))
#: (policy, kernel) pairs over every built-in workload: the era rules of three eras
#: and the oracle (whose view carries the ground truth).
RUNS = [("legacy", "v5.8"), ("baseline", "v5.9"), ("exclusive", "v5.19"),
        ("exact-mapcount", "v6.15"), ("oracle", "v5.19")]


def fingerprint() -> dict[str, Any]:
    """Every result the comparison covers, as JSON: record digests (which bind the
    metrics, counters, decision hash and simulated time) and scenario reports."""
    registry = get_registry()
    workloads = [n for n in registry.names("workload")
                 if registry.origin("workload", n).startswith("cowlab")]
    records = {}
    for workload in workloads:
        for policy, kernel in RUNS:
            spec = RunSpec(policy=policy, kernel=kernel, workload=workload, seed=1,
                           max_decisions=150)
            record = execute(spec)
            records[f"{workload}/{policy}/{kernel}"] = [record["digest"],
                                                        record["decision_hash"]]
    scenarios = {}
    for path in SCENARIOS:
        for policy in ("baseline", "exclusive"):
            result = run_scenario(path, registry.make_policy(policy))
            scenarios[f"{path.name}/{policy}"] = format_result(result)
    return {"build": _build.BUILD.kind, "records": records, "scenarios": scenarios,
            "env": env_digest()}


def env_digest() -> str:
    """sha256 of what the env hands a learner (observations, rewards, ends, infos) over
    short episodes of the training mix in both action modes: the env's per-step work
    (cowlab/envcore.py) and the workloads are compiled too."""
    import hashlib
    import random

    from cowlab.env import CowFaultEnv

    digest = hashlib.sha256()
    for name in ("fork-snapshot-v1", "softdirty-tracking-v1", "pinned-io-v1",
                 "vmsplice-pipe-v1", "forceswap-v1"):
        for mode in ("decision", "primitives"):
            env = CowFaultEnv(workload=name, action_mode=mode, max_decisions=24)
            obs, _ = env.reset(seed=3)
            digest.update(obs.tobytes())
            rng = random.Random(1)
            for _ in range(60):
                allowed = [i for i, ok in enumerate(env.action_masks().tolist()) if ok]
                obs, reward, terminated, truncated, info = env.step(
                    allowed[int(rng.random() * len(allowed))])
                digest.update(obs.tobytes())
                digest.update(repr((reward, terminated, truncated,
                                    sorted((k, repr(v)) for k, v in info.items()))).encode())
                if terminated or truncated:
                    obs, _ = env.reset()
                    digest.update(obs.tobytes())
            env.close()
    return digest.hexdigest()


def test_the_build_cowlab_reports_is_the_one_imported() -> None:
    for module in (cowlab.kernel.kernel, cowlab.geometry):
        from_source = str(module.__file__).endswith(".py")
        assert from_source == (not _build.BUILD.compiled), (module.__file__, _build.describe())


def test_version_names_the_build_and_why_it_is_pure() -> None:
    out = subprocess.run([sys.executable, "-m", "cowlab.cli", "--version"], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "COWLAB_PURE": "1"}).stdout
    assert "pure-Python kernel (COWLAB_PURE=1 is set)" in out
    here = _build.describe()
    assert here.startswith("compiled kernel" if _build.BUILD.compiled else "pure-Python kernel")


@pytest.mark.slow
def test_pure_and_compiled_builds_give_bit_identical_results() -> None:
    if not _build.BUILD.compiled:
        pytest.skip(f"no compiled build to compare with: {_build.describe()}")
    code = "import json, tests.test_build as t; print(json.dumps(t.fingerprint()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "COWLAB_PURE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    pure = json.loads(proc.stdout.splitlines()[-1])
    compiled = fingerprint()
    assert pure["build"] == "pure" and compiled["build"] == "compiled"
    assert len(compiled["records"]) >= 5 * len(RUNS) and compiled["scenarios"]
    for key, value in compiled["records"].items():
        assert pure["records"][key] == value, f"record {key} differs between the builds"
    for key, text in compiled["scenarios"].items():
        assert pure["scenarios"][key] == text, f"scenario {key} differs between the builds"
    assert pure["env"] == compiled["env"], "the env's observations differ between the builds"


def test_without_a_recorded_build_leftover_extension_modules_are_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "_compiled.json"
    manifest.write_text('{"compiled": false, "reason": "no C compiler (test)"}')
    monkeypatch.setattr(_build, "MANIFEST", manifest)
    monkeypatch.delenv("COWLAB_PURE", raising=False)
    build = _build._select()
    assert (build.kind, build.reason) == ("pure", "no C compiler (test)")
    # The source finder covers every module an extension module would shadow.
    assert set(build.modules) == _build._modules_with_extensions()


def test_an_edited_source_is_never_shadowed_by_its_stale_compiled_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "_compiled.json"
    manifest.write_text(json.dumps({"compiled": True,
                                    "modules": {"cowlab.kernel.fault": "0" * 64}}))
    monkeypatch.setattr(_build, "MANIFEST", manifest)
    monkeypatch.delenv("COWLAB_PURE", raising=False)
    if _build._extension_exists("cowlab.kernel.fault"):
        with pytest.warns(RuntimeWarning, match="fault.py changed since it was compiled"):
            build = _build._select()
    else:
        build = _build._select()
        assert "missing" in build.reason
    assert build.kind == "pure" and "cowlab.kernel.fault" in build.modules


def test_the_build_says_whether_it_is_profile_guided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # setup.py records the profile-guided build in the manifest; cowlab --version shows it.
    if not _build.BUILD.compiled:
        pytest.skip(f"no compiled build here: {_build.describe()}")
    recorded = json.loads(_build.MANIFEST.read_text(encoding="utf-8"))
    monkeypatch.delenv("COWLAB_PURE", raising=False)
    for guided in (True, False):
        manifest = tmp_path / f"{guided}.json"
        manifest.write_text(json.dumps({**recorded, "profile_guided": guided}))
        monkeypatch.setattr(_build, "MANIFEST", manifest)
        build = _build._select()
        assert build.compiled and build.profile_guided is guided
        monkeypatch.setattr(_build, "BUILD", build)
        assert ("profile-guided" in _build.describe()) is guided


def test_kernel_values_pickle_and_deep_copy_in_either_build() -> None:
    # A process pool ships kernel configs to its workers (cowlab selftest --matrix) and
    # records back; compiled classes need the reducers in cowlab/kernel/__init__.py.
    import copy
    import pickle

    from cowlab.geometry import Geometry
    from cowlab.kernel import FaultRecord, Machine, get_preset
    from cowlab.kernel.actors import ActorsConfig
    from cowlab.kernel.costs import CostModel

    record = FaultRecord("m0", 7, 1, "wp", "copy", "lock", None, True, ("lock",), 900, 42)
    record.step = 3
    values: list[Any] = [get_preset("v5.19").with_overrides({"lru_batch_size": 4}),
                         Machine(cpus=3, swap="pmem"), Geometry(paging_levels=5),
                         CostModel(), ActorsConfig()]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
    back = pickle.loads(pickle.dumps(record))
    assert back.to_dict() == record.to_dict() and back.step == 3
