"""Behaviour of plugin discovery, validation and the registry (cowlab.plugins)."""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from cowlab import plugins
from cowlab.kernel.decision import Decision
from cowlab.plugins import (
    HOOK_API_VERSION,
    PluginError,
    PluginRegistry,
    RegisterFn,
    UnknownNameError,
    call_lifecycle,
    coerce_param,
    format_plugins,
    hookimpl,
    load_registry,
)

# --------------------------------------------------------------------------- fixtures


class AlwaysCopy:
    """Minimal valid policy."""

    def __init__(self, name: str = "always-copy") -> None:
        self.name = name
        self.seed: int | None = None

    def reset(self, seed: int | None) -> None:
        self.seed = seed

    def decide(self, fault: object) -> Decision:
        return Decision.COPY.because("policy")


@dataclass
class LruParams:
    """Parameter schema used by the parameter tests."""

    window: int = 4
    ratio: float = 0.5
    strict: bool = False
    label: str = "x"
    mode: Literal["fast", "slow"] = "fast"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be >= 1")


class ParamPolicy(AlwaysCopy):
    """Policy recording the parameters it was built with."""

    def __init__(self, **params: Any) -> None:
        super().__init__("patched-lru")
        self.params = params


def module_plugin(name: str, **attrs: object) -> types.ModuleType:
    """Build an in-process plugin module carrying the given attributes."""
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def policies_plugin(
    name: str, *regs: tuple[str, Callable[..., object]], **kw: Any
) -> types.ModuleType:
    """A plugin module registering ``regs`` as policies."""

    @hookimpl
    def cowlab_register_policies(register: RegisterFn) -> None:
        for reg_name, factory in regs:
            register(reg_name, factory, **kw)

    return module_plugin(name, cowlab_register_policies=cowlab_register_policies)


def load(*extra: tuple[str, object]) -> PluginRegistry:
    return load_registry(entry_points=False, extra_plugins=extra, disable=())


@dataclass
class FakeDist:
    name: str
    version: str


class FakeEntryPoint:
    """Stand-in for importlib.metadata.EntryPoint."""

    def __init__(self, name: str, target: object, dist: FakeDist | None) -> None:
        self.name = name
        self.value = f"fake_{name}"
        self.dist = dist
        self._target = target

    def load(self) -> object:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def policy_ep(name: str, dist: str, version: str, *policies: str) -> FakeEntryPoint:
    """A fake entry point whose plugin registers ``policies`` (all AlwaysCopy)."""
    plugin = policies_plugin(name, *((p, AlwaysCopy) for p in policies))
    return FakeEntryPoint(name, plugin, FakeDist(dist, version))


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeEntryPoint]]:
    eps: list[FakeEntryPoint] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == "cowlab"
        return list(eps)

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    monkeypatch.delenv("COWLAB_DISABLE_PLUGINS", raising=False)
    yield eps


# --------------------------------------------------------------------------- making policies


def test_registered_policy_is_made_with_decide_and_reset() -> None:
    reg = load(("mine", policies_plugin("mine", ("always-copy", AlwaysCopy))))

    policy = reg.make_policy("always-copy")

    assert reg.names("policy") == ["always-copy"]
    assert policy.name == "always-copy"
    policy.reset(3)
    assert policy.decide(object()) == Decision.COPY.because("policy")
    assert reg.problems == []
    assert reg.get("policy", "always-copy").plugin == "mine"
    assert reg.origin("policy", "always-copy") == "plugin mine (in-process)"


def test_unknown_policy_name_suggests_close_match() -> None:
    reg = load(("mine", policies_plugin("mine", ("exclusive", AlwaysCopy), ("lru", AlwaysCopy))))

    with pytest.raises(UnknownNameError) as info:
        reg.make_policy("exclusiv", where="run.yaml")

    message = str(info.value)
    assert message.startswith("run.yaml: unknown policy 'exclusiv'")
    assert "did you mean 'exclusive'?" in message
    assert "known: exclusive, lru" in message
    assert info.value.suggestions == ["exclusive"]


