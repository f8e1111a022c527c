"""Profiles compose: a profile file names a base (a registered profile or another file) and states only what it
changes; a new component name starts that component afresh, in a profile or with --set; bad keys and bad inline
TOML are named in one line (README: "Configuration: profiles and recipes")."""

import os
from pathlib import Path

import pytest

from nt_harness.cli import make_spec, resolve_profile
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.recipes import SpecError, apply_sets, parse_value
from nt_harness.store import Store

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper" / "naturalthoughts.toml"
NATURAL = Path(__file__).parent / "data" / "natural_reasoning.jsonl"


@pytest.fixture(scope="module")
def pm():
    return Plugins()


def spec(pm, profile="embedded", sets=(), recipe="limo", budget=None):
    return make_spec(pm, pm.recipes[recipe], {"profile": str(profile), "set": list(sets)}, budget)


def validate(pm, tmp_path, spec):
    Pipeline(pm, Store(tmp_path / "w"), Progress(disable=True), threads=1).validate(spec)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_profile_over_embedded_that_changes_the_budget_runs_with_its_source_and_teacher(pm, tmp_path):
    small = write(tmp_path / "small.toml", 'base = "embedded"\nbudget = 16\n')
    got, embedded = spec(pm, small), spec(pm)
    assert got["budget"] == 16
    assert {k: got[k] for k in ("source", "teacher", "student", "trainer")} == \
        {k: embedded[k] for k in ("source", "teacher", "student", "trainer")}
    validate(pm, tmp_path, got)


def test_a_profile_without_a_teacher_takes_its_bases(pm, tmp_path):
    mine = write(tmp_path / "mine.toml",
                 f'base = "embedded"\n[source]\nname = "natural_reasoning"\npath = "{NATURAL}"\n')
    got = spec(pm, mine)
    assert got["teacher"] == spec(pm)["teacher"]
    assert got["source"] == {"name": "natural_reasoning", "path": str(NATURAL)}  # nothing left of the gym source
    validate(pm, tmp_path, got)
    alone = write(tmp_path / "alone.toml", 'student = "smollm2"\n')
    with pytest.raises(SpecError, match='no source given; .* base = "embedded"'):
        spec(pm, alone)


def test_set_a_new_source_name_starts_the_source_afresh(pm, tmp_path):
    for sets in (["source.name=natural_reasoning", f"source.path={NATURAL}"],
                 [f"source.path={NATURAL}", "source.name=natural_reasoning"]):  # either order
        got = spec(pm, sets=sets)
        assert got["source"] == {"name": "natural_reasoning", "path": str(NATURAL)}
        validate(pm, tmp_path, got)
    assert spec(pm, sets=["source.name=gym"])["source"] == spec(pm)["source"]  # the same name refines


def test_by_budget_and_recipe_names_hold_through_a_base_file_beside_the_profile(pm, tmp_path):
    (tmp_path / "sub").mkdir()
    middle = write(tmp_path / "sub" / "middle.toml", f'base = "{os.path.relpath(PAPER, tmp_path / "sub")}"\n')
    top = write(tmp_path / "top.toml", 'base = "sub/middle.toml"\nbudget = 1000\n[recipes]\nmine = "random"\n')
    assert resolve_profile(pm, str(top)).recipes == {"limo": "limo:released", "s1k": "s1k:released",
                                                     "openthoughts": "openthoughts:released", "mine": "random"}
    got = spec(pm, top, recipe="naturalthoughts")
    assert got["budget"] == 1000 and got["trainer"]["epochs"] == 10  # the paper's by_budget.1000
    assert spec(pm, middle, recipe="naturalthoughts")["trainer"]["epochs"] == 6  # its own 10000


def test_a_cycle_of_bases_is_one_error_naming_the_files(pm, tmp_path):
    write(tmp_path / "a.toml", 'base = "b.toml"\n')
    write(tmp_path / "b.toml", 'base = "a.toml"\n')
    with pytest.raises(SpecError, match=r"cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        resolve_profile(pm, str(tmp_path / "a.toml"))
    write(tmp_path / "c.toml", 'base = "nope"\n')
    with pytest.raises(Exception, match="unknown profile 'nope'"):
        resolve_profile(pm, str(tmp_path / "c.toml"))


def test_every_unknown_key_is_named_in_one_message(pm, tmp_path):
    bad = write(tmp_path / "bad.toml", 'base = "embedded"\nteachr = "x"\nbugdet = 3\n')
    with pytest.raises(SpecError, match=r"bad.toml: unknown keys 'teachr', 'bugdet'; known keys: source"):
        resolve_profile(pm, str(bad))
    with pytest.raises(SpecError, match=r"source: unknown keys colour, size \(known: families, per_family"):
        validate(pm, tmp_path, spec(pm, sets=["source.colour=red", "source.size=3"]))


def test_inline_toml_that_does_not_parse_says_so_and_a_plain_word_stays_a_string():
    with pytest.raises(SpecError, match=r"^--set benchmarks.lmeval.model_args: \{a=1 is not a valid TOML value: "
                                        r"Unclosed inline table"):
        apply_sets({"benchmarks": [{"name": "lmeval"}]}, ["benchmarks.lmeval.model_args={a=1"])
    assert apply_sets({"benchmarks": [{"name": "lmeval"}]}, ["benchmarks.lmeval.model_args={a=1}"]) == \
        {"benchmarks": [{"name": "lmeval", "model_args": {"a": 1}}]}
    for text in ("[1, 2", '"open', "'open"):
        with pytest.raises(SpecError, match="is not a valid TOML value"):
            parse_value(text)
    assert apply_sets({"teacher": {"name": "hf"}}, ["teacher.model=foo"])["teacher"] == {"name": "hf", "model": "foo"}
    assert parse_value("Don't guess.") == "Don't guess." and parse_value("1e-5") == 1e-5
