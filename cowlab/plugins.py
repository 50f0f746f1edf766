"""Plugin discovery and the registry of policies, workloads, kernel presets and metrics.

Everything cowlab can run is contributed by a pluggy plugin, including the policies shipped
with cowlab itself (they use the same entry-point group a third-party distribution would).
A plugin is a module (or any object) carrying ``@hookimpl`` functions; each registration hook
receives a ``register`` callback::

    from cowlab.plugins import hookimpl

    COWLAB_HOOK_API = 1

    @hookimpl
    def cowlab_register_policies(register):
        register("always-copy", AlwaysCopy, description="copy on every write fault")

Hooks are only used to *collect* registrations: the host resolves a policy once through the
:class:`PluginRegistry` and then calls ``decide`` directly on every fault, so the per-fault
path never goes through pluggy.

A broken plugin never takes the rest down with it: import failures, exceptions raised while
registering and invalid registrations become :class:`PluginProblem` entries naming the plugin
and its distribution, and everything else keeps working.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import difflib
import functools
import operator
import os
import re
import threading
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, Protocol, Union, cast

import pluggy

from cowlab.kernel.policy import POLICY_MEMBERS, Policy

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_API_VERSION",
    "KINDS",
    "NAME_PATTERN",
    "CommandHost",
    "CowlabSpecs",
    "PluginError",
    "PluginInfo",
    "PluginProblem",
    "PluginRegistry",
    "RegisterFn",
    "Registration",
    "UnknownNameError",
    "call_lifecycle",
    "coerce_param",
    "format_plugins",
    "get_registry",
    "hookimpl",
    "hookspec",
    "load_registry",
    "reset_load_warning",
    "reset_registry",
    "warn_load_problems",
]

#: The pluggy project name and the entry-point group plugins are published under.
ENTRY_POINT_GROUP = "cowlab"

#: Version of the hook API described by :class:`CowlabSpecs`. A plugin module may declare
#: ``COWLAB_HOOK_API``; a different value is reported as a warning, not a failure.
HOOK_API_VERSION = 1

#: Environment variable holding a comma-separated list of plugins (entry-point or
#: distribution names) that must not be loaded.
DISABLE_ENV = "COWLAB_DISABLE_PLUGINS"

#: The kinds of things plugins register, in the order their hooks are called.
KINDS = ("policy", "workload", "kernel", "metric")

#: Registration hook name for each kind.
_REGISTER_HOOKS: dict[str, str] = {
    "policy": "cowlab_register_policies",
    "workload": "cowlab_register_workloads",
    "kernel": "cowlab_register_kernels",
    "metric": "cowlab_register_metrics",
}

#: Hooks that are plain notifications fanned out by :func:`call_lifecycle`.
_LIFECYCLE_HOOKS = frozenset(
    {"cowlab_run_started", "cowlab_episode_finished", "cowlab_run_finished"}
)

#: Allowed registration names: lowercase words joined by ``.``, ``_`` or ``-`` so they are
#: safe in YAML keys, file names and command lines ("patched-lru", "v5.19").
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*([._-][a-z0-9]+)*$")

#: The distribution whose plugins are listed first, so built-in names win a clash.
_HOME_DIST = "cowlab"

hookspec = pluggy.HookspecMarker(ENTRY_POINT_GROUP)
hookimpl = pluggy.HookimplMarker(ENTRY_POINT_GROUP)


class RegisterFn(Protocol):
    """The ``register`` callback handed to every registration hook."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., object],
        *,
        description: str = "",
        params: type[Any] | None = None,
    ) -> None:
        """Register ``factory`` under ``name``.

        Args:
            name: Registration name, e.g. ``"patched-lru"``.
            factory: Callable returning the object; called as ``factory(**params)``.
            description: One-line human description shown by ``cowlab plugins``.
            params: Optional dataclass type describing the factory's parameters.
        """


class CommandHost(Protocol):
    """What ``cowlab_register_commands`` receives: a way to add a sub-command."""

    def add_command(self, name: str, *, help: str) -> argparse.ArgumentParser:
        """Create the sub-command ``name`` and return its parser.

        Args:
            name: Sub-command name as typed on the command line.
            help: One-line help text.

        Returns:
            The parser; the plugin adds arguments and calls
            ``parser.set_defaults(handler=fn)`` with ``fn(args) -> int``.
        """
        ...


