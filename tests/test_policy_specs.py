"""Issue 13: ``--policy NAME:KEY=VALUE,...`` everywhere a policy is named, and the warning
about plugins that failed to load (once per process, on every command but ``plugins``)."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab import plugins
from cowlab.cli import main
from cowlab.plugins import PluginError, UnknownNameError, get_registry

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "experiments" / "scenarios" / "fork-child-live.yaml"


# ------------------------------------------------------------------------- the grammar


@pytest.mark.parametrize(("spec", "expected"), [
    ("exclusive", ("exclusive", {})),
    ("random:p_reuse=0.3", ("random", {"p_reuse": "0.3"})),
    ("random: p_reuse = 0.3", ("random", {"p_reuse": "0.3"})),
    ("sb3:runs/a/model.zip", ("sb3", {"path": "runs/a/model.zip"})),
    ("sb3:runs/lr=3/model,v2.zip", ("sb3", {"path": "runs/lr=3/model,v2.zip"})),
    ("sb3:path=runs/a/model.zip,trust=true", ("sb3", {"path": "runs/a/model.zip",
                                                      "trust": "true"})),
])
def test_a_policy_spec_splits_into_its_name_and_inline_parameters(
    spec: str, expected: tuple[str, dict[str, str]]
) -> None:
    assert get_registry().parse_policy_spec(spec) == expected


def test_the_canonical_form_converts_values_and_keeps_a_path_in_the_name() -> None:
    reg = get_registry()
    assert reg.canonical_policy("random:p_reuse=0.30") == ("random", {"p_reuse": 0.3})
    assert reg.canonical_policy("random:p_reuse=0.3") == reg.canonical_policy("random",
                                                                             {"p_reuse": 0.3})
    assert reg.canonical_policy("random") == ("random", {})
    # the legacy sb3:PATH form and sb3:path=PATH are the same runs (records keep their keys)
    assert reg.canonical_policy("sb3:path=m.zip") == reg.canonical_policy("sb3:m.zip") == (
        "sb3:m.zip", {})
    assert reg.canonical_policy("sb3:path=m.zip,trust=yes") == ("sb3:m.zip", {"trust": True})


@pytest.mark.parametrize(("spec", "words"), [
    ("random:p_reuse=abc", "parameter 'p_reuse' of policy 'random': expected float"),
    ("random:p_reuse=2", "bad parameters for policy 'random': p_reuse must be within 0..1"),
    ("random:q=1", "unknown parameter 'q' for policy 'random'"),
    ("exclusive:x=1", "policy 'exclusive' takes no parameters (got x)"),
    ("exclusive:foo", "policy 'exclusive' takes no path"),
    ("random:p_reuse=1,p_reuse=2", "parameter 'p_reuse' given twice"),
    ("random:", "needs KEY=VALUE parameters after ':'"),
    ("sb3:", "needs a path (or KEY=VALUE parameters) after ':'"),
    ("random:p_reuse=0.1,oops", "'oops' is not KEY=VALUE"),
    ("nope:x=1", "unknown policy 'nope'"),
    ("sb3:trust=true", "policy 'sb3' needs parameter(s) 'path'"),
])
def test_a_bad_policy_spec_is_an_error_naming_the_policy_and_parameter(
    spec: str, words: str
) -> None:
    with pytest.raises((PluginError, UnknownNameError)) as info:
        get_registry().canonical_policy(spec, where="--policy")
    assert words in str(info.value) and str(info.value).startswith("--policy: ")
    with pytest.raises((PluginError, UnknownNameError)):
        get_registry().make_policy(spec)


def test_make_policy_builds_the_parameterised_policy() -> None:
    policy = get_registry().make_policy("random:p_reuse=0.25")
    assert policy.p_reuse == 0.25  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="given both in the name and separately"):
        get_registry().make_policy("random:p_reuse=0.25", {"p_reuse": 0.5})


# ------------------------------------------------------------------- every command


BAD = "random:p_reuse=1.5"
BAD_WORDS = "bad parameters for policy 'random': p_reuse must be within 0..1, got 1.5"


@pytest.mark.parametrize("argv", [
    ["scenario", "run", str(SCENARIO), "--policy", BAD],
    ["workload", "run", "forceswap-v1", "--policy", BAD, "--decisions", "5"],
    ["selftest", "--policy", BAD],
    ["verify", "--policy", BAD, "--depth", "1"],
    ["eval", "--policy", BAD, "--workload", "forceswap-v1", "--decisions", "5"],
    ["eval", "configs/exclusive.yaml", f"eval.baselines=[exclusive,'{BAD}']"],
    ["train", "configs/exclusive.yaml", f"eval.baselines=['{BAD}']", "--check"],
    ["leaderboard", "configs/leaderboard/smoke.yaml", f"entries=[exclusive,'{BAD}']"],
])
def test_every_command_rejects_a_bad_policy_parameter_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if argv[0] == "leaderboard":
        argv = [*argv, f"output={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert BAD_WORDS in err and "Traceback" not in err, err


def test_scenario_and_workload_runs_use_the_policy_parameters(
    capsys: pytest.CaptureFixture[str]
) -> None:
    rates = []
    for p in ("0", "1"):
        assert main(["workload", "run", "forceswap-v1", "--param", "swap=pmem", "--json",
                     "--policy", f"random:p_reuse={p}", "--decisions", "40"]) == 0
        rates.append(json.loads(capsys.readouterr().out)["metrics"]["reuse_rate"])
    assert rates[0] == 0.0 and rates[1] == 1.0
    reuses = []
    for p in ("0", "1"):
        assert main(["scenario", "run", str(SCENARIO), "--policy", f"random:p_reuse={p}",
                     "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        reuses.append(doc["metrics"]["reuses"])
    assert reuses[0] == 0 and reuses[1] == doc["metrics"]["decisions"] > 0


def test_eval_records_carry_the_parameters_so_parameterisations_are_different_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cowlab.records import read_records, record_key

    out = tmp_path / "r.jsonl"
    argv = ["eval", "--policy", "random:p_reuse=0.2", "--policy", "random:p_reuse=0.20",
            "--policy", "random", "--workload", "forceswap-v1", "--param", "swap=pmem",
            "--decisions", "30", "--out", str(out), "--executor", "inprocess", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "random:p_reuse=0.2 " in printed
    records = read_records(out)
    # 0.2 and 0.20 are one run; the default is another
    assert sorted(json.dumps(r["config"]["policy_params"]) for r in records) == [
        '{"p_reuse": 0.2}', "{}"]
    assert len({record_key(r["config"]) for r in records}) == 2
    assert main(["validate", str(out)]) == 0
    assert "random:p_reuse=0.2 / v5.19 / forceswap-v1 / seed 0: reproduced" in (
        capsys.readouterr().out)


def test_train_config_baselines_accept_policy_specs() -> None:
    from cowlab.config import load_config

    cfg = load_config("configs/exclusive.yaml",
                      ["eval.baselines=[exclusive,'random:p_reuse=0.3']"])
    assert "random:p_reuse=0.3" in cfg.eval.baselines


# --------------------------------------------------------- warning about broken plugins


@pytest.fixture
def broken_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    @plugins.hookimpl
    def cowlab_register_policies(register: plugins.RegisterFn) -> None:
        raise ImportError("no module named 'fancy_dep'")

    module = types.ModuleType("fancy_policies")
    module.cowlab_register_policies = cowlab_register_policies  # type: ignore[attr-defined]
    registry = plugins.load_registry(extra_plugins=[("fancy_policies", module)])
    monkeypatch.setattr(plugins, "_cached", registry)
    plugins.reset_load_warning()
    yield
    plugins.reset_load_warning()


def test_a_plugin_that_failed_to_load_is_warned_about_once_per_process(
    broken_plugin: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policies"]) == 0
    err = capsys.readouterr().err
    assert err.count("fancy_policies") == 1
    assert "cowlab: warning: plugin 'fancy_policies'" in err and "cowlab plugins" in err
    assert "fancy_dep" in err
    # a second command in the same process, resolving a policy: no second warning
    assert main(["workload", "run", "forceswap-v1", "--decisions", "5",
                 "--policy", "exclusive"]) == 0
    assert "fancy_policies" not in capsys.readouterr().err


def test_a_policy_resolving_command_warns_before_it_fails_on_the_missing_name(
    broken_plugin: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["workload", "run", "forceswap-v1", "--policy", "fancy"]) == 2
    err = capsys.readouterr().err
    assert err.index("plugin 'fancy_policies'") < err.index("unknown policy 'fancy'")


def test_cowlab_plugins_lists_the_problem_instead_of_warning(
    broken_plugin: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins"]) == 0
    captured = capsys.readouterr()
    assert "cowlab: warning" not in captured.err
    assert "fancy_policies" in captured.out and "Problems:" in captured.out


def test_no_warning_without_a_broken_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plugins, "_cached", plugins.load_registry())
    plugins.reset_load_warning()
    try:
        assert main(["policies"]) == 0
        assert capsys.readouterr().err == ""
    finally:
        plugins.reset_load_warning()


def test_cowlab_policies_lists_the_parameters_a_spec_may_set(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policies"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["random"].endswith("params: p_reuse=0.5")
    assert lines["sb3"].endswith("params: path, trust=False")  # path: no default
    assert "params" not in lines["exclusive"]
