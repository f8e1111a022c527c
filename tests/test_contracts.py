"""Contracts every registered component keeps, whoever wrote it: a component is covered by being registered
(as datasette tests its documented hooks), so a new one cannot slip past them.

Selectors run on one synthetic pool holding every column a registered selector may require; a selector that
requires a column the pool lacks fails here until the column is added to ``SYNTHETIC``. Their outputs on that
pool are fingerprinted in tests/data/selector_contracts.json: an output that changes while the selector's
``version`` does not fails (a stored selection would be reused wrongly); after a version bump, regenerate the
file with ``NT_HARNESS_UPDATE_CONTRACTS=1 pytest tests/test_contracts.py``.
"""

import hashlib
import inspect
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from nt_harness import hookspecs
from nt_harness.plugins import Plugins
from nt_harness.records import QUESTIONS, SELECTION, TRACES, conform

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = Path(__file__).parent / "data" / "selector_contracts.json"
PM = Plugins()
ALL = [(kind, name) for kind, comps in sorted(PM.components.items()) for name in sorted(comps)]

N_QUESTIONS, N_SAMPLES, BUDGET = 60, 2, 20
# settings a selector needs to run on the synthetic pool alone (no benchmark to decontaminate against)
SELECTOR_SETTINGS = {"compose": {"steps": [{"name": "disagree"}, {"name": "long"}]},
                     "openthoughts": {"decontaminate": []}}


def synthetic(rng: np.random.Generator, n: int) -> dict:
    """Values for every annotation column a shipped selector reads, of the type its annotator writes."""
    ints = lambda lo, hi: rng.integers(lo, hi, n)  # noqa: E731
    grades = lambda: rng.choice([0.0, 1.0, np.nan], n, p=[0.5, 0.4, 0.1])  # noqa: E731
    return {
        "correct": grades(), "system1_correct": grades(), "models_agree": grades(),
        "thinking_tokens": ints(0, 9000), "answer_tokens": ints(1, 50),
        "topic": rng.choice(["algebra", "geometry", "physics", "biology"], n), "cluster": ints(0, 6),
        "verbosity": ints(0, 11), "strategy_count": ints(0, 12), "strategy_density": rng.random(n),
        "solver1_passes": ints(0, 5), "solver1_attempts": np.full(n, 4), "solver2_passes": ints(0, 33),
        "solver2_attempts": np.full(n, 32), "system1_answer": rng.choice(["1", "2", "x"], n),
    }


SYNTHETIC = set(synthetic(np.random.default_rng(0), 1))


def pool() -> pa.Table:
    rng = np.random.default_rng(0)
    n = N_QUESTIONS * N_SAMPLES
    q = [f"q{i // N_SAMPLES}" for i in range(n)]
    columns = {
        "question_id": q, "source": ["synthetic"] * n, "question": [f"What is {i // N_SAMPLES} + 1?" for i in range(n)],
        "reference": rng.choice(["1", "two", "", "a much longer reference answer than a short one"], n),
        "topic": None, "metadata": ["{}"] * n,
        "trace_id": [f"{x}/{i % N_SAMPLES}" for i, x in enumerate(q)], "teacher": ["synthetic"] * n,
        "sample": [i % N_SAMPLES for i in range(n)], "thinking": [f"let me think {i}" * (1 + i % 5) for i in range(n)],
        "answer": [f"<answer>{i % 3}</answer>" for i in range(n)], "complete": rng.random(n) > 0.1,
        "finish_reason": ["stop"] * n, "prompt_tokens": [20] * n, "completion_tokens": rng.integers(5, 9000, n),
    }
    columns.update(synthetic(rng, n))
    return pa.table({k: v for k, v in columns.items() if v is not None})


# every component ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, name", ALL, ids=[f"{k}:{n}" for k, n in ALL])
def test_a_component_says_what_it_is_and_refuses_unknown_settings(kind, name):
    cls = PM.components[kind][name]
    assert cls.kind == kind and cls.name == name
    assert cls.description.strip(), f"{kind} {name}: a one-line description for `nt-harness plugins`"
    assert re.fullmatch(r"\d+", str(cls.version)), f"{kind} {name}: version {cls.version!r} is not a counter"
    with pytest.raises(ValidationError) as e:
        cls.Settings(no_such_setting=1)
    assert any(err["type"] == "extra_forbidden" for err in e.value.errors())
    cls.Settings.model_json_schema()  # settings are JSON: manifests and cache keys hold them