def test_unknown_name_is_a_plugin_error_even_without_suggestions() -> None:
    reg = load()
    with pytest.raises(PluginError, match=r"unknown workload 'zzz'; known: \(none\)"):
        reg.get("workload", "zzz")


def test_duplicate_names_are_reported_naming_both_plugins_and_first_wins() -> None:
    class Other(AlwaysCopy):
        pass

    reg = load(
        ("first", policies_plugin("first", ("exclusive", AlwaysCopy))),
        ("second", policies_plugin("second", ("exclusive", Other), ("other", Other))),
    )

    assert reg.get("policy", "exclusive").plugin == "first"
    assert reg.names("policy") == ["exclusive", "other"]
    [problem] = reg.problems
    assert problem.plugin == "second"
    assert "first" in str(problem) and "second" in str(problem)
    assert problem.fatal


def test_plugin_raising_while_registering_is_reported_and_partial_registrations_dropped() -> None:
    @hookimpl
    def cowlab_register_policies(register: RegisterFn) -> None:
        register("half-done", AlwaysCopy)
        raise RuntimeError("boom")

    @hookimpl
    def cowlab_register_workloads(register: RegisterFn) -> None:
        register("fork-snapshot-v1", dict)

    broken = module_plugin(
        "broken",
        cowlab_register_policies=cowlab_register_policies,
        cowlab_register_workloads=cowlab_register_workloads,
    )
    reg = load(("broken", broken), ("good", policies_plugin("good", ("exclusive", AlwaysCopy))))

    assert reg.names("policy") == ["exclusive"]
    # Only the hook that raised is discarded; the plugin's other hook still counts.
    assert reg.names("workload") == ["fork-snapshot-v1"]
    [problem] = reg.problems
    assert problem.plugin == "broken"
    assert "RuntimeError: boom" in problem.message
    assert "discarded" in problem.message
    assert reg.make_policy("exclusive").name == "always-copy"


@pytest.mark.parametrize("bad", ["Exclusive", "9lives", "two words", "trailing-", "a..b", ""])
def test_invalid_registration_names_are_rejected(bad: str) -> None:
    reg = load(("mine", policies_plugin("mine", (bad, AlwaysCopy), ("ok", AlwaysCopy))))

    assert reg.names("policy") == ["ok"]
    [problem] = reg.problems
    assert problem.plugin == "mine" and "invalid policy name" in problem.message


@pytest.mark.parametrize("good", ["patched-lru", "fork-snapshot-v1", "v5.19", "a_b", "x"])
def test_valid_registration_names_are_accepted(good: str) -> None:
    reg = load(("mine", policies_plugin("mine", (good, AlwaysCopy))))
    assert reg.names("policy") == [good]


def test_non_callable_factory_and_bad_params_type_are_rejected() -> None:
    @hookimpl
    def cowlab_register_kernels(register: RegisterFn) -> None:
        register("v5.19", 42)  # type: ignore[arg-type]
        register("v6.1", dict, params=int)
        register("v6.2", dict, description=3)  # type: ignore[arg-type]
        register("v6.5", dict)

    plugin = module_plugin("kernels", cowlab_register_kernels=cowlab_register_kernels)
    reg = load(("kernels", plugin))

    assert reg.names("kernel") == ["v6.5"]
    messages = [p.message for p in reg.problems]
    assert any("not callable" in m for m in messages)
    assert any("dataclass" in m for m in messages)
    assert any("description" in m for m in messages)


def test_policy_factories_are_not_called_at_registration() -> None:
    calls: list[str] = []

    def factory() -> AlwaysCopy:
        calls.append("made")
        return AlwaysCopy()

    reg = load(("mine", policies_plugin("mine", ("lazy", factory))))
    assert calls == []
    reg.make_policy("lazy")
    assert calls == ["made"]


# --------------------------------------------------------------------------- parameters


@pytest.fixture
def param_registry() -> PluginRegistry:
    return load(("mine", policies_plugin("mine", ("patched-lru", ParamPolicy), params=LruParams)))


