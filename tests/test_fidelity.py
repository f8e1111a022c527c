"""The NaturalThoughts paper profile and recipes hold the paper's numbers (Li et al. 2025, arXiv 2507.01921),
each asserted with its section beside it; the baselines' presets are held in test_baselines.py and the
evaluation protocols in test_tasks.py. Also the two spec rules the paper profile relies on: settings per
budget and a profile's recipe names."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from nt_harness import cli
from nt_harness.cli import make_spec, resolve_profile
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.recipes import Recipe, RunSpec, SpecError, at_budget
from nt_harness.store import Store

REPO = Path(__file__).resolve().parents[1]
PAPER = str(REPO / "configs" / "paper" / "naturalthoughts.toml")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pm():
    return Plugins()


def paper_spec(pm, recipe: str, budget: int | None = None, sets=()) -> RunSpec:
    return make_spec(pm, pm.recipes[recipe], {"profile": PAPER, "set": list(sets)}, budget)


def sft_settings(spec):
    from nt_sft.trainer import SFTTrainer

    return SFTTrainer(**{k: v for k, v in spec.trainer.items() if k != "name"}).settings


def test_the_paper_profile_trains_as_section_4_says(pm):
    t = sft_settings(paper_spec(pm, "naturalthoughts", 10000))
    assert t.lr == 2e-5 and t.schedule == "constant"  # §4: AdamW, constant learning rate 2e-5
    assert t.weight_decay == 0.1  # §4: weight decay 0.1
    assert t.max_length == 16384  # §4: responses up to 16,384 tokens
    assert t.global_batch == 24 and t.grad_accum == 3  # §4: ~400k tokens per step, 24 x 16,384 packed tokens
    # §4: 10 / 6 / 8 / 8 epochs for 1k / 10k / 100k / 500k examples
    for budget, epochs in [(1000, 10), (10000, 6), (100000, 8), (500000, 8)]:
        assert sft_settings(paper_spec(pm, "naturalthoughts", budget)).epochs == epochs, budget


def test_the_paper_profiles_teacher_judge_and_system1_are_the_papers(pm):
    spec = paper_spec(pm, "naturalthoughts")
    teacher = spec.teacher
    assert teacher["model"] == "deepseek-ai/DeepSeek-R1"  # §3.1: DeepSeek-R1, named by its dated weights
    assert (teacher["temperature"], teacher["top_p"]) == (0.6, 0.95)  # the DeepSeek-R1 model card
    annotators = {a["name"]: a for a in spec.annotators}
    assert annotators["judge"]["backend"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"  # §4.2: the judge
    assert annotators["judge"]["use_verifier"] is False  # §4.2: the judge decides every pair
    from nt_hf.system1 import System1Annotator

    assert annotators["system1"].get("recorded", True)  # §4.2: NaturalReasoning's recorded Llama-3.3-70B answer
    assert System1Annotator().settings.recorded
    assert spec.selector == {"name": "disagree"}  # the judge's verdict, no correctness filter (§3.2)
    from nt_naturalthoughts.selectors import DisagreeSelector

    assert DisagreeSelector().settings.by == "judge" and DisagreeSelector().settings.require_correct is False


def test_the_papers_baseline_rows_are_the_released_sets_in_the_paper_profile(pm, tmp_path):
    aliases = resolve_profile(pm, PAPER).recipes
    assert aliases == {"limo": "limo:released", "s1k": "s1k:released", "openthoughts": "openthoughts:released"}
    pipe = Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1)
    for name in aliases.values():
        pipe.validate(paper_spec(pm, name, 1000))  # every released recipe runs under the paper profile


def test_a_profiles_recipe_name_is_what_the_cli_runs(tmp_path, monkeypatch):
    profile = tmp_path / "p.toml"
    profile.write_text(Path(PAPER).read_text().replace('path = "GAIR/LIMO"', f'path = "{DATA / "released" / "limo.jsonl"}"'))
    out = CliRunner().invoke(cli.cli, ["select", "limo", "--profile", str(profile), "--workdir", str(tmp_path / "w"),
                                       "--quiet"])
    assert out.exit_code == 0, out.output
    assert [d.name.rsplit("-", 1)[0] for d in (tmp_path / "w" / "store" / "source").iterdir()] == ["limo-released"]


def test_a_budget_takes_the_entry_of_the_largest_budget_not_above_it():
    spec = {"budget": 5000, "trainer": {"name": "sft", "epochs": 1},
            "by_budget": {"1000": {"trainer": {"epochs": 10}}, "10000": {"trainer": {"epochs": 6}}}}
    assert at_budget(spec, 5000)["trainer"] == {"name": "sft", "epochs": 10}
    assert at_budget(spec, 10000)["trainer"]["epochs"] == 6
    assert at_budget(spec, 999)["trainer"]["epochs"] == 1 and "by_budget" not in at_budget(spec, 999)
    with pytest.raises(SpecError, match="by_budget.many"):
        at_budget({"by_budget": {"many": {"trainer": {}}}}, 1)
    with pytest.raises(SpecError, match=r"by_budget.1000: unknown key 'trainr'"):
        at_budget({"by_budget": {"1000": {"trainr": {}}}}, 1000)


def test_a_recipes_own_settings_and_the_command_line_beat_the_profiles_budget_entry(pm):
    own = Recipe("fixed", "", {**pm.recipes["naturalthoughts"].spec, "trainer": {"name": "sft", "epochs": 15}})
    assert make_spec(pm, own, {"profile": PAPER}, 1000).trainer["epochs"] == 15
    assert paper_spec(pm, "naturalthoughts", 1000, ["trainer.epochs=2"]).trainer["epochs"] == 2
    assert paper_spec(pm, "naturalthoughts", None, ["budget=1000"]).trainer["epochs"] == 10
