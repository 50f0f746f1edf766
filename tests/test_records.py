"""Records: replay with validate, tampering caught, atomic append, torn lines, resume."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main
from cowlab.evaluate import run_sweep
from cowlab.executors import InProcessExecutor
from cowlab.records import (
    RecordWriter,
    RunSpec,
    execute,
    read_records,
    record_key,
    repair,
    validate_record,
)

FORCESWAP = {"swap": "pmem", "npages": 4, "nthreads": 1}


def _spec(seed: int = 0, policy: str = "exclusive") -> RunSpec:
    return RunSpec(policy=policy, kernel="v5.19", workload="forceswap-v1",
                   workload_params=FORCESWAP, seed=seed, max_decisions=40)


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return execute(_spec())


def test_record_carries_versions_config_identity_metrics_hash_and_wall_time(
    record: dict[str, Any],
) -> None:
    assert record["format"] == "cowlab-record-v1"
    assert record["cowlab_version"]
    assert {"plugin", "dist", "version"} <= set(record["plugins"][0])
    assert {p["dist"] for p in record["plugins"]} == {"cowlab"}
    assert RunSpec.from_dict(record["config"]) == _spec()
    assert record["policy"]["kind"] == "kernel"
    m = record["metrics"]
    for key in ("reuse_rate", "violations", "unnecessary_copies_by_blocker",
                "mean_latency_ns", "p99_latency_ns", "extra_pages"):
        assert key in m
    assert record["counters"]["pgfault"] > 0
    assert len(record["decision_hash"]) == 64
    assert record["wall_s"] > 0


def test_learned_policy_identity_is_the_model_sha256(tmp_path: Path) -> None:
    from cowlab.plugins import get_registry
    from cowlab.records import policy_kind

    reg = get_registry()
    assert policy_kind(reg, "sb3:x.zip", object()) == "learned"
    assert policy_kind(reg, "oracle", reg.make_policy("oracle")) == "oracle"
    assert policy_kind(reg, "random", reg.make_policy("random")) == "reference"


def test_an_untouched_record_is_reproduced(record: dict[str, Any]) -> None:
    assert validate_record(json.loads(json.dumps(record))) == []


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("metrics", "reuse_rate"), 0.5, "metrics.reuse_rate"),
        (("metrics", "violations", "leak"), 1, "metrics.violations.leak"),
        (("counters", "pgfault"), 1, "counters.pgfault"),
        (("decision_hash",), "0" * 64, "decision_hash"),
        (("cowlab_version",), "9.9.9", "cowlab_version"),
        (("config", "seed"), 7, "digest (the record was edited after it was written)"),
    ],
)
def test_validate_names_the_field_a_hand_edit_changed(
    record: dict[str, Any], path: tuple[str, ...], value: object, field: str
) -> None:
    tampered = copy.deepcopy(record)
    node = tampered
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert field in validate_record(tampered)


def test_an_edited_seed_is_caught_by_the_replay_of_a_seed_sensitive_workload() -> None:
    spec = RunSpec(policy="baseline", kernel="v5.19", workload="pinned-io-v1", seed=0,
                   max_decisions=60)
    rec = execute(spec)
    rec["config"]["seed"] = 1
    diffs = validate_record(rec)
    assert "decision_hash" in diffs
    assert diffs[0].startswith("digest")


def test_validate_ignores_wall_time(record: dict[str, Any]) -> None:
    assert validate_record({**record, "wall_s": 123.0}) == []


def test_validate_command_exits_1_and_names_the_field(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      record: dict[str, Any]) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    with RecordWriter(good) as w:
        w.write(record)
    tampered = copy.deepcopy(record)
    tampered["metrics"]["p99_latency_ns"] += 1
    with RecordWriter(bad) as w:
        w.write(record)
        w.write(tampered)
    assert main(["validate", str(good)]) == 0
    assert "reproduced" in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced: differs in digest" in out
    assert "metrics.p99_latency_ns" in out
    assert "2/3 records reproduced, 1 not" in out


def test_writer_appends_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with RecordWriter(path) as w:
        w.write({"a": 1})
    with RecordWriter(path) as w:
        w.write({"b": 2})
    assert path.read_text().splitlines() == ['{"a":1}', '{"b":2}']


def test_a_torn_last_line_is_dropped_with_a_warning_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    with pytest.warns(RuntimeWarning, match="torn last line"):
        assert read_records(path) == [{"a": 1}, {"b": 2}]
    with pytest.warns(RuntimeWarning):
        repair(path)
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    from cowlab.records import RecordError

    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a":1}\nnot json\n{"b":2}\n')
    with pytest.raises(RecordError, match=":2:"):
        read_records(path)


def test_sweep_skips_records_already_in_the_file(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    ex = InProcessExecutor()
    first = run_sweep([_spec(0), _spec(1)], out, executor=ex, progress=False)
    assert (first.ran, first.skipped) == (2, 0)
    second = run_sweep([_spec(0), _spec(1), _spec(2)], out, executor=ex, progress=False)
    assert (second.ran, second.skipped) == (1, 2)
    keys = [record_key(r["config"]) for r in read_records(out)]
    assert len(keys) == len(set(keys)) == 3


def test_eval_command_writes_records_for_every_policy_and_seed(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    code = main(["eval", "--policy", "exclusive", "--policy", "oracle", "--workload",
                 "forceswap-v1", "--param", "swap=pmem", "--param", "npages=4", "--kernel",
                 "v5.19", "--seeds", "0-2", "--decisions", "30", "--out", str(out),
                 "--executor", "inprocess", "--quiet"])
    assert code == 0
    recs = read_records(out)
    assert sorted((r["config"]["policy"], r["config"]["seed"]) for r in recs) == [
        (p, s) for p in ("exclusive", "oracle") for s in range(3)]
    assert recs[0]["config"]["workload_params"] == {"swap": "pmem", "npages": 4}


def test_eval_command_reports_an_unknown_policy_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", "--policy", "exclusve", "--workload", "forceswap-v1",
                 "--out", str(tmp_path / "r.jsonl")])
    assert code == 2
    assert "exclusve" in capsys.readouterr().err


def test_eval_command_takes_a_training_config(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    code = main(["eval", "configs/exclusive.yaml", "eval.seeds=1", "eval.max_decisions=20",
                 "--policy", "exclusive", "--out", str(out), "--executor", "inprocess",
                 "--quiet"])
    assert code == 0
    recs = read_records(out)
    assert len(recs) == 5  # the five workloads of the mix, one seed
    assert all(r["config"]["seed"] == 1 << 31 for r in recs)


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_completion_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    args = [sys.executable, "-m", "cowlab.cli", "eval", "--policy", "baseline",
            "--policy", "exclusive", "--workload", "forceswap-v1", "--param", "swap=pmem",
            "--kernel", "v5.19", "--seeds", "0-19", "--decisions", "300", "--out", str(out),
            "--executor", "inprocess", "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(read_records(out))
    assert 3 <= before < 40, "the sweep should have been killed mid-way"
    # A crash can tear the last line: simulate one on top of the kill.
    with open(out, "ab") as f:
        f.write(b'{"config": {"policy": "bas')
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "torn last line" in done.stderr
    recs = read_records(out)
    keys = [record_key(r["config"]) for r in recs]
    assert len(keys) == len(set(keys)) == 40
    assert f"({before} reused, {40 - before} new)" in done.stdout


def test_a_resumed_sweep_reruns_the_records_of_a_retrained_model(tmp_path: Path) -> None:
    """A record names its model by path and sha256; once the file changes (retrained), a
    resumed sweep drops the stale records and runs those cells again."""
    from cowlab.records import still_current

    model = tmp_path / "model.zip"
    model.write_bytes(b"first")
    import hashlib

    record = {"config": {"policy": f"sb3:{model}", "policy_params": {}},
              "policy": {"sha256": hashlib.sha256(b"first").hexdigest()}}
    assert still_current(record)
    model.write_bytes(b"retrained")
    assert not still_current(record)
    assert still_current({"config": {"policy": "exclusive"}, "policy": {"name": "exclusive"}})


# ------------------------------------------------------------- stale records (issue 16)

PLUGIN_SRC = """
from cowlab import Decision, hookimpl


