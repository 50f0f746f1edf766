"""Executors: the same sweep gives the same records in-process, on the pool and on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cowlab.evaluate import Progress, run_sweep
from cowlab.executors import (
    ExecutorError,
    InProcessExecutor,
    ProcessPoolExecutor,
    make_executor,
)
from cowlab.records import RunSpec, record_key

SPECS = [
    RunSpec(policy=p, kernel=k, workload=w, seed=s, max_decisions=60,
            workload_params=params)
    for p in ("baseline", "exclusive", "random")
    for k in ("v5.9", "v5.19")
    for w, params in (("forceswap-v1", {"swap": "pmem", "npages": 4}), ("pinned-io-v1", {}))
    for s in (0, 1)
]


def _stable(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record_key(r["config"]): {k: v for k, v in r.items() if k != "wall_s"}
            for r in records}


@pytest.fixture(scope="module")
def inprocess_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("inproc") / "r.jsonl"
    return run_sweep(SPECS, out, executor=InProcessExecutor(), progress=False).records


def test_process_pool_records_equal_inprocess_records(
    tmp_path: Path, inprocess_records: list[dict[str, Any]]
) -> None:
    pool = ProcessPoolExecutor(2)
    try:
        got = run_sweep(SPECS, tmp_path / "r.jsonl", executor=pool, progress=False).records
    finally:
        pool.close()
    assert _stable(got) == _stable(inprocess_records)
    assert len(got) == len(SPECS)


@pytest.mark.slow
def test_ray_records_equal_inprocess_records(
    tmp_path: Path, inprocess_records: list[dict[str, Any]]
) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install cowlab[ray])")
    ray_ex = make_executor("ray", workers=2)
    try:
        assert ray_ex.name == "ray"
        got = run_sweep(SPECS, tmp_path / "r.jsonl", executor=ray_ex, progress=False).records
    finally:
        ray_ex.close()
    assert _stable(got) == _stable(inprocess_records)


def test_sweep_calls_the_lifecycle_hooks_around_the_runs(tmp_path: Path) -> None:
    from cowlab import hookimpl
    from cowlab.plugins import load_registry

    seen: list[str] = []

    class Listener:
        @hookimpl
        def cowlab_run_started(self, run: Any) -> None:
            seen.append(f"start {run['todo']}")

        @hookimpl
        def cowlab_episode_finished(self, run: Any, episode: Any) -> None:
            seen.append("episode")

        @hookimpl
        def cowlab_run_finished(self, run: Any, results: Any) -> None:
            seen.append(f"finish {results['ran']}")

    reg = load_registry(extra_plugins=[("listener", Listener())])
    run_sweep(SPECS[:2], tmp_path / "r.jsonl", executor=InProcessExecutor(), progress=False,
              registry=reg)
    assert seen == ["start 2", "episode", "episode", "finish 2"]


def test_progress_shows_an_estimate_of_the_time_left() -> None:
    import io

    stream = io.StringIO()
    bar = Progress(4, workers=2, stream=stream, every_s=0.0)
    assert bar.eta_s() is None
    bar.update()
    assert "1/4 records (25%)" in stream.getvalue()
    assert "ETA 0:00:0" in stream.getvalue()


def test_unknown_executor_is_refused() -> None:
    with pytest.raises(ExecutorError, match="unknown executor"):
        make_executor("slurm")
