"""Recipes (a method: annotators, selector, trainer settings) and profiles (the setting a method runs
in: source, teacher, student, benchmarks, budget). Both are data: dicts, TOML or YAML files.

A run's spec is profile, then recipe, then command-line overrides, merged in that order.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SECTIONS = ("source", "teacher", "selector", "trainer")  # one component each
LISTS = ("annotators", "benchmarks")  # several components each
SCALARS = ("student", "budget", "seed", "native_budget")
# defaults: settings per section and component name, used wherever a recipe names that component, e.g. a
# profile's {"annotators": {"judge": {"backend": {...}}}} points every recipe's judge at one server
# by_budget: settings per budget, e.g. {"1000": {"trainer": {"epochs": 10}}}; a run takes the entry of the largest
# budget not above its own (a step function), so a budget sweep trains each size as its paper did
KEYS = SECTIONS + LISTS + SCALARS + ("mixing", "defaults", "by_budget")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    spec: dict = field(default_factory=dict)
    native_budget: int | None = None  # the size the recipe's paper used (LIMO 817, s1K 1000)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    spec: dict = field(default_factory=dict)
    # what a recipe name means in this setting, e.g. {"limo": "limo:released"}: at paper scale a baseline's
    # row is its released data, as the paper compared them
    recipes: dict = field(default_factory=dict)


class SpecError(ValueError):
    """A spec key or value is wrong; the message names it."""


def load_file(path: str | Path) -> dict:
    """Read a TOML or YAML recipe/profile file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise SpecError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a table of settings at the top level")
    return data


def recipe_from_file(path: str | Path) -> Recipe:
    data = load_file(path)
    name = data.pop("name", Path(path).stem)
    description = data.pop("description", f"recipe file {path}")
    native = data.pop("native_budget", None)
    check_keys(data, str(path))
    return Recipe(name=name, description=description, spec=data, native_budget=native)


def profile_from_file(path: str | Path) -> Profile:
    data = load_file(path)
    name = data.pop("name", Path(path).stem)
    description = data.pop("description", f"profile file {path}")
    recipes = data.pop("recipes", {})
    if not isinstance(recipes, dict) or not all(isinstance(v, str) for v in recipes.values()):
        raise SpecError(f"{path}: recipes: expected a table of recipe names, e.g. limo = \"limo:released\"")
    check_keys(data, str(path))
    return Profile(name=name, description=description, spec=data, recipes=recipes)


def check_keys(spec: dict, where: str) -> None:
    for key in spec:
        if key not in KEYS and key != "profile":
            raise SpecError(f"{where}: unknown key {key!r}; known keys: {', '.join(KEYS)}")


def merge(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into a copy of ``base``. Component lists merge by component name."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in LISTS:
            items = {c["name"]: c for c in out.get(key, [])}
            for comp in value:
                items[comp["name"]] = {**items.get(comp["name"], {}), **comp}
            out[key] = list(items.values())
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            # a different component replaces the section; the same one is refined key by key
            if "name" in value and value["name"] != out[key].get("name"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str):
    """``--set`` values are TOML scalars/arrays; anything that is not parses as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_sets(spec: dict, sets: list[str]) -> dict:
    """Apply ``section.key=value`` overrides, e.g. ``trainer.lr=1e-5`` or ``benchmarks.lmeval.limit=8``."""
    spec = copy.deepcopy(spec)
    for item in sets:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.lr=1e-5")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        value = parse_value(raw.strip())
        head = parts[0]
        if head not in KEYS:
            raise SpecError(f"--set {path}: unknown section {head!r}; known: {', '.join(KEYS)}")
        if head in SCALARS:
            spec[head] = value
        elif head in LISTS:
            if len(parts) != 3:
                raise SpecError(f"--set {path}: use {head}.<component>.<key>=value")
            comps = {c["name"]: c for c in spec.get(head, [])}
            if parts[1] not in comps:
                raise SpecError(f"--set {path}: no {head[:-1]} {parts[1]!r} in this run; present: {', '.join(comps)}")
            comps[parts[1]][parts[2]] = value
        else:
            node = spec.setdefault(head, {})
            for p in parts[1:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
    return spec


def at_budget(spec: dict, budget: int | None) -> dict:
    """``spec`` with its ``by_budget`` entry for ``budget`` merged in: the entry of the largest budget not
    above it; the key is then removed."""
    spec = copy.deepcopy(spec)
    steps = {}
    for key, over in (spec.pop("by_budget", None) or {}).items():
        if not str(key).isdigit() or not isinstance(over, dict):
            raise SpecError(f"by_budget.{key}: expected by_budget.<budget>.<section>, e.g. by_budget.1000.trainer")
        check_keys(over, f"by_budget.{key}")
        steps[int(key)] = over
    below = [b for b in steps if isinstance(budget, int) and b <= budget]
    return merge(spec, steps[max(below)]) if below else spec


def apply_defaults(spec: dict) -> dict:
    """Fill missing component settings from ``spec["defaults"][section][name]`` (e.g.
    ``defaults.annotators.judge``), wherever the run uses that component; the key is then removed."""
    spec = copy.deepcopy(spec)
    defaults = spec.pop("defaults", None) or {}
    for section, by_name in defaults.items():
        if section not in SECTIONS + LISTS or not isinstance(by_name, dict):
            raise SpecError(f"defaults.{section}: expected defaults.<section>.<component> with section one of "
                            f"{', '.join(SECTIONS + LISTS)}")
        comps = spec.get(section) if section in LISTS else [spec.get(section)]
        for conf in comps or []:
            if isinstance(conf, dict):
                for k, v in (by_name.get(conf.get("name")) or {}).items():
                    conf.setdefault(k, copy.deepcopy(v))
    return spec
