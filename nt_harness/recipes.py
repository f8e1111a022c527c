"""Recipes (a method: annotators, selector, trainer settings) and profiles (the setting a method runs
in: source, teacher, student, benchmarks, budget). Both are data: dicts, TOML or YAML files.

A run's spec is profile, then recipe, then command-line overrides, merged in that order. A profile file may
name a ``base`` profile, merged under it, so it states only what it changes. The merged dict becomes a
``RunSpec`` once, checked before any work; the pipeline reads only that.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

SECTIONS = ("source", "teacher", "selector", "trainer", "executor")  # one component each
LISTS = ("annotators", "benchmarks")  # several components each
SCALARS = ("student", "budget", "seed", "native_budget")
# defaults: settings per section and component name, used wherever a recipe names that component, e.g. a
# profile's {"annotators": {"judge": {"backend": {...}}}} points every recipe's judge at one server
# by_budget: settings per budget, e.g. {"1000": {"trainer": {"epochs": 10}}}; a run takes the entry of the largest
# budget not above its own (a step function), so a budget sweep trains each size as its paper did
KEYS = SECTIONS + LISTS + SCALARS + ("defaults", "by_budget")


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


def whole(least: int) -> BeforeValidator:
    """A whole number of at least ``least``, as written: pydantic's own int also takes ``true``, ``"5"`` and
    ``2.0``, which a budget or seed never means."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"a whole number, at least {least} (got {value!r})")
        return value

    return BeforeValidator(check)


# one component: {"name": ..., setting: value} (a bare name is {"name": name}); its own Settings checks the rest
Conf = Annotated[dict[str, Any], BeforeValidator(lambda v: {"name": v} if isinstance(v, str) else v)]


class RunSpec(BaseModel):
    """One run's settings: profile, recipe and command line merged (``cli.make_spec``) and checked here, once,
    before any work, so a bad budget is one line and not a failure after the teacher ran. Every stage reads
    this; component sections stay dicts, which ``Pipeline.validate`` checks against each component's Settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Conf
    teacher: Conf
    selector: Conf
    trainer: Conf
    student: str
    budget: Annotated[int, whole(1)]
    seed: Annotated[int, whole(0)] = 0
    annotators: list[Conf] = []
    benchmarks: list[Conf] = []
    executor: Conf | None = None
    native_budget: Annotated[int, whole(1)] | None = None  # a recipe's paper size; a run uses ``budget``

    @classmethod
    def of(cls, data: dict, where: str = "") -> "RunSpec":
        """``data`` checked, or a SpecError naming every wrong setting in one line."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = []
            for x in e.errors():
                setting = ".".join(map(str, x["loc"]))
                problems.append(f"{setting}: {x['ctx']['error'] if x['type'] == 'value_error' else x['msg']}")
            raise SpecError(f"{where}{'; '.join(problems)}") from None

    @classmethod
    def required(cls) -> list[str]:
        return [name for name, f in cls.model_fields.items() if f.is_required()]


def load_file(path: str | Path) -> dict:
    """Read a TOML or YAML recipe/profile file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start})") from None
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


def is_file(name: str) -> bool:
    """A recipe or profile given as a file rather than a registered name."""
    return name.endswith((".toml", ".yaml", ".yml")) or "/" in name or os.sep in name


def profile_from_file(path: str | Path, named=None, chain: tuple[Path, ...] = ()) -> Profile:
    """A profile file over its ``base``: a registered profile (``named(name)`` gives it) or another profile
    file, relative to this one's folder. Its spec merges over the base's, its recipe names over the base's."""
    data = load_file(path)
    name = data.pop("name", Path(path).stem)
    description = data.pop("description", f"profile file {path}")
    recipes = data.pop("recipes", {})
    if not isinstance(recipes, dict) or not all(isinstance(v, str) for v in recipes.values()):
        raise SpecError(f"{path}: recipes: expected a table of recipe names, e.g. limo = \"limo:released\"")
    base = data.pop("base", None)
    check_keys(data, str(path))
    if base is None:
        return Profile(name=name, description=description, spec=data, recipes=recipes)
    if not isinstance(base, str):
        raise SpecError(f"{path}: base: expected a profile name or file, e.g. base = \"embedded\"")
    chain = (*chain, Path(path))
    if is_file(base):
        file = Path(os.path.normpath(Path(path).parent / base))
        if any(file.resolve() == p.resolve() for p in chain):
            raise SpecError("profile bases form a cycle: " + " -> ".join(str(p) for p in (*chain, file)))
        under = profile_from_file(file, named, chain)
    elif named is None:
        raise SpecError(f"{path}: base {base!r}: a registered profile needs the plugins; name a file instead")
    else:
        under = named(base)
    return Profile(name=name, description=description, spec=merge(under.spec, data),
                   recipes={**under.recipes, **recipes})


def check_keys(spec: dict, where: str) -> None:
    unknown = [k for k in spec if k not in KEYS and k != "profile"]
    if unknown:
        raise SpecError(f"{where}: unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                        f"known keys: {', '.join(KEYS)}")


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


def parse_value(text: str, key: str = "value"):
    """``--set`` values are TOML values; a plain word that is not one is a string (``teacher.model=foo``), but
    text that starts like TOML structure (``{``, ``[`` or a quote) and does not parse is a mistake to name."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        if not text.startswith(("{", "[", '"', "'")):
            return text
        # columns count from the value, not from the "v = " it was parsed behind
        reason = re.sub(r"column (\d+)", lambda m: f"column {int(m[1]) - 4}", str(e))
        raise SpecError(f"--set {key}: {text} is not a valid TOML value: {reason}") from None


def apply_sets(spec: dict, sets: list[str]) -> dict:
    """Apply ``section.key=value`` overrides, e.g. ``trainer.lr=1e-5`` or ``benchmarks.lmeval.limit=8``.
    A new component name (``source.name=natural_reasoning``) starts that component afresh, as ``merge`` does:
    the old one's settings mean nothing to it. Name changes go first, so the other overrides survive them."""
    spec = copy.deepcopy(spec)
    for item in sorted(sets, key=name_first):
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.lr=1e-5")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        value = parse_value(raw.strip(), path.strip())
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
            set_key(comps[parts[1]], parts[2], value)
        else:
            node = spec.setdefault(head, {})
            for p in parts[1:-1]:
                node = node.setdefault(p, {})
            set_key(node, parts[-1], value)
    return spec


def name_first(item: str) -> tuple:
    """Sort key: name changes first, outer components before inner ones; the rest keep their order."""
    key = item.split("=", 1)[0].strip()
    return (0, key.count(".")) if key.endswith(".name") else (1, 0)


def set_key(node: dict, key: str, value) -> None:
    """``node[key] = value``; a changed ``name`` leaves only the name."""
    if key == "name" and node.get("name") != value:
        node.clear()
    node[key] = value


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
