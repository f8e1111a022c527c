"""The one place that talks to pluggy.

Plugins come from the ``nt_harness`` entry-point group, first-party and third-party alike.
``NT_HARNESS_LOAD_PLUGINS=a,b`` loads only those entry points; ``NT_HARNESS_DISABLE_PLUGINS=a,b``
skips those. A plugin that fails to import, or raises in a hook, is reported by name and skipped.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

import pluggy

from nt_harness import hookspecs
from nt_harness.components import KINDS, Component

GROUP = "nt_harness"


class PluginError(Exception):
    """Raised when a name is unknown or a plugin misbehaves; the message is meant for the user."""


@dataclass
class PluginInfo:
    name: str  # entry-point name (or the module name of a plugin registered in code)
    dist: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    return None if raw is None else {p.strip() for p in raw.split(",") if p.strip()}


class Plugins:
    """Typed facade over the plugin manager: components by kind and name, recipes, models, errors."""

    def __init__(self, load_entrypoints: bool = True, extra: list = ()):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.errors: list[str] = []
        if load_entrypoints:
            self._load_entrypoints()
        for module in extra:
            self._register(module, getattr(module, "__name__", repr(module)), "(in code)", "")
        self._check_pending()
        self._collect()

    # loading ------------------------------------------------------------------------------------
    def _load_entrypoints(self) -> None:
        only, skip = _env_list("NT_HARNESS_LOAD_PLUGINS"), _env_list("NT_HARNESS_DISABLE_PLUGINS") or set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            if (only is not None and ep.name not in only) or ep.name in skip:
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
            except Exception as e:  # noqa: BLE001 - one broken plugin must not take the others down
                self.errors.append(f"plugin {ep.name!r} (distribution {dist}) failed to load: {type(e).__name__}: {e}")
                continue
            self._register(module, ep.name, dist, version)

    def add(self, module, name: str | None = None) -> None:
        """Register a plugin object in code (tests, notebooks)."""
        self._register(module, name or getattr(module, "__name__", repr(module)), "(in code)", "")
        self._check_pending()
        self._collect()

    def _check_pending(self) -> None:
        """A misspelt hook (``register_selector``) is named and its plugin dropped; the rest load."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as e:
                name = self.pm.get_name(e.plugin)
                self.errors.append(f"plugin {name!r} dropped: {e}")
                self.pm.unregister(e.plugin)
                self.info.pop(name, None)

    def remove(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.info.pop(name, None)
        self._collect()

    def _register(self, module, name, dist, version) -> None:
        try:
            self.pm.register(module, name=name)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"plugin {name!r} (distribution {dist}) could not be registered: {e}")
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        self.info[name] = PluginInfo(name, dist, version, getattr(module, "__name__", repr(module)), hooks)

    # collecting ---------------------------------------------------------------------------------
    def _call(self, hook: str, register: Callable) -> None:
        """Call one hook plugin by plugin, so a raising plugin is named and skipped."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            name = self.pm.get_name(impl.plugin)
            try:
                impl.function(register=lambda *a, _n=name: register(_n, *a))
            except Exception as e:  # noqa: BLE001
                dist = self.info[name].dist if name in self.info else "?"
                self.errors.append(
                    f"plugin {name!r} (distribution {dist}) raised in {hook}: {type(e).__name__}: {e}"
                )

    def _collect(self) -> None:
        self.components: dict[str, dict[str, type[Component]]] = {k: {} for k in KINDS}
        self.recipes: dict = {}
        self.profiles: dict = {}
        self.models: dict[str, Callable] = {}
        self.owner: dict[tuple[str, str], str] = {}
        for info in self.info.values():
            info.registered = {}

        def put(plugin, kind, name, obj, table):
            if name in table:
                self.errors.append(
                    f"{kind} {name!r} from plugin {plugin!r} ignored: already registered by {self.owner[(kind, name)]!r}"
                )
                return
            table[name] = obj
            self.owner[(kind, name)] = plugin
            if plugin in self.info:
                self.info[plugin].registered.setdefault(kind, []).append(name)

        for kind in KINDS:
            def reg(plugin, cls, _kind=kind):
                if not (isinstance(cls, type) and issubclass(cls, Component) and cls.kind == _kind and cls.name):
                    raise TypeError(f"register_{_kind}s expects a named {_kind} Component subclass, got {cls!r}")
                put(plugin, _kind, cls.name, cls, self.components[_kind])

            self._call(f"register_{kind}s", reg)

        from nt_harness.recipes import Profile, Recipe

        def reg_recipe(plugin, obj):
            if isinstance(obj, Profile):
                put(plugin, "profile", obj.name, obj, self.profiles)
            elif isinstance(obj, Recipe):
                put(plugin, "recipe", obj.name, obj, self.recipes)
            else:
                raise TypeError(f"register_recipes expects a Recipe or Profile, got {obj!r}")

        self._call("register_recipes", reg_recipe)
        self._call("register_models", lambda plugin, name, build: put(plugin, "model", name, build, self.models))

    # lookups --------------------------------------------------------------------------------------
    def component(self, kind: str, name: str) -> type[Component]:
        table = self.components[kind]
        if name not in table:
            raise PluginError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table)) or '(none)'}")
        return table[name]

    def recipe(self, name: str):
        if name not in self.recipes:
            raise PluginError(f"unknown recipe {name!r}; available: {', '.join(sorted(self.recipes)) or '(none)'}")
        return self.recipes[name]

    def profile(self, name: str):
        if name not in self.profiles:
            raise PluginError(f"unknown profile {name!r}; available: {', '.join(sorted(self.profiles)) or '(none)'}")
        return self.profiles[name]

    def add_commands(self, cli) -> None:
        for impl in self.pm.hook.register_commands.get_hookimpls():
            name = self.pm.get_name(impl.plugin)
            try:
                impl.function(cli=cli)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"plugin {name!r} raised in register_commands: {type(e).__name__}: {e}")

    def report(self) -> list[dict]:
        return [
            {
                "name": i.name,
                "distribution": i.dist,
                "version": i.version,
                "module": i.module,
                "hooks": i.hooks,
                "registered": i.registered,
            }
            for i in self.info.values()
        ]


_shared: Plugins | None = None


def shared() -> Plugins:
    """The installed plugins, loaded once per process: where a component that is made of components (a selector
    of selectors) looks them up when it is made, before any run gives it a context, without loading every
    plugin again."""
    global _shared
    if _shared is None:
        _shared = Plugins()
    return _shared


def format_error(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()
