"""Issue 13: records say which facilities a policy read on a preset that lacks them."""

from __future__ import annotations

from typing import Any

from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView
from cowlab.kernel.presets import get_preset
from cowlab.plugins import get_registry
from cowlab.probe import ProbedPolicy
from cowlab.records import RunSpec, execute, record_digest, validate_record
from cowlab.workloads import Budget, run_workload


def _run(policy: Any, kernel: str) -> Any:
    workload = get_registry().make("workload", "pinned-io-v1", {})
    return run_workload(workload, get_preset(kernel), policy, seed=1,  # type: ignore[arg-type]
                        budget=Budget(max_decisions=80))


def test_probing_a_policy_changes_none_of_its_decisions() -> None:
    for kernel in ("v5.9", "v5.19"):
        plain = _run(get_registry().make_policy("exclusive"), kernel)
        probe = ProbedPolicy(get_registry().make_policy("exclusive"))
        probed = _run(probe, kernel)
        assert probed.decision_hash == plain.decision_hash
        assert probed.metrics == plain.metrics


def test_exclusive_reads_page_anon_exclusive_only_where_the_preset_lacks_it() -> None:
    old = execute(RunSpec(policy="exclusive", kernel="v5.9", workload="pinned-io-v1", seed=0,
                          max_decisions=60))
    new = execute(RunSpec(policy="exclusive", kernel="v5.19", workload="pinned-io-v1",
                          seed=0, max_decisions=60))
    base = execute(RunSpec(policy="baseline", kernel="v5.9", workload="pinned-io-v1", seed=0,
                           max_decisions=60))
    assert old["absent_facility_reads"] == {"anon_exclusive": 60}  # read at every decision
    assert new["absent_facility_reads"] == {} and base["absent_facility_reads"] == {}


class _FeatureReader:
    name = "feature-reader"

    def reset(self, seed: int | None) -> None:
        pass

    def decide(self, fault: FaultView) -> Decision:
        assert isinstance(fault, FaultView)  # the probe passes for a FaultView
        fault.features()
        return Decision.COPY


def test_reading_the_observation_vector_counts_as_reading_each_absent_facility() -> None:
    probe = ProbedPolicy(_FeatureReader())
    result = _run(probe, "v5.19")
    assert probe.absent_reads() == {"maybe_mapped_shared": result.decisions}
    probe = ProbedPolicy(_FeatureReader())
    result = _run(probe, "v5.9")
    assert probe.absent_reads() == {"anon_exclusive": result.decisions,
                                    "maybe_mapped_shared": result.decisions}


def test_a_record_made_before_the_field_existed_still_validates_and_a_wrong_one_does_not(
) -> None:
    rec = execute(RunSpec(policy="exclusive", kernel="v5.9", workload="forceswap-v1",
                          workload_params={"swap": "pmem"}, seed=0, max_decisions=20))
    rec.pop("wall_s")
    older = {k: v for k, v in rec.items() if k != "absent_facility_reads"}
    older["digest"] = record_digest(older)
    assert validate_record(older) == []
    edited = {**rec, "absent_facility_reads": {"anon_exclusive": 1}}
    edited["digest"] = record_digest(edited)
    assert validate_record(edited) == ["absent_facility_reads.anon_exclusive"]


class _Observer:
    """Observes as the sb3 policy does (cowlab.envcore.observe, compiled with the kernel)."""

    name = "observer"

    def __init__(self) -> None:
        self.seen: list[list[float]] = []

    def reset(self, seed: int | None) -> None:
        pass

    def decide(self, fault: FaultView) -> Decision:
        from cowlab.env import observe

        self.seen.append(observe(fault, True, 1, 4))
        return Decision.COPY


def test_a_probed_view_is_observed_as_the_view_itself() -> None:
    """The leaderboard's probe hands policies a stand-in for the FaultView; the compiled
    observation encoding takes it (it checks no class) and sees the same values."""
    plain = _Observer()
    _run(plain, "v5.9")
    observer = _Observer()
    probe = ProbedPolicy(observer)
    result = _run(probe, "v5.9")
    assert observer.seen == plain.seen and len(observer.seen) == result.decisions
    assert probe.absent_reads()["anon_exclusive"] == result.decisions