def test_params_are_validated_and_passed_to_the_factory(param_registry: PluginRegistry) -> None:
    policy = param_registry.make_policy("patched-lru", {"window": 8, "ratio": 1})
    assert isinstance(policy, ParamPolicy)
    assert policy.params == {
        "window": 8,
        "ratio": 1.0,
        "strict": False,
        "label": "x",
        "mode": "fast",
        "limit": None,
    }
    assert isinstance(policy.params["ratio"], float)


@dataclass
class ListParams:
    """A schema with a container parameter."""

    keys: list[int] = field(default_factory=lambda: [1, 2])


def test_a_maker_validates_at_once_and_builds_a_new_object_per_call(
        param_registry: PluginRegistry) -> None:
    with pytest.raises(UnknownNameError, match="windw"):
        param_registry.maker("policy", "patched-lru", {"windw": 3})  # before any call
    build = param_registry.maker("policy", "patched-lru", {"window": 8})
    first, second = build(), build()
    assert isinstance(first, ParamPolicy) and isinstance(second, ParamPolicy)
    assert first is not second
    made = param_registry.make_policy("patched-lru", {"window": 8})
    assert first.params == second.params == made.params  # type: ignore[attr-defined]


def test_a_maker_gives_each_object_its_own_copy_of_a_container_parameter() -> None:
    reg = load(("mine", policies_plugin("mine", ("listy", ParamPolicy), params=ListParams)))
    build = reg.maker("policy", "listy")
    first = build()
    assert isinstance(first, ParamPolicy)
    first.params["keys"].append(3)
    again = build()
    assert isinstance(again, ParamPolicy) and again.params["keys"] == [1, 2]


def test_unknown_param_key_names_where_and_suggests_field(param_registry: PluginRegistry) -> None:
    with pytest.raises(UnknownNameError) as info:
        param_registry.make_policy("patched-lru", {"windw": 3}, where="--policy")
    message = str(info.value)
    assert message.startswith("--policy: unknown parameter 'windw'")
    assert "did you mean 'window'?" in message
    assert "policy 'patched-lru'" in message


def test_wrong_param_type_is_a_plugin_error(param_registry: PluginRegistry) -> None:
    with pytest.raises(PluginError, match=r"cfg.yaml: parameter 'label'.*expected str"):
        param_registry.make_policy("patched-lru", {"label": 5}, where="cfg.yaml")


def test_string_params_from_command_line_are_converted(param_registry: PluginRegistry) -> None:
    policy = param_registry.make_policy(
        "patched-lru",
        {"window": "3", "ratio": "0.25", "strict": "true", "mode": "slow", "limit": "7"},
    )
    assert isinstance(policy, ParamPolicy)
    assert policy.params["window"] == 3
    assert policy.params["ratio"] == 0.25
    assert policy.params["strict"] is True
    assert policy.params["mode"] == "slow"
    assert policy.params["limit"] == 7


def test_bool_is_rejected_for_int_param(param_registry: PluginRegistry) -> None:
    with pytest.raises(PluginError, match=r"parameter 'window'.*expected int, got bool"):
        param_registry.make_policy("patched-lru", {"window": True})


def test_post_init_value_error_becomes_plugin_error(param_registry: PluginRegistry) -> None:
    with pytest.raises(PluginError, match=r"here: bad parameters .*window must be >= 1"):
        param_registry.make_policy("patched-lru", {"window": 0}, where="here")


def test_params_for_registration_without_schema_are_refused() -> None:
    reg = load(("mine", policies_plugin("mine", ("plain", AlwaysCopy))))
    with pytest.raises(PluginError, match="takes no parameters"):
        reg.make_policy("plain", {"x": 1})


def test_missing_required_param_is_reported() -> None:
    @dataclass
    class Needs:
        depth: int

    reg = load(("mine", policies_plugin("mine", ("deep", ParamPolicy), params=Needs)))
    with pytest.raises(PluginError, match="needs parameter"):
        reg.make_policy("deep")