class CowlabSpecs:
    """Hook specifications of the cowlab plugin API (version :data:`HOOK_API_VERSION`)."""

    @hookspec
    def cowlab_register_policies(self, register: RegisterFn) -> None:
        """Register reuse policies.

        Each factory must return an object with ``name`` (str), ``reset(seed)`` and
        ``decide(fault)``; objects are checked when they are made, not when registered.

        Args:
            register: Callback ``register(name, factory, *, description="", params=None)``.
        """

    @hookspec
    def cowlab_register_workloads(self, register: RegisterFn) -> None:
        """Register workloads (fault-stream generators).

        Args:
            register: Callback ``register(name, factory, *, description="", params=None)``.
        """

    @hookspec
    def cowlab_register_kernels(self, register: RegisterFn) -> None:
        """Register kernel presets (e.g. ``"v5.19"``).

        Args:
            register: Callback ``register(name, factory, *, description="", params=None)``.
        """

    @hookspec
    def cowlab_register_metrics(self, register: RegisterFn) -> None:
        """Register metrics computed from runs.

        Args:
            register: Callback ``register(name, factory, *, description="", params=None)``.
        """

    @hookspec
    def cowlab_register_commands(self, cli: CommandHost) -> None:
        """Add sub-commands to the ``cowlab`` command line.

        Args:
            cli: Object with ``add_command(name, *, help) -> argparse.ArgumentParser``; the
                plugin calls ``parser.set_defaults(handler=fn)`` where ``fn(args) -> int``.
        """

    @hookspec
    def cowlab_run_started(self, run: Mapping[str, object]) -> None:
        """Notify that a run is starting.

        Args:
            run: Opaque, read-only description of the run.
        """

    @hookspec
    def cowlab_episode_finished(
        self, run: Mapping[str, object], episode: Mapping[str, object]
    ) -> None:
        """Notify that one episode of a run has finished.

        Args:
            run: Opaque, read-only description of the run.
            episode: Opaque, read-only summary of the episode.
        """

    @hookspec
    def cowlab_run_finished(self, run: Mapping[str, object], results: Mapping[str, object]) -> None:
        """Notify that a run has finished.

        Args:
            run: Opaque, read-only description of the run.
            results: Opaque, read-only results of the run.
        """


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Registration:
    """One thing a plugin registered.

    Attributes:
        kind: ``"policy"``, ``"workload"``, ``"kernel"`` or ``"metric"``.
        name: Registration name, unique within its kind.
        factory: Callable building the object, called as ``factory(**params)``.
        description: One-line human description.
        params: Dataclass type describing the factory's parameters, or None.
        plugin: Name of the plugin that registered it.
        dist: Distribution the plugin came from, or None for in-process plugins.
        version: Version of that distribution, or None.
    """

    kind: str
    name: str
    factory: Callable[..., object]
    description: str
    params: type[Any] | None
    plugin: str
    dist: str | None
    version: str | None


@dataclass(frozen=True)
class PluginProblem:
    """Something wrong with a plugin, reported instead of raised.

    Attributes:
        plugin: Plugin (entry-point) name.
        dist: Distribution name, or None for in-process plugins.
        message: One-line explanation.
        fatal: True when something was skipped (the plugin, one hook's registrations or
            one registration); False for warnings.
        version: Distribution version, or None.
        detail: Optional traceback, kept out of the one-line form.
    """

    plugin: str
    dist: str | None
    message: str
    fatal: bool = True
    version: str | None = None
    detail: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}{_dist_suffix(self.dist, self.version)}: {self.message}"


@dataclass
class PluginInfo:
    """A plugin that was loaded and registered with the plugin manager.

    Attributes:
        name: Plugin (entry-point) name.
        dist: Distribution name, or None for in-process plugins.
        version: Distribution version, or None.
        module: Where the plugin lives (entry-point value or module / class name).
        registered: ``(kind, name)`` of every registration that was accepted.
        hook_api: The plugin's declared ``COWLAB_HOOK_API``, or None if it declares none.
    """

    name: str
    dist: str | None
    version: str | None
    module: str
    registered: list[tuple[str, str]] = field(default_factory=list)
    hook_api: object = None


class PluginError(Exception):
    """A user-facing error about plugins: unknown name, bad parameters, broken object."""


class UnknownNameError(PluginError):
    """A name that is not registered, with close matches and the known names.

    Attributes:
        kind: What was looked up (``"policy"``, ``"parameter"``, ...).
        name: The name that was not found.
        known: Sorted known names.
        suggestions: Close matches from ``known`` (best first).
    """

    def __init__(
        self,
        kind: str,
        name: str,
        known: Iterable[str],
        *,
        where: str = "",
        context: str = "",
    ) -> None:
        """Build the message ``"unknown policy 'x' (did you mean 'y'?); known: ..."``.

        Args:
            kind: What was looked up.
            name: The name that was not found.
            known: Names that would have been accepted.
            where: Optional location prefix (config file, command-line option).
            context: Optional words placed after the name (``"for policy 'x'"``).
        """
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        self.suggestions = difflib.get_close_matches(name, self.known, n=3, cutoff=0.6)
        hint = ""
        if self.suggestions:
            hint = " (did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?)"
        about = f" {context}" if context else ""
        listing = ", ".join(self.known) if self.known else "(none)"
        super().__init__(f"{_prefix(where)}unknown {kind} {name!r}{about}{hint}; known: {listing}")
        self.where = where
        self.context = context

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by the constructor's arguments (a process pool ships errors back)."""
        return (_rebuild_unknown_name_error,
                (type(self), self.kind, self.name, self.known, self.where, self.context))


def _rebuild_unknown_name_error(cls: type[UnknownNameError], kind: str, name: str,
                                known: list[str], where: str, context: str) -> UnknownNameError:
    return cls(kind, name, known, where=where, context=context)


# --------------------------------------------------------------------------- helpers


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _dist_suffix(dist: str | None, version: str | None) -> str:
    if dist is None:
        return ""
    return f" (dist {dist} {version})" if version else f" (dist {dist})"


def _normalize(name: str) -> str:
    # Distribution names compare like pip compares them (PEP 503), so "My_Dist" blocks
    # "my-dist"; entry-point names get the same treatment for symmetry.
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _describe_exc(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


#: ``KEY=`` at the start of a policy spec's argument: the parameter form, not a path.
_PARAM_START = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_SCALARS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _type_name(tp: object) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _got(value: object) -> str:
    return f"got {type(value).__name__} {value!r}"


def _resolve_string_annotation(annotation: str) -> object:
    # Used only when typing.get_type_hints() cannot resolve a schema's annotations: plain
    # scalars and "X | None" are understood, anything else is left unchecked.
    parts = [p.strip() for p in annotation.split("|")]
    resolved: list[object] = []
    for part in parts:
        if part == "None":
            resolved.append(type(None))
        elif part in _SCALARS:
            resolved.append(_SCALARS[part])
        else:
            return Any
    return functools.reduce(operator.or_, resolved)


def _is_union(tp: object) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _exact_match(tp: object, value: object) -> bool:
    # A value already of the right type wins over a string conversion in unions, so a
    # field typed "int | str" keeps "3" as a string.
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float)
    if tp is str:
        return isinstance(value, str)
    return False


