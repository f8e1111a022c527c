"""LLM-prompted annotators: parsing, retries and invalid counts, resume, the verifier-first judge, and their
place in the pipeline (declared inputs, nested backend settings checked before any work)."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from nt_harness.components import Context
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.cli import make_spec
from nt_harness.recipes import Recipe, SpecError
from nt_harness.store import Store
from nt_naturalthoughts.selectors import DisagreeSelector
from nt_naturalthoughts.prompted import (
    PAPER_DOMAINS,
    STRATEGIES,
    JudgeAnnotator,
    StrategiesAnnotator,
    TopicAnnotator,
    first_match,
    parse_score,
    parse_strategies,
    parse_yes_no,
)
from conftest import kept_ids


def backend(model):
    return {"name": "hf", "model": model, "system_prompt": None, "prefill": "", "force_answer": None,
            "temperature": 0.0, "batch_size": 4}


def run_ctx(tmp_path, resolve, **kw):
    ctx = Context(out=tmp_path / "out", scratch=tmp_path / "scratch", workdir=tmp_path, threads=1,
                  progress=Progress(disable=True), resolve_model=resolve,
                  build=Pipeline(Plugins(), Store(tmp_path / "store"), Progress(disable=True)).instantiate)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def traces(n, **columns):
    base = {"trace_id": [f"q{i}/0" for i in range(n)], "question_id": [f"q{i}" for i in range(n)],
            "question": [f"What is {i} + {i}?" for i in range(n)], "topic": [""] * n,
            "thinking": [f"{i} plus {i}: add them. Check: {2 * i} - {i} = {i}, right." for i in range(n)],
            "answer": [str(2 * i) for i in range(n)], "complete": [True] * n, "completion_tokens": [40] * n}
    base.update(columns)
    return pa.table(base)


# parsing ----------------------------------------------------------------------------------------------------
def test_topic_parse_prefers_the_longest_label_at_the_same_place():
    labels = {d: d for d in PAPER_DOMAINS}
    assert first_match("Military Science.", labels) == "Military Science"
    assert first_match("The domain is science, not law", labels) == "Science"
    assert first_match("literature and arts", labels) == "Literature and Arts"
    assert first_match("I cannot tell", labels) is None


def test_strategies_parse_names_aliases_and_none():
    assert parse_strategies("Self-verification, backtracking, case analysis") == [
        "self-verification", "backtracking", "case analysis"]
    assert parse_strategies("verification; backward chaining\nsanity check") == [
        "self-verification", "working backwards", "estimation"]
    assert parse_strategies("backtracking, backtracking") == ["backtracking"]
    assert parse_strategies("None.") == []
    assert parse_strategies("the model thinks hard") is None
    assert len(STRATEGIES) >= 8


def test_score_and_yes_no_parse_only_what_is_in_range():
    assert parse_score("7") == 7.0 and parse_score("Verbosity: 3/10") == 3.0 and parse_score("10.") == 10.0
    assert parse_score("11") is None and parse_score("high") is None
    assert parse_yes_no("Yes, they match.") == 1.0 and parse_yes_no("no") == 0.0 and parse_yes_no("maybe") is None


# running on a real backend ----------------------------------------------------------------------------------
def test_topic_annotator_on_smollm2_measures_agreement_with_gym_categories_and_resumes(tmp_path, resolve):
    from nt_gym import GymSource

    ctx = run_ctx(tmp_path, resolve)
    questions = GymSource(per_family=1, families=["chain_sum", "letter_counting", "aiw", "basic_arithmetic"]).load(ctx)
    p = questions.append_column("trace_id", pa.array([f"{q}/0" for q in questions.column("question_id").to_pylist()]))
    ann = TopicAnnotator(backend=backend("smollm2"), labels="source", keep_source=False, retries=1)
    out = ann.annotate(p, ctx)
    labels = set(questions.column("topic").to_pylist())
    values = out.column("topic").to_pylist()
    assert set(values) - {None} <= labels
    assert ctx.stats["invalid"] == values.count(None)
    agreement = ctx.stats["agreement_with_source_topic"]
    assert 0.0 <= agreement <= 1.0 and ctx.stats["agreement_questions"] == 4
    # a rerun over the same scratch answers from the shards: same values, no model call
    again = run_ctx(tmp_path, resolve)
    assert TopicAnnotator(backend=backend("smollm2"), labels="source", keep_source=False, retries=1).annotate(
        p, again).column("topic").to_pylist() == values
    assert all(a["batches_resumed"] == a["batches"] for a in again.stats["backend_attempts"])


def test_topic_keeps_the_source_label_without_asking(tmp_path, resolve):
    ctx = run_ctx(tmp_path, resolve)
    out = TopicAnnotator(backend=backend("tiny-llama")).annotate(traces(3, topic=["algebra", "logic", "algebra"]), ctx)
    assert out.column("topic").to_pylist() == ["algebra", "logic", "algebra"]
    assert ctx.stats["asked"] == 0


def test_unreadable_replies_are_asked_again_then_counted_invalid(tmp_path, resolve, tiny_llama):
    """A random-init model almost never names a strategy: every unit is re-asked `retries` times."""
    ctx = run_ctx(tmp_path, resolve)
    p = traces(5, complete=[True, True, True, True, False])
    out = StrategiesAnnotator(backend=backend("tiny-llama"), retries=2, max_tokens=8).annotate(p, ctx)
    counts = out.column("strategy_count").to_pylist()
    assert counts[4] is None  # incomplete: not asked
    invalid = sum(c is None for c in counts[:4])
    assert ctx.stats["units"] == 4 and ctx.stats["invalid"] == invalid
    assert ctx.stats["asked"] >= 4 + 2 * invalid  # every unit that stayed unreadable was asked three times
    density = out.column("strategy_density").to_pylist()
    assert all((c is None) == (d is None) for c, d in zip(counts, density))
    # per 1k thinking tokens: the thinking's share (by characters) of the 40 completion tokens
    think = [len(t) / (len(t) + len(a)) * 40
             for t, a in zip(p.column("thinking").to_pylist(), p.column("answer").to_pylist())]
    assert all(d == pytest.approx(c / k * 1000) for c, d, k in zip(counts, density, think) if c is not None)
    assert all(d > c / 40 * 1000 for c, d in zip(counts, density) if c)  # not per completion token


def test_judge_decides_from_grades_first_and_asks_only_the_rest(tmp_path, resolve, tiny_llama):
    ctx = run_ctx(tmp_path, resolve)
    p = traces(5, correct=[1.0, 1.0, 0.0, 0.0, None], system1_correct=[1.0, 0.0, 1.0, 0.0, None],
               system1_answer=["2", "3", "4", "7", "9"])
    out = JudgeAnnotator(backend=backend("tiny-llama"), retries=0).annotate(p, ctx)
    agree = out.column("models_agree").to_pylist()
    assert agree[:3] == [1.0, 0.0, 0.0]
    assert ctx.stats["by_verifier"] == 3 and ctx.stats["units"] == 2  # both wrong, and ungraded: the LLM decides


def test_disagree_by_judge_keeps_what_the_judge_found_different(ctx):
    p = traces(4, models_agree=[1.0, 0.0, None, 0.0], correct=[1.0, 1.0, 1.0, 0.0])
    sel = DisagreeSelector(fill=False)
    assert sel.requires == ("models_agree",)
    assert set(kept_ids(sel.select(p, 10, 0, ctx))) == {"q1/0", "q3/0"}
    strict = DisagreeSelector(require_correct=True, fill=False)
    assert set(strict.requires) == {"correct", "models_agree"}
    assert kept_ids(strict.select(p, 10, 0, ctx)) == ["q1/0"]


# in the pipeline --------------------------------------------------------------------------------------------
def test_pipeline_checks_annotator_order_and_backend_settings_before_any_work(tmp_path):
    pm = Plugins()
    pipe = Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1)
    embedded = lambda recipe: make_spec(pm, recipe, {"profile": "embedded"}, None)  # noqa: E731
    for name in ("naturalthoughts:strategy", "naturalthoughts:verbosity-high", "naturalthoughts:topic",
                 "naturalthoughts", "naturalthoughts:disagree-verified", "naturalthoughts:mix-difficulty"):
        pipe.validate(embedded(pm.recipes[name]))
    judge_first = embedded(Recipe("t", "", {"annotators": [{"name": "judge"}, {"name": "verify"}, {"name": "system1"}],
                                            "selector": {"name": "disagree", "by": "judge"}}))
    with pytest.raises(SpecError, match=r"annotators\[0\] 'judge' needs column\(s\) system1_answer, correct"):
        pipe.validate(judge_first)
    typo = embedded(Recipe("t", "", {"annotators": [{"name": "verbosity", "backend": {"name": "hf", "modle": "x"}}],
                                     "selector": {"name": "verbosity"}}))
    with pytest.raises(SpecError, match=r"annotators\[0\]\.backend: unknown key modle"):
        pipe.validate(typo)
    with pytest.raises(SpecError, match="unknown prompt version 'v9'"):
        pipe.validate(embedded(Recipe("t", "", {"annotators": [{"name": "verbosity", "prompt": "v9"}],
                                                "selector": {"name": "verbosity"}})))


def test_an_annotator_sees_only_the_pool_and_the_columns_it_declares(tmp_path):
    """Its cache key covers the pool and the annotations it reads, so it must see no other."""
    import nt_harness
    from nt_harness.components import Annotator
    from nt_harness.store import write_table
    from nt_hf.teacher import HFTeacher

    seen = {}

    class Probe(Annotator):
        name, columns, requires = "probe", ("probe",), ("answer_tokens",)

        def annotate(self, pool, ctx):
            seen["columns"] = pool.column_names
            return pa.table({"trace_id": pool.column("trace_id"), "probe": np.zeros(pool.num_rows)})

    class Plugin:
        @nt_harness.hookimpl
        def register_annotators(register):
            register(Probe)

    pipe = Pipeline(Plugins(extra=[Plugin]), Store(tmp_path), Progress(disable=True), threads=1)
    pool = traces(3)
    entry = pipe.stage("teacher", HFTeacher(), {}, lambda ctx: write_table(pool, ctx.out) and None)
    spec = make_spec(pipe.plugins, Recipe("t", "", {"annotators": [{"name": "length"}, {"name": "probe"}],
                                                    "selector": {"name": "random"}}), {"profile": "embedded"}, None)
    table, entries = pipe.annotated(spec, None, entry)
    assert seen["columns"] == pool.column_names + ["answer_tokens"]  # not thinking_tokens
    assert entries[1].manifest["inputs"] == {"pool": entry.key, "columns": {"answer_tokens": entries[0].key}}
    assert {"thinking_tokens", "answer_tokens", "probe"} <= set(table.column_names)


def test_the_paper_scale_profile_validates_and_points_every_annotator_at_its_server(tmp_path):
    from nt_harness.cli import make_spec

    pm = Plugins()
    pipe = Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1)
    path = str(Path(__file__).resolve().parents[1] / "configs" / "paper" / "naturalthoughts.toml")
    for name in ("naturalthoughts", "naturalthoughts:random", "naturalthoughts:long",
                 "naturalthoughts:strategy", "naturalthoughts:topic", "naturalthoughts:verbosity-high",
                 "naturalthoughts:cluster", "limo"):
        spec = make_spec(pm, pm.recipes[name], {"profile": path}, None)
        pipe.validate(spec)
        assert spec.teacher["model"] == "deepseek-ai/DeepSeek-R1"  # (a RunSpec has no `defaults`: they were applied)
        for ann in spec.annotators:
            if ann["name"] in ("topic", "strategies", "verbosity"):
                assert ann["backend"]["model"] == "meta-llama/Llama-3.1-70B-Instruct"
            if ann["name"] == "judge":
                assert ann["backend"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    spec = make_spec(pm, pm.recipes["naturalthoughts:strategy"], {"profile": path, "set": [
        "annotators.strategies.backend={name='hf', model='smollm2'}"]}, None)
    assert spec.annotators[1]["backend"] == {"name": "hf", "model": "smollm2"}  # a recipe's own value wins