@pytest.mark.parametrize(
    ("field_type", "value", "expected"),
    [
        (int, "3", 3),
        (int, " 0x10 ", 16),
        (float, 2, 2.0),
        (float, "1e-3", 0.001),
        (bool, "off", False),
        (str, "3", "3"),
        (int | None, None, None),
        (int | str, "3", "3"),
        ("int", "4", 4),
        (list[int], [1, 2], [1, 2]),
    ],
)
def test_coerce_param_accepts(field_type: object, value: object, expected: object) -> None:
    result = coerce_param(field_type, value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("field_type", "value"),
    [(int, True), (int, 3.0), (int, "3.5"), (float, False), (bool, 1), (str, 3), (int, None)],
)
def test_coerce_param_rejects(field_type: object, value: object) -> None:
    with pytest.raises(TypeError):
        coerce_param(field_type, value)


# --------------------------------------------------------------------------- policy objects


def test_factory_returning_non_policy_is_refused_naming_plugin(
    fake_entry_points: list[FakeEntryPoint],
) -> None:
    class NoDecide:
        name = "nodecide"

        def reset(self, seed: int | None) -> None:
            pass

    plugin = policies_plugin("shoddy", ("nodecide", NoDecide))
    fake_entry_points.append(FakeEntryPoint("shoddy", plugin, FakeDist("shoddy-dist", "1.2")))
    reg = load_registry(disable=())

    with pytest.raises(PluginError) as info:
        reg.make_policy("nodecide")
    message = str(info.value)
    assert "plugin 'shoddy' (dist shoddy-dist 1.2)" in message
    assert "'decide'" in message
    assert reg.origin("policy", "nodecide") == "shoddy-dist 1.2 (plugin shoddy)"


def test_factory_exception_becomes_plugin_error() -> None:
    def explode() -> object:
        raise KeyError("nope")

    reg = load(("mine", policies_plugin("mine", ("explode", explode))))
    with pytest.raises(PluginError, match="could not be made: KeyError"):
        reg.make_policy("explode")


# --------------------------------------------------------------------------- entry points