def coerce_param(field_type: object, value: object) -> object:
    """Check ``value`` against a parameter annotation, converting command-line strings.

    ``int``, ``float``, ``bool`` and ``str`` are checked strictly: a bool is not an int, an
    int is accepted (and converted) for a float, and a string such as ``"3"`` or ``"true"``
    is converted when the field wants a number or a bool (values typed on a command line
    are strings). ``X | None``, unions of those and ``Literal[...]`` are understood; any
    other annotation is passed through unchecked.

    Args:
        field_type: The field's annotation (a type, typing construct or string).
        value: The value given by the user.

    Returns:
        The value to pass to the dataclass, possibly converted.

    Raises:
        TypeError: The value does not fit the annotation.
    """
    if isinstance(field_type, str):
        field_type = _resolve_string_annotation(field_type)
    if field_type is Any or field_type is object:
        return value
    if _is_union(field_type):
        members = typing.get_args(field_type)
        if value is None and type(None) in members:
            return None
        candidates = [m for m in members if m is not type(None)]
        for member in candidates:
            if _exact_match(member, value):
                return value
        for member in candidates:
            try:
                return coerce_param(member, value)
            except TypeError:
                continue
        raise TypeError(f"expected {_type_name(field_type)}, {_got(value)}")
    if typing.get_origin(field_type) is Literal:
        return _coerce_literal(typing.get_args(field_type), value)
    if field_type is bool:
        return _coerce_bool(value)
    if field_type is int:
        return _coerce_int(value)
    if field_type is float:
        return _coerce_float(value)
    if field_type is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected str, {_got(value)}")
    return value


def _coerce_literal(choices: tuple[object, ...], value: object) -> object:
    for choice in choices:
        # type() equality stops True from matching Literal[1].
        if type(choice) is type(value) and choice == value:
            return value
    if isinstance(value, str):
        for choice in choices:
            if isinstance(choice, str) or choice is None:
                continue
            try:
                converted = coerce_param(type(choice), value)
            except TypeError:
                continue
            if converted == choice:
                return choice
    allowed = ", ".join(repr(c) for c in choices)
    raise TypeError(f"expected one of {allowed}, {_got(value)}")


def _coerce_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise TypeError(f"expected bool, {_got(value)}")


