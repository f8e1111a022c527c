"""Profiles compose: a profile file names a base (a registered profile or another file) and states only what it
changes; a new component name starts that component afresh, in a profile or with --set; bad keys and bad inline
TOML are named in one line (README: "Configuration: profiles and recipes"); what they merge to is one RunSpec,
checked before any work."""

import os
from pathlib import Path

import pytest

from nt_harness.cli import make_spec, resolve_profile
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.recipes import RunSpec, SpecError, apply_sets, parse_value
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
    assert got.budget == 16
    assert got.model_dump(include={"source", "teacher", "student", "trainer"}) == \
        embedded.model_dump(include={"source", "teacher", "student", "trainer"})
    validate(pm, tmp_path, got)


def test_a_profile_without_a_teacher_takes_its_bases(pm, tmp_path):
    mine = write(tmp_path / "mine.toml",
                 f'base = "embedded"\n[source]\nname = "natural_reasoning"\npath = "{NATURAL}"\n')
    got = spec(pm, mine)
    assert got.teacher == spec(pm).teacher
    assert got.source == {"name": "natural_reasoning", "path": str(NATURAL)}  # nothing left of the gym source
    validate(pm, tmp_path, got)
    alone = write(tmp_path / "alone.toml", 'student = "smollm2"\n')
    with pytest.raises(SpecError, match='no source given; .* base = "embedded"'):
        spec(pm, alone)


def test_set_a_new_source_name_starts_the_source_afresh(pm, tmp_path):
    for sets in (["source.name=natural_reasoning", f"source.path={NATURAL}"],
                 [f"source.path={NATURAL}", "source.name=natural_reasoning"]):  # either order
        got = spec(pm, sets=sets)
        assert got.source == {"name": "natural_reasoning", "path": str(NATURAL)}
        validate(pm, tmp_path, got)
    assert spec(pm, sets=["source.name=gym"]).source == spec(pm).source  # the same name refines


def test_by_budget_and_recipe_names_hold_through_a_base_file_beside_the_profile(pm, tmp_path):
    (tmp_path / "sub").mkdir()
    middle = write(tmp_path / "sub" / "middle.toml", f'base = "{os.path.relpath(PAPER, tmp_path / "sub")}"\n')
    top = write(tmp_path / "top.toml", 'base = "sub/middle.toml"\nbudget = 1000\n[recipes]\nmine = "random"\n')
    assert resolve_profile(pm, str(top)).recipes == {"limo": "limo:released", "s1k": "s1k:released",
                                                     "openthoughts": "openthoughts:released", "mine": "random"}
    got = spec(pm, top, recipe="naturalthoughts")
    assert got.budget == 1000 and got.trainer["epochs"] == 10  # the paper's by_budget.1000
    assert spec(pm, middle, recipe="naturalthoughts").trainer["epochs"] == 6  # its own 10000


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


# the RunSpec: one typed spec, checked before any work ---------------------------------------------
def test_a_run_spec_takes_whole_numbers_only_and_names_each_wrong_setting():
    good = dict(source="gym", teacher={"name": "hf", "n": 2}, selector="random", trainer="sft", student="smollm2",
                budget=16)
    spec = RunSpec.of(good)
    assert (spec.budget, spec.seed, spec.annotators, spec.executor) == (16, 0, [], None)
    assert spec.source == {"name": "gym"} and spec.teacher == {"name": "hf", "n": 2}  # a bare name is a component
    for budget in ("abc", 0, -3, 1.5, 2.0, True, "5"):  # 1.5 was trained as 1; "5" and 2.0 are not what a budget is
        with pytest.raises(SpecError) as e:
            RunSpec.of({**good, "budget": budget}, "recipe 'x': ")
        assert str(e.value) == f"recipe 'x': budget: a whole number, at least 1 (got {budget!r})"
    with pytest.raises(SpecError, match=r"^student: Input should be a valid string; seed: a whole number, at least 0 "
                                        r"\(got -1\)$"):
        RunSpec.of({**good, "seed": -1, "student": 5})
    with pytest.raises(SpecError, match=r"^trainer: Input should be a valid dictionary; budgte: Extra inputs"):
        RunSpec.of({**good, "trainer": ["sft"], "budgte": 3})
    with pytest.raises(SpecError, match=r"^budget: Field required$"):
        RunSpec.of({k: v for k, v in good.items() if k != "budget"})


def test_the_spec_a_command_runs_is_a_run_spec_with_the_profile_recipe_and_flags_in_it(pm):
    got = make_spec(pm, pm.recipes["naturalthoughts"], {"profile": "embedded", "student": "tiny-llama",
                                                        "set": ["seed=3", "trainer.lr=1e-5"]}, 32)
    assert isinstance(got, RunSpec)
    assert (got.budget, got.seed, got.student, got.trainer["lr"]) == (32, 3, "tiny-llama", 1e-5)
    assert got.selector["name"] == "disagree" and [b["name"] for b in got.benchmarks] == ["lmeval"]
    system1 = next(a for a in got.annotators if a["name"] == "system1")
    assert system1["max_new_tokens"] == 32  # the profile's defaults.annotators.system1, applied
    with pytest.raises(SpecError, match=r"^recipe 'limo': budget: a whole number, at least 1 \(got 1.5\)$"):
        make_spec(pm, pm.recipes["limo"], {"profile": "embedded", "set": ["budget=1.5"]}, None)


@pytest.mark.parametrize("budget", ["abc", "0", "1.5"])
def test_a_bad_budget_is_one_line_before_any_component_is_built(tmp_path, monkeypatch, budget):
    """`--set budget=0` used to be refused only after the teacher and annotators ran, `1.5` trained as 1: now
    the command stops at its RunSpec, before a pipeline exists (the model-free study: nothing would be slow)."""
    import study_plugin
    from click.testing import CliRunner

    from nt_harness import cli as cli_module

    monkeypatch.setattr(cli_module, "plugins", lambda: Plugins(load_entrypoints=False, extra=[study_plugin]))
    monkeypatch.setattr(cli_module, "Pipeline", None)  # a pipeline made would be a TypeError, a traceback
    result = CliRunner().invoke(cli_module.cli, ["compare", "a", "b", "--profile", "study", "--set",
                                                 f"budget={budget}", "--workdir", str(tmp_path / "w"),
                                                 "--results", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: recipe 'a': budget: a whole number, at least 1 (got "
                                          f"{parse_value(budget)!r})"]
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