@pytest.mark.parametrize("kind, name", ALL, ids=[f"{k}:{n}" for k, n in ALL])
def test_default_settings_give_one_stable_cache_key(kind, name):
    cls = PM.components[kind][name]
    try:
        a, b = cls(), cls()
    except (ValidationError, ValueError) as e:  # a required setting (a file path): named, not crashed on
        assert "Field required" in str(e) or "required" in str(e).lower(), e
        return
    assert json.dumps(a.key_settings(), sort_keys=True) == json.dumps(b.key_settings(), sort_keys=True)
    assert set(a.execution) <= set(a.settings.model_dump()), f"{name}: execution names unknown settings"


@pytest.mark.parametrize("name", sorted(PM.components["annotator"]))
def test_an_annotator_declares_columns_and_reads_only_what_exists(name):
    cls = PM.components["annotator"][name]
    assert cls.columns and "trace_id" not in cls.columns
    written = set(TRACES.names) | set(QUESTIONS.names)
    for other in PM.components["annotator"].values():
        written |= set(other.columns)
    assert set(cls.requires) <= written, f"annotator {name} requires columns no component writes"


# selectors ------------------------------------------------------------------------------------------------
def run_selector(name: str, ctx, seed: int = 1) -> pa.Table:
    selector = PM.components["selector"][name](**SELECTOR_SETTINGS.get(name, {}))
    missing = set(selector.requires) - SYNTHETIC
    assert not missing, f"selector {name} requires {missing}: add them to SYNTHETIC in this test"
    return selector.select(pool(), BUDGET, seed, ctx)


@pytest.mark.parametrize("name", sorted(PM.components["selector"]))
def test_a_selector_decides_every_trace_deterministically_within_the_budget(name, ctx):
    p = pool()
    out = conform(run_selector(name, ctx), SELECTION, f"selector {name}")
    assert sorted(out.column("trace_id").to_pylist()) == sorted(p.column("trace_id").to_pylist())  # one row each
    assert out.equals(run_selector(name, ctx)), f"selector {name}: same seed, another selection"
    by_id = dict(zip(p.column("trace_id").to_pylist(), p.column("complete").to_pylist()))
    kept = [t for t, k in zip(out.column("trace_id").to_pylist(), out.column("kept").to_pylist()) if k]
    assert kept and all(by_id[t] for t in kept), f"selector {name} kept an incomplete trace"
    if name != "as-is":  # a released set trains as published, whatever the budget
        assert len(kept) <= BUDGET
    ranks = sorted(r for r, k in zip(out.column("rank").to_pylist(), out.column("kept").to_pylist()) if k)
    assert ranks == list(range(len(kept))), f"selector {name}: kept ranks are not 0..k-1"
    assert all(r for r in out.column("reason").to_pylist()), f"selector {name}: a decision without a reason"


def fingerprint(selection: pa.Table) -> str:
    rows = zip(selection.column("trace_id").to_pylist(), selection.column("kept").to_pylist(),
               selection.column("reason").to_pylist(), selection.column("rank").to_pylist())
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()[:16]


def test_a_selection_changes_only_with_its_selectors_version(ctx):
    stored = json.loads(CONTRACTS.read_text()) if CONTRACTS.exists() else {}
    now = {name: {"version": str(cls.version), "output": fingerprint(run_selector(name, ctx))}
           for name, cls in sorted(PM.components["selector"].items())}
    if os.environ.get("NT_HARNESS_UPDATE_CONTRACTS"):
        CONTRACTS.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        return
    for name, got in now.items():
        was = stored.get(name)
        assert was is not None, f"selector {name} has no stored output: regenerate (see the module docstring)"
        if was["version"] == got["version"]:
            assert was["output"] == got["output"], f"selector {name}'s output changed: bump its version"
        else:
            pytest.fail(f"selector {name} is version {got['version']} now: regenerate (see the module docstring)")


# hooks ------------------------------------------------------------------------------------------------------
HOOKS = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_implemented_where_the_tests_run_it(hook):
    """Implemented by a test's plugin, the example package, the guide's package (test_guide builds and runs it)
    or a first-party plugin (whose components the suite runs)."""
    guide = (REPO / "docs" / "plugins.md").read_text()
    assert hook in guide, f"{hook}: not in the plugin author's guide"
    implemented = re.search(rf"def {hook}\(", guide) or any(
        re.search(rf"def {hook}\(", f.read_text())
        for folder in (Path(__file__).parent, REPO / "examples", REPO / "plugins") for f in folder.rglob("*.py")
        if f.resolve() != Path(__file__).resolve())
    assert implemented, f"{hook}: nothing the tests run implements it"