class Edited:
    name = "edited"

    def reset(self, seed):
        pass

    def decide(self, view):
        return Decision.{decision}


@hookimpl
def cowlab_register_policies(register):
    register("edited", Edited, description="a policy whose code the test edits")
"""


@pytest.fixture
def edited_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real plugin package on disk (``edited_pkg``), registered in the process-wide
    registry; returns its source file so a test can edit it."""
    import importlib

    from cowlab import plugins
    from cowlab.version import code_hash

    pkg = tmp_path / "src" / "edited_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_SRC.format(decision="REUSE"))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    module = importlib.import_module("edited_pkg")
    registry = plugins.load_registry(extra_plugins=[("edited_pkg", module)])
    monkeypatch.setattr(plugins, "_cached", registry)
    code_hash.cache_clear()
    yield pkg / "__init__.py"
    code_hash.cache_clear()
    sys.modules.pop("edited_pkg", None)


def test_a_sweep_reruns_records_whose_policy_code_changed_and_says_why(
    tmp_path: Path, edited_plugin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cowlab.version import code_hash

    out = tmp_path / "r.jsonl"
    specs = [_spec(s, policy="edited") for s in (0, 1)]
    first = run_sweep(specs, out, executor=InProcessExecutor(), progress=False)
    assert (first.ran, first.skipped, first.stale) == (2, 0, {})
    again = run_sweep(specs, out, executor=InProcessExecutor(), progress=False)
    assert (again.ran, again.skipped) == (0, 2)
    assert "reusing 2 record(s)" in capsys.readouterr().err
    # Edit decide() (an editable install): the old records no longer describe the code.
    edited_plugin.write_text(PLUGIN_SRC.format(decision="COPY"))
    code_hash.cache_clear()  # a new process would hash the file afresh
    rerun = run_sweep(specs, out, executor=InProcessExecutor(), progress=False)
    assert (rerun.ran, rerun.skipped) == (2, 0)
    assert rerun.stale == {"code of policy 'edited' changed": 2}
    assert "2 record(s) in" in capsys.readouterr().err
    assert "2 rerun because the code changed" in rerun.describe()
    recs = read_records(out)
    assert len(recs) == 2  # replaced, not duplicated
    assert all(r["code"]["policy"] == code_hash("edited_pkg") for r in recs)


def test_staleness_names_a_changed_cowlab_build_version_or_workload(
    record: dict[str, Any],
) -> None:
    from cowlab.records import staleness

    assert staleness(record) is None
    assert staleness({**record, "code": {**record["code"], "cowlab_build": "src-0"}}) == (
        "cowlab build changed")
    assert staleness({**record, "code": {**record["code"], "workload": "src-0"}}) == (
        "code of workload 'forceswap-v1' changed")
    assert str(staleness({**record, "cowlab_version": "0.0.1"})).startswith(
        "cowlab version 0.0.1")
    old = {k: v for k, v in record.items() if k != "code"}
    assert "older cowlab" in str(staleness(old))


def test_build_id_is_a_content_hash_of_cowlabs_sources() -> None:
    import hashlib

    import cowlab
    from cowlab.version import build_id, source_files_hash

    root = Path(cowlab.__file__).parent
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    assert build_id() == "src-" + source_files_hash(files, root)[:16]
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    assert build_id() == "src-" + digest.hexdigest()[:16]


class _Reversed(InProcessExecutor):
    """An executor that finishes runs in the reverse order (a pool may finish any order)."""

    def map_unordered(self, specs: Any) -> Any:
        return reversed(list(super().map_unordered(specs)))


def test_records_file_is_the_same_bytes_whatever_the_completion_order(tmp_path: Path) -> None:
    specs = [_spec(s, policy=p) for p in ("exclusive", "baseline") for s in range(3)]
    run_sweep(specs, tmp_path / "a.jsonl", executor=InProcessExecutor(), progress=False)
    run_sweep(specs, tmp_path / "b.jsonl", executor=_Reversed(), progress=False)
    a, b = (tmp_path / "a.jsonl").read_bytes(), (tmp_path / "b.jsonl").read_bytes()
    assert a == b
    keys = [record_key(r["config"]) for r in read_records(tmp_path / "a.jsonl")]
    assert keys == sorted(keys)


def test_wall_time_is_kept_out_of_the_records_file(tmp_path: Path) -> None:
    from cowlab.records import timing_path

    out = tmp_path / "r.jsonl"
    result = run_sweep([_spec(0), _spec(1)], out, executor=InProcessExecutor(), progress=False)
    assert all(r["wall_s"] > 0 for r in result.records)  # in memory, for progress/ETA
    assert b"wall_s" not in out.read_bytes()
    timings = [json.loads(line) for line in timing_path(out).read_text().splitlines()]
    assert {t["digest"] for t in timings} == {r["digest"] for r in result.records}
    assert all(validate_record(r) == [] for r in read_records(out))


def test_validate_of_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nofile.jsonl")]) == 2
    assert "nofile.jsonl: no such records file" in capsys.readouterr().err


def test_validate_of_a_file_without_records_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["validate", str(empty)]) == 1
    assert "no records to validate" in capsys.readouterr().err


def test_eval_rejects_a_non_positive_decision_budget(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--policy", "exclusive", "--workload", "forceswap-v1",
                 "--decisions", "-5"]) == 2
    assert "--decisions: must be at least 1, got -5" in capsys.readouterr().err


def test_a_sweep_keeps_the_records_of_runs_it_does_not_ask_for(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    run_sweep([_spec(0), _spec(1)], out, executor=InProcessExecutor(), progress=False)
    old = read_records(out)
    old[0].pop("code")  # as written by a cowlab before code fingerprints
    from cowlab.records import record_digest, rewrite

    old[0]["digest"] = record_digest(old[0])
    rewrite(out, old)
    run_sweep([_spec(2)], out, executor=InProcessExecutor(), progress=False)
    assert len(read_records(out)) == 3  # the other runs' records, stale or not, stay


def test_a_record_written_before_code_fingerprints_still_validates(
    record: dict[str, Any],
) -> None:
    from cowlab.records import record_digest

    old = {k: v for k, v in record.items() if k not in ("code", "wall_s")}
    old["digest"] = record_digest(old)
    assert validate_record(old) == []
    edited = copy.deepcopy(old)
    edited["metrics"]["reuse_rate"] = 0.5
    assert validate_record(edited)[0].startswith("digest")