def _coerce_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected int, {_got(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip(), 10)
        with contextlib.suppress(ValueError):
            # Also accept "0x1000" and "1_000", handy for addresses and page counts.
            return int(value.strip(), 0)
    raise TypeError(f"expected int, {_got(value)}")


def _coerce_float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError(f"expected float, {_got(value)}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value.strip())
    raise TypeError(f"expected float, {_got(value)}")


#: Parameter values that :meth:`PluginRegistry.maker` passes to every object it builds
#: as they are (immutable).
_SHARED_PARAM_TYPES = (bool, int, float, str, bytes, type(None))


def _field_types(schema: type[Any]) -> dict[str, object]:
    # Plugins commonly use "from __future__ import annotations", which leaves field types
    # as strings; get_type_hints resolves them, with a best-effort fallback.
    fields = dataclasses.fields(schema)
    try:
        hints = typing.get_type_hints(schema)
    except Exception:
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in fields}


# --------------------------------------------------------------------------- registry


class PluginRegistry:
    """Everything the loaded plugins registered, plus the problems found while loading.

    Attributes:
        registrations: ``{kind: {name: Registration}}`` for every kind in :data:`KINDS`.
        plugins: Loaded plugins, in load order.
        problems: Problems found while loading and while running lifecycle hooks.
        disabled: ``(plugin, dist)`` pairs skipped because of ``COWLAB_DISABLE_PLUGINS``.
        manager: The pluggy plugin manager (used for ``cowlab_register_commands``).
    """

    def __init__(self, manager: pluggy.PluginManager | None = None) -> None:
        """Create an empty registry.

        Args:
            manager: The plugin manager the registrations came from; a fresh one with the
                cowlab hook specs is created when omitted.
        """
        if manager is None:
            manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
            manager.add_hookspecs(CowlabSpecs)
        self.manager = manager
        self.registrations: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self.plugins: list[PluginInfo] = []
        self.problems: list[PluginProblem] = []
        self.disabled: list[tuple[str, str | None]] = []
        self._lifecycle_failures: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # -- lookup ------------------------------------------------------------------------

    def _kind(self, kind: str) -> dict[str, Registration]:
        try:
            return self.registrations[kind]
        except KeyError:
            raise ValueError(
                f"unknown registration kind {kind!r}; expected one of {KINDS}"
            ) from None

    def names(self, kind: str) -> list[str]:
        """Return the registered names of one kind, sorted.

        Args:
            kind: One of :data:`KINDS`.

        Returns:
            Sorted names.
        """
        return sorted(self._kind(kind))

    def get(self, kind: str, name: str, *, where: str = "") -> Registration:
        """Return the registration of ``name``.

        Args:
            kind: One of :data:`KINDS`.
            name: Registration name.
            where: Optional location used as a message prefix.

        Returns:
            The registration.

        Raises:
            UnknownNameError: Nothing of that kind is registered under ``name``.
        """
        table = self._kind(kind)
        try:
            return table[name]
        except KeyError:
            raise UnknownNameError(kind, name, table, where=where) from None

    def plugin(self, name: str) -> PluginInfo | None:
        """Return the loaded plugin called ``name``, or None.

        Args:
            name: Plugin (entry-point) name.

        Returns:
            Its info, or None if no such plugin was loaded.
        """
        for info in self.plugins:
            if info.name == name:
                return info
        return None

    def origin(self, kind: str, name: str) -> str:
        """Say where a registration comes from, for logs and result metadata.

        Args:
            kind: One of :data:`KINDS`.
            name: Registration name.

        Returns:
            ``"cowlab 0.1.0"`` for built-ins, ``"my-dist 1.2 (plugin my_plugin)"`` for
            third-party plugins and ``"plugin my_plugin (in-process)"`` otherwise.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        reg = self.get(kind, name)
        if reg.dist is None:
            return f"plugin {reg.plugin} (in-process)"
        dist = f"{reg.dist} {reg.version}" if reg.version else reg.dist
        if _normalize(reg.dist) == _HOME_DIST:
            return dist
        return f"{dist} (plugin {reg.plugin})"

    # -- construction ------------------------------------------------------------------

    def make(
        self,
        kind: str,
        name: str,
        params: Mapping[str, object] | None = None,
        *,
        where: str = "",
    ) -> object:
        """Build the object registered as ``name`` with validated parameters.

        Parameters are checked against the registration's dataclass schema (unknown keys,
        types, ``__post_init__`` validation) before the factory is called with
        ``factory(**dataclasses.asdict(instance))``. Policies are then checked for
        ``name``, ``reset`` and ``decide``.

        Args:
            kind: One of :data:`KINDS`.
            name: Registration name.
            params: Parameter values (strings from the command line are converted).
            where: Location used as a message prefix (config file, option name).

        Returns:
            The object built by the factory.

        Raises:
            UnknownNameError: ``name`` or one of the parameter keys is unknown.
            PluginError: Bad parameter value, failing factory or invalid policy object.
        """
        return self.maker(kind, name, params, where=where)()

    def maker(
        self,
        kind: str,
        name: str,
        params: Mapping[str, object] | None = None,
        *,
        where: str = "",
    ) -> Callable[[], object]:
        """:meth:`make` in two halves: look ``name`` up and validate ``params`` now, and
        return a function that builds a new object at each call.

        For a caller that builds the same thing over and over (the env makes a workload
        at every reset): the validation (type hints, the schema's ``__post_init__``, a
        deep copy of the values) is done once. Each call gets its own copy of any
        parameter that is a container, as :meth:`make` does.

        Raises:
            UnknownNameError: At once, as :meth:`make`.
            PluginError: Bad parameters at once; a failing factory or an invalid policy
                object at the call.
        """
        reg = self.get(kind, name, where=where)
        what = f"{kind} {name!r}"
        given = dict(params or {})
        if reg.params is None:
            if given:
                keys = ", ".join(sorted(given))
                raise PluginError(f"{_prefix(where)}{what} takes no parameters (got {keys})")
            kwargs: dict[str, object] = {}
        else:
            kwargs = self._build_params(reg.params, given, what, where)
        # Scalars are shared between the objects built; anything else is copied per call.
        mutable = any(not isinstance(v, _SHARED_PARAM_TYPES) for v in kwargs.values())

        def build() -> object:
            try:
                obj = reg.factory(**(copy.deepcopy(kwargs) if mutable else kwargs))
            except Exception as exc:
                raise PluginError(
                    f"{_prefix(where)}{what} from {self._owner(reg)} could not be made: "
                    f"{_describe_exc(exc)}"
                ) from exc
            if kind == "policy":
                self._check_policy(reg, obj, where)
            return obj

        return build

    def make_policy(
        self, name: str, params: Mapping[str, object] | None = None, *, where: str = ""
    ) -> Policy:
        """Build a policy; shortcut for ``make("policy", ...)``.

        Args:
            name: Policy name.
            params: Parameter values.
            where: Location used as a message prefix.

        Returns:
            A checked policy object.

        ``prefix:argument`` names a registration ``prefix`` whose parameters include
        ``path``, with ``path=argument``: ``sb3:runs/exclusive/model.zip``.

        Raises:
            PluginError: See :meth:`make`.
        """
        base, inline = self.parse_policy_spec(name, where=where)
        if inline:
            twice = sorted(set(inline) & set(params or {}))
            if twice:
                raise PluginError(
                    f"{_prefix(where)}policy {name!r}: parameter(s) {', '.join(twice)} given "
                    "both in the name and separately"
                )
            return cast(Policy, self.make("policy", base, {**(params or {}), **inline},
                                          where=where))
        return cast(Policy, self.make("policy", base, params, where=where))

    def parse_policy_spec(self, spec: str, *, where: str = "") -> tuple[str, dict[str, str]]:
        """Split a policy spec into its registration name and inline parameters.

        The grammar (docs/policy-api.md, "Naming a policy with parameters")::

            SPEC   := NAME | NAME ":" PARAMS | NAME ":" PATH
            PARAMS := KEY "=" VALUE ("," KEY "=" VALUE)*

        ``random:p_reuse=0.3`` and ``sb3:path=runs/a/model.zip,trust=true`` name
        parameters; ``sb3:runs/a/model.zip`` (anything after ``:`` that does not start
        with ``KEY=``) is the legacy path form, ``path=`` of a policy with a ``path``
        parameter, taken verbatim. A registered name containing ``:`` is itself. Values
        stay strings here; :meth:`make` checks and converts them against the
        registration's params dataclass.

        Raises:
            PluginError: An unknown name, an empty or malformed parameter list, a key
                given twice, or a path for a policy without a ``path`` parameter.
        """
        if spec in self.registrations["policy"] or ":" not in spec:
            return spec, {}
        prefix, _, argument = spec.partition(":")
        reg = self.get("policy", prefix, where=where)
        if not argument:
            if reg.params is not None and "path" in _schema_fields(reg.params):
                raise PluginError(f"{_prefix(where)}policy '{prefix}:' needs a path (or "
                                  "KEY=VALUE parameters) after ':'")
            raise PluginError(f"{_prefix(where)}policy '{prefix}:' needs KEY=VALUE parameters "
                              "after ':' (e.g. random:p_reuse=0.3)")
        if not _PARAM_START.match(argument):
            if reg.params is None or "path" not in _schema_fields(reg.params):
                raise PluginError(
                    f"{_prefix(where)}policy {prefix!r} takes no path: '{spec}' is neither "
                    f"KEY=VALUE parameters nor a path for a policy with a 'path' parameter"
                )
            return prefix, {"path": argument}
        params: dict[str, str] = {}
        for item in argument.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not _PARAM_KEY.match(key):
                raise PluginError(f"{_prefix(where)}policy {spec!r}: {item!r} is not "
                                  "KEY=VALUE (parameters are separated by ',')")
            if key in params:
                raise PluginError(f"{_prefix(where)}policy {spec!r}: parameter {key!r} "
                                  "given twice")
            params[key] = value.strip()
        return prefix, params

    def canonical_policy(self, spec: str, params: Mapping[str, object] | None = None, *,
                         where: str = "") -> tuple[str, dict[str, object]]:
        """The ``(policy, policy_params)`` a run record stores for ``spec``.

        Inline parameters are checked against the registration's schema and stored
        converted (``random:p_reuse=0.30`` and ``random:p_reuse=0.3`` are one run,
        ``random`` another). A ``path`` parameter stays in the name as ``NAME:PATH``
        (``sb3:path=m.zip`` is stored as ``sb3:m.zip``, the legacy form, so records
        made before parameters existed keep their keys).

        Raises:
            PluginError: As :meth:`parse_policy_spec` and :meth:`make`.
        """
        base, inline = self.parse_policy_spec(spec, where=where)
        given: dict[str, object] = {**(params or {}), **inline}
        twice = sorted(set(inline) & set(params or {}))
        if twice:
            raise PluginError(f"{_prefix(where)}policy {spec!r}: parameter(s) "
                              f"{', '.join(twice)} given both in the name and separately")
        reg = self.get("policy", base, where=where)
        if not given:
            return spec, {}
        if reg.params is None:
            keys = ", ".join(sorted(given))
            raise PluginError(f"{_prefix(where)}policy {base!r} takes no parameters (got {keys})")
        built = self._build_params(reg.params, dict(given), f"policy {base!r}", where)
        out: dict[str, object] = {k: built[k] for k in given}
        path = out.pop("path", None)
        if path is not None:
            return f"{base}:{path}", out
        return base, out

    def _owner(self, reg: Registration) -> str:
        return f"plugin {reg.plugin!r}{_dist_suffix(reg.dist, reg.version)}"

    def _build_params(
        self, schema: type[Any], given: dict[str, object], what: str, where: str
    ) -> dict[str, object]:
        init_fields = [f for f in dataclasses.fields(schema) if f.init]
        field_names = [f.name for f in init_fields]
        for key in given:
            if key not in field_names:
                raise UnknownNameError(
                    "parameter", key, field_names, where=where, context=f"for {what}"
                )
        missing = [
            f.name
            for f in init_fields
            if f.name not in given
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            raise PluginError(f"{_prefix(where)}{what} needs parameter(s) {names}")
        types_ = _field_types(schema)
        values: dict[str, object] = {}
        for key, value in given.items():
            try:
                values[key] = coerce_param(types_[key], value)
            except TypeError as exc:
                raise PluginError(
                    f"{_prefix(where)}parameter {key!r} of {what}: {exc}"
                ) from None
        try:
            instance = schema(**values)
        except (ValueError, TypeError) as exc:
            # __post_init__ validation reports range errors etc. as ValueError.
            raise PluginError(f"{_prefix(where)}bad parameters for {what}: {exc}") from exc
        return dict(dataclasses.asdict(instance))

    def _check_policy(self, reg: Registration, obj: object, where: str) -> None:
        faults: list[str] = []
        for member in POLICY_MEMBERS:
            if not hasattr(obj, member):
                faults.append(f"missing {member!r}")
        for method in ("reset", "decide"):
            if hasattr(obj, method) and not callable(getattr(obj, method)):
                faults.append(f"{method!r} is not callable")
        name_value = getattr(obj, "name", None)
        if hasattr(obj, "name") and not isinstance(name_value, str):
            faults.append("'name' is not a str")
        if faults:
            raise PluginError(
                f"{_prefix(where)}policy {reg.name!r} from {self._owner(reg)} returned "
                f"{type(obj).__name__} which is not a policy: {'; '.join(faults)}"
            )

    # -- reporting ---------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Describe plugins, registrations and problems as JSON-friendly data.

        Returns:
            One dict per plugin (loaded first, then ones that failed to load or were
            disabled) with ``name``, ``dist``, ``version``, ``module``, ``hook_api``,
            ``loaded``, ``disabled``, ``registered`` (``kind``/``name``/``description``/
            ``params``) and ``problems`` (``message``/``fatal``).
        """
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for info in self.plugins:
            seen.add(info.name)
            items = []
            for kind, name in info.registered:
                reg = self.registrations[kind][name]
                items.append(
                    {
                        "kind": kind,
                        "name": name,
                        "description": reg.description,
                        "params": _schema_fields(reg.params),
                    }
                )
            # A plugin may declare anything; keep the JSON output JSON-friendly regardless.
            hook_api = info.hook_api
            if hook_api is not None and not isinstance(hook_api, (int, str)):
                hook_api = repr(hook_api)
            out.append(
                {
                    "name": info.name,
                    "dist": info.dist,
                    "version": info.version,
                    "module": info.module,
                    "hook_api": hook_api,
                    "loaded": True,
                    "disabled": False,
                    "registered": items,
                    "problems": self._problems_of(info.name),
                }
            )
        for plugin, dist in self.disabled:
            seen.add(plugin)
            out.append(_unloaded_entry(plugin, dist, None, disabled=True))
        for problem in self.problems:
            if problem.plugin in seen:
                continue
            seen.add(problem.plugin)
            entry = _unloaded_entry(problem.plugin, problem.dist, problem.version, disabled=False)
            entry["problems"] = self._problems_of(problem.plugin)
            out.append(entry)
        return out

    def _problems_of(self, plugin: str) -> list[dict[str, Any]]:
        return [
            {"message": p.message, "fatal": p.fatal} for p in self.problems if p.plugin == plugin
        ]

    # -- mutation (used by load_registry) ----------------------------------------------

    def _add_problem(self, problem: PluginProblem) -> None:
        with self._lock:
            self.problems.append(problem)