def test_disable_env_blocks_plugins_by_entry_point_or_dist_name(
    fake_entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points.extend(
        [
            policy_ep("alpha", "pa", "1", "a"),
            policy_ep("beta", "My_Pb", "2", "b"),
            policy_ep("gamma", "pc", "3", "c"),
        ]
    )
    monkeypatch.setenv("COWLAB_DISABLE_PLUGINS", "alpha, my-pb")

    reg = load_registry()

    assert reg.names("policy") == ["c"]
    assert [p.name for p in reg.plugins] == ["gamma"]
    assert sorted(name for name, _ in reg.disabled) == ["alpha", "beta"]
    assert "Disabled: " in format_plugins(reg)


def test_entry_point_failing_to_import_is_reported_and_skipped(
    fake_entry_points: list[FakeEntryPoint],
) -> None:
    fake_entry_points.extend(
        [
            FakeEntryPoint("broken", ImportError("no module named nope"), FakeDist("bd", "0.1")),
            policy_ep("fine", "fd", "1", "ok"),
        ]
    )

    reg = load_registry(disable=())

    assert reg.names("policy") == ["ok"]
    [problem] = reg.problems
    assert problem.fatal
    assert str(problem) == (
        "plugin 'broken' (dist bd 0.1): failed to import: ImportError: no module named nope"
    )


def test_home_distribution_plugins_load_first(fake_entry_points: list[FakeEntryPoint]) -> None:
    fake_entry_points.extend(
        [policy_ep("aaa", "a", "1", "exclusive"), policy_ep("zzz", "cowlab", "0.1.0", "exclusive")]
    )
    reg = load_registry(disable=())
    assert reg.get("policy", "exclusive").plugin == "zzz"
    assert reg.origin("policy", "exclusive") == "cowlab 0.1.0"
    assert "aaa" in str(reg.problems[0]) and "zzz" in str(reg.problems[0])


def test_entry_points_are_ignored_when_disabled(fake_entry_points: list[FakeEntryPoint]) -> None:
    fake_entry_points.append(policy_ep("x", "d", "1", "a"))
    assert load_registry(entry_points=False).names("policy") == []


# --------------------------------------------------------------------------- hook validation


def test_hook_api_mismatch_is_a_warning_not_a_failure() -> None:
    plugin = policies_plugin("future", ("a", AlwaysCopy))
    plugin.__dict__["COWLAB_HOOK_API"] = HOOK_API_VERSION + 1

    reg = load(("future", plugin))

    assert reg.names("policy") == ["a"]
    [problem] = reg.problems
    assert not problem.fatal and problem.plugin == "future"
    assert "COWLAB_HOOK_API" in problem.message


def test_matching_hook_api_is_silent() -> None:
    plugin = policies_plugin("current", ("a", AlwaysCopy))
    plugin.__dict__["COWLAB_HOOK_API"] = HOOK_API_VERSION
    reg = load(("current", plugin))
    assert reg.problems == [] and reg.plugins[0].hook_api == HOOK_API_VERSION


def test_unknown_hook_name_is_reported_and_plugin_skipped() -> None:
    @hookimpl
    def cowlab_register_policy(register: RegisterFn) -> None:  # typo: singular
        register("typo", AlwaysCopy)

    reg = load(
        ("typo", module_plugin("typo", cowlab_register_policy=cowlab_register_policy)),
        ("good", policies_plugin("good", ("ok", AlwaysCopy))),
    )
    assert reg.names("policy") == ["ok"]
    assert [p.name for p in reg.plugins] == ["good"]
    assert "cowlab_register_policy" in reg.problems[0].message


def test_hookimpl_with_unknown_argument_is_reported() -> None:
    @hookimpl
    def cowlab_register_policies(register: RegisterFn, extra: int) -> None:
        register("a", AlwaysCopy)

    reg = load(
        ("bad", module_plugin("bad", cowlab_register_policies=cowlab_register_policies)),
        ("good", policies_plugin("good", ("ok", AlwaysCopy))),
    )
    assert reg.names("policy") == ["ok"]
    assert reg.problems[0].plugin == "bad" and reg.problems[0].fatal


def test_unmarked_hook_function_is_warned_about() -> None:
    def cowlab_register_policies(register: RegisterFn) -> None:
        register("a", AlwaysCopy)

    plugin = module_plugin("forgot", cowlab_register_policies=cowlab_register_policies)
    reg = load(("forgot", plugin))
    assert reg.names("policy") == []
    assert any("@hookimpl" in p.message and not p.fatal for p in reg.problems)


def test_class_instance_plugins_work() -> None:
    class Plugin:
        @hookimpl
        def cowlab_register_metrics(self, register: RegisterFn) -> None:
            register("copies", dict, description="count copies")

    reg = load(("obj", Plugin()))
    assert reg.names("metric") == ["copies"]
    assert reg.make("metric", "copies") == {}


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_hook_exceptions_do_not_propagate() -> None:
    seen: list[str] = []

    @hookimpl
    def cowlab_episode_finished(run: object, episode: object) -> None:
        raise RuntimeError("listener broke")

    @hookimpl
    def cowlab_run_finished(run: object, results: object) -> None:
        seen.append("finished")

    reg = load(
        ("noisy", module_plugin("noisy", cowlab_episode_finished=cowlab_episode_finished)),
        ("quiet", module_plugin("quiet", cowlab_run_finished=cowlab_run_finished)),
    )
    with pytest.warns(RuntimeWarning, match="listener broke"):
        call_lifecycle(reg, "cowlab_episode_finished", run={}, episode={"i": 0})
    # Reported once: a second failure neither warns nor adds a problem.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call_lifecycle(reg, "cowlab_episode_finished", run={}, episode={"i": 1})
        call_lifecycle(reg, "cowlab_run_finished", run={}, results={})
        call_lifecycle(reg, "cowlab_run_started", run={})
    assert seen == ["finished"]
    lifecycle_problems = [p for p in reg.problems if "listener broke" in p.message]
    assert len(lifecycle_problems) == 1 and not lifecycle_problems[0].fatal


def test_lifecycle_rejects_wrong_arguments() -> None:
    @hookimpl
    def cowlab_run_started(run: object) -> None:
        pass

    reg = load(("p", module_plugin("p", cowlab_run_started=cowlab_run_started)))
    with pytest.raises(TypeError):
        call_lifecycle(reg, "cowlab_run_started", results={})
    with pytest.raises(ValueError):
        call_lifecycle(reg, "cowlab_no_such_hook")


def test_commands_hook_is_reachable_through_manager() -> None:
    import argparse

    @hookimpl
    def cowlab_register_commands(cli: Any) -> None:
        parser = cli.add_command("hello", help="say hello")
        parser.set_defaults(handler=lambda args: 0)

    class Host:
        def __init__(self) -> None:
            self.parsers: dict[str, argparse.ArgumentParser] = {}

        def add_command(self, name: str, *, help: str) -> argparse.ArgumentParser:
            self.parsers[name] = argparse.ArgumentParser(prog=name, description=help)
            return self.parsers[name]

    reg = load(("cmds", module_plugin("cmds", cowlab_register_commands=cowlab_register_commands)))
    host = Host()
    call_lifecycle(reg, "cowlab_register_commands", cli=host)
    assert host.parsers["hello"].parse_args([]).handler(None) == 0


# --------------------------------------------------------------------------- reporting


def _mixed_registry() -> PluginRegistry:
    @hookimpl
    def cowlab_register_workloads(register: RegisterFn) -> None:
        register("fork-snapshot", dict, description="fork then write", params=LruParams)

    @hookimpl
    def cowlab_register_kernels(register: RegisterFn) -> None:
        register("v5.19", dict, description="after the 2022 rework")

    first = policies_plugin("first", ("exclusive", AlwaysCopy), description="reuse if exclusive")
    other = module_plugin(
        "other",
        cowlab_register_workloads=cowlab_register_workloads,
        cowlab_register_kernels=cowlab_register_kernels,
        COWLAB_HOOK_API=99,
    )
    dup = policies_plugin("dup", ("exclusive", dict))
    return load(("first", first), ("other", other), ("dup", dup))


def test_describe_is_json_serialisable_and_complete() -> None:
    reg = _mixed_registry()

    data = json.loads(json.dumps(reg.describe()))

    by_name = {entry["name"]: entry for entry in data}
    assert set(by_name) == {"first", "other", "dup"}
    assert by_name["first"]["registered"] == [
        {"kind": "policy", "name": "exclusive", "description": "reuse if exclusive", "params": []}
    ]
    assert {(i["kind"], i["name"]) for i in by_name["other"]["registered"]} == {
        ("workload", "fork-snapshot"),
        ("kernel", "v5.19"),
    }
    assert by_name["other"]["problems"][0]["fatal"] is False
    assert by_name["dup"]["problems"][0]["fatal"] is True


def test_describe_lists_plugins_that_failed_to_load(
    fake_entry_points: list[FakeEntryPoint],
) -> None:
    fake_entry_points.append(FakeEntryPoint("gone", ValueError("bad"), FakeDist("g", "1")))
    [entry] = load_registry(disable=()).describe()
    assert entry["name"] == "gone" and entry["loaded"] is False
    assert "failed to import" in entry["problems"][0]["message"]
    json.dumps(entry)


def test_format_plugins_lists_every_registration() -> None:
    reg = _mixed_registry()

    text = format_plugins(reg)

    for kind, names in reg.registrations.items():
        for name, registration in names.items():
            line = next(ln for ln in text.splitlines() if f" {name} " in ln or ln.endswith(name))
            assert kind in line and registration.description in line
    assert text.splitlines()[0] == "first  (in-process)"
    assert "  policy  exclusive  — reuse if exclusive" in text
    assert "Problems:" in text
    assert "warning: plugin 'other'" in text
    assert "error: plugin 'dup'" in text


def test_get_registry_is_cached_until_reset(fake_entry_points: list[FakeEntryPoint]) -> None:
    plugins.reset_registry()
    try:
        first = plugins.get_registry()
        assert plugins.get_registry() is first
        plugins.reset_registry()
        assert plugins.get_registry() is not first
    finally:
        plugins.reset_registry()