def _schema_fields(schema: type[Any] | None) -> list[str]:
    if schema is None:
        return []
    return [f.name for f in dataclasses.fields(schema) if f.init]


def _unloaded_entry(
    plugin: str, dist: str | None, version: str | None, *, disabled: bool
) -> dict[str, Any]:
    return {
        "name": plugin,
        "dist": dist,
        "version": version,
        "module": None,
        "hook_api": None,
        "loaded": False,
        "disabled": disabled,
        "registered": [],
        "problems": [],
    }


# --------------------------------------------------------------------------- loading


@dataclass
class _Candidate:
    """A plugin about to be registered with the manager."""

    name: str
    dist: str | None
    version: str | None
    module: str
    obj: object


def _problem(
    cand: _Candidate, message: str, *, fatal: bool = True, detail: str = ""
) -> PluginProblem:
    return PluginProblem(cand.name, cand.dist, message, fatal, cand.version, detail)


def _disabled_names(disable: Iterable[str] | None) -> set[str]:
    if disable is None:
        disable = os.environ.get(DISABLE_ENV, "").split(",")
    return {_normalize(n) for n in disable if n.strip()}


def _entry_point_dist(ep: object) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    name = getattr(dist, "name", None)
    if not isinstance(name, str):
        # Python 3.10's Distribution.name exists, but tolerate stand-ins without it.
        try:
            name = dist.metadata["Name"]
        except Exception:
            name = None
    version = getattr(dist, "version", None)
    return (
        name if isinstance(name, str) else None,
        version if isinstance(version, str) else None,
    )


def _object_location(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _discover(registry: PluginRegistry, blocked: set[str]) -> list[_Candidate]:
    try:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:
        registry._add_problem(
            PluginProblem("<entry points>", None, f"cannot list entry points: {_describe_exc(exc)}")
        )
        return []
    listed: list[tuple[EntryPoint, str, str | None, str | None]] = []
    for ep in eps:
        dist, version = _entry_point_dist(ep)
        listed.append((ep, str(ep.name), dist, version))

    def order(item: tuple[EntryPoint, str, str | None, str | None]) -> tuple[bool, str, str]:
        dist = _normalize(item[2] or "")
        return (dist != _HOME_DIST, dist, item[1])

    # cowlab's own plugins first, then by distribution and name: a deterministic order makes
    # "first registration wins" predictable and keeps built-in names from being shadowed.
    listed.sort(key=order)
    found: list[_Candidate] = []
    for ep, name, dist, version in listed:
        if _normalize(name) in blocked or (dist is not None and _normalize(dist) in blocked):
            registry.disabled.append((name, dist))
            continue
        cand = _Candidate(name, dist, version, str(getattr(ep, "value", name)), None)
        try:
            cand.obj = ep.load()
        except Exception as exc:
            registry._add_problem(
                _problem(
                    cand, f"failed to import: {_describe_exc(exc)}", detail=traceback.format_exc()
                )
            )
            continue
        found.append(cand)
    return found


def _register_plugin(pm: pluggy.PluginManager, registry: PluginRegistry, cand: _Candidate) -> bool:
    try:
        pm.register(cand.obj, name=cand.name)
    except pluggy.PluginValidationError as exc:
        _unregister_quietly(pm, cand.name)
        registry._add_problem(_problem(cand, f"invalid hook implementation: {_describe_exc(exc)}"))
        return False
    except Exception as exc:
        # ValueError for a name or object registered twice; anything else is a plugin object
        # whose attributes raise when pluggy inspects them.
        _unregister_quietly(pm, cand.name, only_if=cand.obj)
        registry._add_problem(_problem(cand, f"cannot be registered: {_describe_exc(exc)}"))
        return False
    callers = pm.get_hookcallers(cand.obj) or []
    unknown = [
        caller.name
        for caller in callers
        if not caller.has_spec()
        and any(
            impl.plugin_name == cand.name and not impl.optionalhook
            for impl in caller.get_hookimpls()
        )
    ]
    if unknown:
        # pluggy only complains about unknown hooks in check_pending(), for every plugin at
        # once; checking here keeps the blame on the plugin with the typo.
        _unregister_quietly(pm, cand.name)
        names = ", ".join(sorted(unknown))
        registry._add_problem(_problem(cand, f"implements unknown hook(s): {names}"))
        return False
    return True


def _unregister_quietly(
    pm: pluggy.PluginManager, name: str, *, only_if: object | None = None
) -> None:
    plugin = pm.get_plugin(name)
    if plugin is None or (only_if is not None and plugin is not only_if):
        return
    with contextlib.suppress(Exception):
        pm.unregister(name=name)


def _check_hook_api(registry: PluginRegistry, cand: _Candidate) -> object:
    declared = getattr(cand.obj, "COWLAB_HOOK_API", None)
    if declared is not None and (isinstance(declared, bool) or declared != HOOK_API_VERSION):
        registry._add_problem(
            _problem(
                cand,
                f"declares COWLAB_HOOK_API = {declared!r} but this cowlab provides hook API "
                f"{HOOK_API_VERSION}; it may not work as intended",
                fatal=False,
            )
        )
    return declared


def _check_unmarked(registry: PluginRegistry, cand: _Candidate, pm: pluggy.PluginManager) -> None:
    # A function named like a hook but missing @hookimpl would silently do nothing.
    implemented = {caller.name for caller in pm.get_hookcallers(cand.obj) or []}
    spec_names = [n for n in dir(CowlabSpecs) if n.startswith("cowlab_")]
    for hook_name in spec_names:
        if hook_name in implemented:
            continue
        try:
            attr = getattr(cand.obj, hook_name, None)
        except Exception:
            continue
        if callable(attr):
            registry._add_problem(
                _problem(cand, f"{hook_name} is not marked with @hookimpl; ignored", fatal=False)
            )
    if not implemented:
        registry._add_problem(_problem(cand, "implements no cowlab hooks", fatal=False))
    for caller in pm.get_hookcallers(cand.obj) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin_name == cand.name and (impl.hookwrapper or impl.wrapper):
                registry._add_problem(
                    _problem(
                        cand,
                        f"hook wrappers are not supported ({caller.name}); ignored",
                        fatal=False,
                    )
                )


def _validate(
    registry: PluginRegistry,
    kind: str,
    name: object,
    factory: object,
    description: object,
    params: object,
    staged: Mapping[str, Registration],
) -> str | None:
    """Return why a registration is invalid, or None if it is fine."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return (
            f"invalid {kind} name {name!r}: names are lowercase letters and digits, starting "
            "with a letter, joined by '.', '_' or '-' (e.g. 'patched-lru', 'v5.19')"
        )
    if not callable(factory):
        return f"{kind} {name!r}: factory {factory!r} is not callable"
    if not isinstance(description, str):
        return f"{kind} {name!r}: description must be a str, not {type(description).__name__}"
    if params is not None and not (isinstance(params, type) and dataclasses.is_dataclass(params)):
        return f"{kind} {name!r}: params must be a dataclass type or None, not {params!r}"
    existing = registry.registrations[kind].get(name) or staged.get(name)
    if existing is not None:
        return (
            f"{kind} {name!r} is already registered by plugin {existing.plugin!r}"
            f"{_dist_suffix(existing.dist, existing.version)}; this registration is ignored"
        )
    return None


def _run_register_hook(
    pm: pluggy.PluginManager,
    registry: PluginRegistry,
    kind: str,
    order: Sequence[_Candidate],
    infos: Mapping[str, PluginInfo],
) -> None:
    hook_name = _REGISTER_HOOKS[kind]
    caller = getattr(pm.hook, hook_name)
    impls = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
    for cand in order:
        impl = impls.get(cand.name)
        if impl is None or impl.hookwrapper or impl.wrapper:
            continue
        staged: dict[str, Registration] = {}
        open_ = [True]

        def register(
            name: str,
            factory: Callable[..., object],
            *,
            description: str = "",
            params: type[Any] | None = None,
            _cand: _Candidate = cand,
            _staged: dict[str, Registration] = staged,
            _open: list[bool] = open_,
        ) -> None:
            if not _open[0]:
                # A plugin that kept the callback for later would bypass validation order.
                raise PluginError(f"register() called after {hook_name} returned")
            why = _validate(registry, kind, name, factory, description, params, _staged)
            if why is not None:
                registry._add_problem(_problem(_cand, why))
                return
            _staged[name] = Registration(
                kind, name, factory, description, params, _cand.name, _cand.dist, _cand.version
            )

        args: dict[str, object] = {"register": register}
        try:
            impl.function(**{a: args[a] for a in impl.argnames})
        except Exception as exc:
            dropped = f"; its {len(staged)} registration(s) from this hook were discarded"
            registry._add_problem(
                _problem(
                    cand,
                    f"{hook_name} raised {_describe_exc(exc)}{dropped if staged else ''}",
                    detail=traceback.format_exc(),
                )
            )
            continue
        finally:
            open_[0] = False
        for name, reg in staged.items():
            registry.registrations[kind][name] = reg
            infos[cand.name].registered.append((kind, name))


def load_registry(
    *,
    entry_points: bool = True,
    extra_plugins: Sequence[tuple[str, object]] = (),
    disable: Iterable[str] | None = None,
) -> PluginRegistry:
    """Discover plugins, run the registration hooks and collect the results.

    Plugin exceptions never escape: every failure becomes a :class:`PluginProblem` in
    ``registry.problems`` and the offending plugin (or hook call, or registration) is
    skipped. Entry points are loaded cowlab's own first, then by distribution and name;
    in-process plugins come after them. On duplicate names the first registration wins.

    Args:
        entry_points: Load plugins from the ``cowlab`` entry-point group.
        extra_plugins: In-process plugins as ``(name, module_or_object)`` pairs.
        disable: Plugin or distribution names not to load; defaults to the comma-separated
            ``COWLAB_DISABLE_PLUGINS`` environment variable.

    Returns:
        The populated registry.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(CowlabSpecs)
    registry = PluginRegistry(pm)
    blocked = _disabled_names(disable)

    candidates = _discover(registry, blocked) if entry_points else []
    for name, obj in extra_plugins:
        if _normalize(name) in blocked:
            registry.disabled.append((name, None))
            continue
        candidates.append(_Candidate(name, None, None, _object_location(obj), obj))

    loaded: list[_Candidate] = []
    infos: dict[str, PluginInfo] = {}
    for cand in candidates:
        if not _register_plugin(pm, registry, cand):
            continue
        hook_api = _check_hook_api(registry, cand)
        _check_unmarked(registry, cand, pm)
        info = PluginInfo(cand.name, cand.dist, cand.version, cand.module, hook_api=hook_api)
        registry.plugins.append(info)
        infos[cand.name] = info
        loaded.append(cand)

    for kind in KINDS:
        _run_register_hook(pm, registry, kind, loaded, infos)
    return registry


_cache_lock = threading.Lock()
_cached: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """Return the process-wide registry, loading plugins on first use.

    Returns:
        The cached result of :func:`load_registry` with default arguments.
    """
    global _cached
    with _cache_lock:
        if _cached is None:
            _cached = load_registry()
        return _cached


def reset_registry() -> None:
    """Forget the cached registry so the next :func:`get_registry` reloads (for tests)."""
    global _cached
    with _cache_lock:
        _cached = None


_warned_lock = threading.Lock()
_warned = False


def warn_load_problems(registry: PluginRegistry | None = None, stream: Any = None) -> int:
    """Warn on stderr, once per process, about every plugin that failed to load.

    Every command that resolves a policy calls this: a policy missing because its plugin
    broke must not look like a typo. One line per fatal problem names the plugin (and
    its distribution) and points to ``cowlab plugins``; later calls print nothing.

    Returns:
        How many lines were printed (0 after the first call, or with no problem).
    """
    import sys

    global _warned
    with _warned_lock:
        if _warned:
            return 0
        _warned = True
    reg = registry or get_registry()
    out = stream if stream is not None else sys.stderr
    fatal = [p for p in reg.problems if p.fatal]
    for problem in fatal:
        print(f"cowlab: warning: {problem}; what it registers is unavailable "
              "(details: cowlab plugins)", file=out)
    return len(fatal)


def reset_load_warning() -> None:
    """Let :func:`warn_load_problems` warn again (for tests)."""
    global _warned
    with _warned_lock:
        _warned = False


def call_lifecycle(registry: PluginRegistry, hook_name: str, **kwargs: object) -> None:
    """Call a notification hook on every plugin, isolating their failures.

    Each implementation is called on its own, so one plugin raising neither stops the
    others nor the run; the failure is recorded as a non-fatal problem and warned about
    once per plugin and hook. Also usable for ``cowlab_register_commands``.

    Args:
        registry: Registry whose plugin manager holds the implementations.
        hook_name: Hook to call, e.g. ``"cowlab_run_started"``.
        **kwargs: The hook's arguments, all of them, by name.

    Raises:
        ValueError: ``hook_name`` is not a cowlab hook.
        TypeError: ``kwargs`` do not match the hook's arguments.
    """
    caller = getattr(registry.manager.hook, hook_name, None)
    if caller is None or caller.spec is None:
        if hook_name in _LIFECYCLE_HOOKS or hook_name == "cowlab_register_commands":
            return  # no plugin implements it
        raise ValueError(f"unknown cowlab hook {hook_name!r}")
    expected = set(caller.spec.argnames)
    if set(kwargs) != expected:
        want = ", ".join(sorted(expected))
        raise TypeError(f"{hook_name} takes arguments ({want}), got ({', '.join(sorted(kwargs))})")
    # pluggy calls the last-registered implementation first; keep its order.
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            impl.function(**{a: kwargs[a] for a in impl.argnames})
        except Exception as exc:
            key = (impl.plugin_name, hook_name)
            with registry._lock:
                first = key not in registry._lifecycle_failures
                registry._lifecycle_failures.add(key)
            if not first:
                continue
            info = registry.plugin(impl.plugin_name)
            problem = PluginProblem(
                impl.plugin_name,
                info.dist if info else None,
                f"{hook_name} raised {_describe_exc(exc)} (further failures not reported)",
                fatal=False,
                version=info.version if info else None,
                detail=traceback.format_exc(),
            )
            registry._add_problem(problem)
            warnings.warn(str(problem), RuntimeWarning, stacklevel=2)


def format_plugins(registry: PluginRegistry) -> str:
    """Render the plugin listing shown by ``cowlab plugins``.

    Args:
        registry: The registry to describe.

    Returns:
        One block per plugin (``name  dist version`` then one indented line per
        registration), followed by disabled plugins and a ``Problems:`` section if any.
    """
    lines: list[str] = []
    for info in registry.plugins:
        source = (
            f"{info.dist} {info.version}" if info.dist and info.version
            else info.dist or "(in-process)"
        )
        lines.append(f"{info.name}  {source}")
        if not info.registered:
            lines.append("  (no registrations)")
        kind_w = max((len(k) for k, _ in info.registered), default=0)
        name_w = max((len(n) for _, n in info.registered), default=0)
        for kind, name in info.registered:
            desc = registry.registrations[kind][name].description
            row = f"  {kind:<{kind_w}}  {name:<{name_w}}"
            lines.append(f"{row}  — {desc}" if desc else row.rstrip())
        lines.append("")
    if not registry.plugins:
        lines.extend(["(no plugins loaded)", ""])
    if registry.disabled:
        names = ", ".join(name for name, _ in registry.disabled)
        lines.extend([f"Disabled: {names}", ""])
    if registry.problems:
        lines.append("Problems:")
        for problem in registry.problems:
            level = "error" if problem.fatal else "warning"
            lines.append(f"  {level}: {problem}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
