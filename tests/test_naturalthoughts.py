"""NaturalThoughts' selectors, System-1/System-2 mixing, the `embed` annotator and the `natural_reasoning`
source: one test per formula, on hand-built pools."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import nt_harness
from nt_harness.components import Context, Selector, Source, Teacher, Trainer
from nt_harness.datafiles import MalformedRow
from nt_harness.pipeline import Pipeline, build_examples
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, SELECTION, TRACES
from nt_harness.cli import make_spec
from nt_harness.recipes import RunSpec, SpecError
from nt_harness.store import Store
from nt_naturalthoughts.annotators import EmbedAnnotator
from nt_naturalthoughts.selectors import (
    ClusterUniformSelector,
    ComposeSelector,
    MixSelector,
    LongSelector,
    ShortReferenceSelector,
    StrategyDiverseSelector,
    TopicUniformSelector,
    VerbositySelector,
)
from nt_naturalthoughts.source import NaturalReasoningSource
from conftest import kept_ids

DATA = Path(__file__).parent / "data"


def pool(n_questions=10, n=1, **columns):
    rows = n_questions * n
    base = {
        "trace_id": [f"q{i // n}/{i % n}" for i in range(rows)],
        "question_id": [f"q{i // n}" for i in range(rows)],
        "question": [f"question {i // n}?" for i in range(rows)],
        "thinking": ["let me think"] * rows,
        "answer": ["<answer>1</answer>"] * rows,
        "complete": [True] * rows,
    }
    base.update({k: list(v) for k, v in columns.items()})
    return pa.table(base)


def kept_rows(sel):
    return np.flatnonzero(sel.column("kept").to_numpy(zero_copy_only=False))


def reasons(sel):
    return dict(zip(sel.column("trace_id").to_pylist(), sel.column("reason").to_pylist()))


# long -------------------------------------------------------------------------------------------------
def test_long_keep_rate_at_half_the_scale_is_half_to_the_power_tau(ctx):
    n = 20000
    p = pool(n, thinking_tokens=[2500] * n)
    sel = LongSelector(fill=False).select(p, n, seed=0, ctx=ctx)
    assert sel.schema.equals(SELECTION)
    expected = 0.5 ** 2.5  # (l / C)^τ with l = C / 2, C = 5000, τ = 2.5 (NaturalThoughts §3.2)
    rate = len(kept_rows(sel)) / n
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n), rate


def test_long_keeps_every_trace_at_or_past_the_scale_and_none_without_thinking(ctx):
    p = pool(200, thinking_tokens=[5000] * 100 + [0] * 100)
    sel = LongSelector(fill=False).select(p, 200, seed=3, ctx=ctx)
    assert sorted(kept_rows(sel)) == list(range(100))
    assert reasons(sel)["q150/0"] == "dropped: not sampled by length"


def test_long_fill_tops_up_to_the_budget_favouring_long_traces_and_is_recorded(ctx):
    lengths = np.random.default_rng(0).integers(0, 2000, 2000)
    p = pool(2000, thinking_tokens=lengths)
    sel = LongSelector().select(p, 1000, seed=0, ctx=ctx)
    rows = kept_rows(sel)
    assert len(rows) == 1000
    why = np.array(sel.column("reason").to_pylist())
    filled = why == "kept: fill (length-weighted)"
    assert ctx.stats["filled"] == filled.sum() > 0
    assert lengths[filled].mean() > lengths.mean() + 100  # the fill keeps the length bias
    assert ctx.stats["sampled"] + ctx.stats["filled"] == 1000


def test_long_drops_incomplete_traces(ctx):
    p = pool(10, thinking_tokens=[9000] * 10, complete=[i % 2 == 0 for i in range(10)])
    sel = LongSelector().select(p, 10, seed=0, ctx=ctx)
    assert sorted(kept_ids(sel)) == [f"q{i}/0" for i in range(0, 10, 2)]
    assert reasons(sel)["q1/0"] == "dropped: incomplete"


# strategy-diverse ---------------------------------------------------------------------------------------
def test_strategy_diverse_keeps_nothing_outside_four_to_eight(ctx):
    rng = np.random.default_rng(1)
    n = 3000
    count = rng.integers(0, 13, n)
    density = rng.random(n)
    p = pool(n, strategy_count=count, strategy_density=density)
    sel = StrategyDiverseSelector(fill=False).select(p, n, seed=0, ctx=ctx)
    rows = kept_rows(sel)
    assert len(rows) > 0 and ((count[rows] >= 4) & (count[rows] <= 8)).all()
    outside = np.flatnonzero((count < 4) | (count > 8))
    assert set(np.array(sel.column("reason").to_pylist())[outside]) == {"dropped: strategies outside 4-8"}
    # low density (below the in-range 25 % quantile) is downsampled to about half; the rest all kept
    in_range = (count >= 4) & (count <= 8)
    threshold = np.quantile(density[in_range], 0.25)
    low, high = in_range & (density < threshold), in_range & (density >= threshold)
    kept = np.zeros(n, bool)
    kept[rows] = True
    assert kept[high].all()
    assert 0.4 < kept[low].mean() < 0.6


def test_strategy_diverse_fill_comes_after_every_in_range_trace(ctx):
    count = [5] * 5 + [1] * 20
    p = pool(25, strategy_count=count, strategy_density=[1.0] * 25)
    sel = StrategyDiverseSelector(low_density_keep=1.0).select(p, 10, seed=0, ctx=ctx)
    why = reasons(sel)
    assert all(why[f"q{i}/0"] == "kept: 4-8 strategies" for i in range(5))
    assert sum(r == "kept: fill (random)" for r in why.values()) == 5


# topic-uniform / cluster-uniform ----------------------------------------------------------------------------
def test_topic_uniform_balances_topics_until_the_small_ones_run_out(ctx):
    topics = ["math"] * 100 + ["law"] * 30 + ["history"] * 10
    p = pool(140, n=1, topic=topics)
    for budget, expected in [(30, {"math": 10, "law": 10, "history": 10}),
                             (60, {"math": 25, "law": 25, "history": 10})]:
        sel = TopicUniformSelector().select(p, budget, seed=0, ctx=ctx)
        got = {}
        for r in kept_rows(sel):
            got[topics[r]] = got.get(topics[r], 0) + 1
        assert got == expected


def test_topic_uniform_keeps_one_trace_per_question(ctx):
    p = pool(12, n=3, topic=["a", "b", "c"] * 12, complete=[True] * 36)
    sel = TopicUniformSelector().select(p, 12, seed=0, ctx=ctx)
    assert len({t.split("/")[0] for t in kept_ids(sel)}) == len(kept_ids(sel)) == 12


def test_cluster_uniform_balances_clusters(ctx):
    cluster = [0] * 50 + [1] * 8 + [2] * 8
    p = pool(66, cluster=cluster)
    sel = ClusterUniformSelector().select(p, 24, seed=0, ctx=ctx)
    assert np.bincount(np.array(cluster)[kept_rows(sel)]).tolist() == [8, 8, 8]
    assert ctx.stats["kept_per_group"] == {"0": 8, "1": 8, "2": 8}


# verbosity / short-reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("level, allowed", [("low", range(0, 4)), ("medium", range(4, 7)), ("high", range(7, 11))])
def test_verbosity_keeps_only_its_bin(ctx, level, allowed):
    score = [i % 11 for i in range(110)]
    p = pool(110, verbosity=score)
    sel = VerbositySelector(level=level, fill=False).select(p, 110, seed=0, ctx=ctx)
    assert sorted({score[r] for r in kept_rows(sel)}) == list(allowed)


def test_short_reference_keeps_short_answers_and_drops_empty_ones(ctx):
    refs = ["42", "x = 3", "", "a long explanation " * 5, None, "yes"]
    p = pool(6, reference=refs)
    sel = ShortReferenceSelector(fill=False).select(p, 6, seed=0, ctx=ctx)
    assert sorted(kept_ids(sel)) == ["q0/0", "q1/0", "q5/0"]
    why = reasons(sel)
    assert why["q2/0"] == why["q4/0"] == "dropped: no reference answer"
    assert why["q3/0"] == "dropped: reference over 32 chars"


# compose ---------------------------------------------------------------------------------------------------
def test_compose_disagree_then_long_narrows_then_fills_from_random(ctx):
    n = 400
    rng = np.random.default_rng(0)
    system1 = (rng.random(n) < 0.5).astype(float)  # half the questions: the System-1 model is right
    tokens = rng.integers(0, 10000, n)
    p = pool(n, models_agree=system1, thinking_tokens=tokens)
    comp = ComposeSelector(steps=[{"name": "disagree"}, {"name": "long"}])
    assert set(comp.requires) == {"models_agree", "thinking_tokens"}
    sel = comp.select(p, 300, seed=0, ctx=ctx)
    why = np.array(sel.column("reason").to_pylist())
    rows = kept_rows(sel)
    assert len(rows) == 300
    composed = rows[why[rows] == "kept: sampled by length, p=(l/C)^τ [disagree > long]"]
    filled = rows[why[rows] == "kept: fill (random)"]
    assert len(composed) + len(filled) == 300 and len(filled) > 0
    assert (system1[composed] == 0).all()  # every composed pick is a disagreement
    assert tokens[composed].mean() > tokens[system1 == 0].mean()  # ... and length-biased
    assert "dropped: models agree [disagree]" in set(why)
    assert ctx.stats["filled"] == len(filled)
    ranks = sel.column("rank").to_numpy()
    assert sorted(ranks[rows]) == list(range(300))
    assert ranks[filled].min() > ranks[composed].max()  # fill comes last


def test_compose_names_a_bad_step():
    with pytest.raises(SpecError, match=r"compose.steps\[1\]: unknown selector 'nope'"):
        ComposeSelector(steps=[{"name": "random"}, {"name": "nope"}])
    with pytest.raises(SpecError, match=r"compose.steps\[0\] \(long\): exponent"):
        ComposeSelector(steps=[{"name": "long", "exponent": "steep"}])


def test_compose_and_mix_find_their_steps_in_the_shared_plugins(monkeypatch):
    """No plugin manager of their own: the process's one, loaded once, as a third-party composer would use."""
    nt_harness.plugins.shared()
    monkeypatch.setattr(nt_harness.plugins, "Plugins", lambda *a, **kw: pytest.fail("a plugin manager of its own"))
    composed = ComposeSelector(steps=[{"name": "disagree"}, {"name": "long"}])
    assert [step.name for step in composed.steps] == ["disagree", "long"]
    assert MixSelector(select={"name": "long"}).inner.name == "long"


# determinism -----------------------------------------------------------------------------------------------
def determinism_pool():
    rng = np.random.default_rng(7)
    n = 300
    return pool(n // 3, n=3, thinking_tokens=rng.integers(0, 9000, n), topic=rng.choice(list("abcde"), n),
                cluster=rng.integers(0, 6, n), verbosity=rng.integers(0, 11, n),
                reference=rng.choice(["1", "two", "", "a much longer reference answer than allowed here"], n),
                strategy_count=rng.integers(0, 12, n), strategy_density=rng.random(n),
                correct=rng.integers(0, 2, n).astype(float), system1_correct=rng.integers(0, 2, n).astype(float),
                models_agree=rng.integers(0, 2, n).astype(float))


@pytest.mark.parametrize("selector", [
    LongSelector(), TopicUniformSelector(), ClusterUniformSelector(), VerbositySelector(), ShortReferenceSelector(),
    StrategyDiverseSelector(), ComposeSelector(steps=[{"name": "disagree"}, {"name": "long"}]),
], ids=lambda s: s.name)
def test_selectors_are_deterministic_by_seed_and_decide_every_trace(ctx, selector):
    p = determinism_pool()
    a = selector.select(p, 40, seed=1, ctx=ctx)
    assert a.num_rows == p.num_rows and a.schema.equals(SELECTION)
    assert a.equals(selector.select(p, 40, seed=1, ctx=ctx))
    assert kept_ids(a) != kept_ids(selector.select(p, 40, seed=2, ctx=ctx))
    assert len(kept_ids(a)) == 40
    assert len({t.split("/")[0] for t in kept_ids(a)}) == 40  # one trace per question
    assert all(r.startswith(("kept:", "dropped:")) for r in a.column("reason").to_pylist())


# mixing ----------------------------------------------------------------------------------------------------
def all_kept(p):
    n = p.num_rows
    return pa.table({"trace_id": p.column("trace_id"), "kept": [True] * n, "reason": ["kept"] * n,
                     "rank": list(range(n))}, schema=SELECTION)


def mixed_modes(pool_, ctx, seed=3, **settings) -> dict:
    """trace id -> the mode its training example gets, through the `mix` selector and the example builder."""
    sel = MixSelector(**settings).select(pool_, pool_.num_rows, seed, ctx)
    ex = build_examples(pool_, sel)
    return dict(zip(ex.column("trace_id").to_pylist(), ex.column("mode").to_pylist()))


def test_a_selection_without_modes_trains_everything_system2():
    p = pool(50)
    ex = build_examples(p, all_kept(p))
    assert set(ex.column("mode").to_pylist()) == {"system2"}
    assert ex.column("trace_id").to_pylist() == p.column("trace_id").to_pylist()


@pytest.mark.parametrize("share", [0.2, 0.4, 0.6])
def test_random_mixing_makes_a_share_p_of_examples_system2(share, ctx):
    """Table 4's random mixing: p is the System-2 share."""
    n = 20000
    p = pool(n)
    modes = mixed_modes(p, ctx, mode="random", p=share)
    rate = sum(m == "system2" for m in modes.values()) / n
    assert len(modes) == n and abs(rate - share) < 4 * math.sqrt(share * (1 - share) / n)
    assert mixed_modes(p, ctx, mode="random", p=share) == modes
    assert mixed_modes(p, ctx, seed=4, mode="random", p=share) != modes


def test_random_mixing_extremes(ctx):
    p = pool(100)
    for share, mode in [(0, "system1"), (1, "system2")]:
        assert set(mixed_modes(p, ctx, mode="random", p=share).values()) == {mode}


def test_difficulty_mixing_is_system2_exactly_where_the_judge_says_the_models_disagree(ctx):
    """NaturalThoughts Table 4: System-2 where the models disagree, by the judge, whatever the grades say."""
    p = pool(5, models_agree=[0.0, 1.0, 0.0, 1.0, None], correct=[1.0, 1.0, 0.0, 0.0, 1.0])
    sel = MixSelector(mode="difficulty")
    assert sel.requires == ("models_agree",)
    assert mixed_modes(p, ctx, mode="difficulty") == {
        "q0/0": "system2", "q1/0": "system1", "q2/0": "system2", "q3/0": "system1", "q4/0": "system1"}


@pytest.mark.parametrize("settings, message", [
    ({"mode": "random", "p": 1.5}, "less than or equal to 1"),
    ({"mode": "difficulty", "p": 0.4}, "p, the System-2 share"),
    ({"mode": "sometimes", "p": 0.4}, "mode"),
])
def test_mix_settings_name_the_bad_one(settings, message):
    with pytest.raises(ValidationError, match=message):
        MixSelector(**settings)
    with pytest.raises(SpecError, match=r"mix.select: unknown selector 'nope'"):
        MixSelector(select={"name": "nope"}, mode="random", p=0.5)


# the train stage is keyed by the mixing settings ------------------------------------------------------------
class TwoQuestions(Source):
    name = "two-questions"

    def load(self, ctx):
        rows = [{"question_id": f"q{i}", "source": "t", "question": f"what is {i}?", "reference": str(i), "topic": "t",
                 "metadata": "{}"} for i in range(4)]
        return pa.Table.from_pylist(rows, schema=QUESTIONS)


class EchoTeacher(Teacher):
    name = "echo"

    def generate(self, questions, ctx):
        rows = [{**q, "trace_id": f"{q['question_id']}/0", "teacher": "echo", "sample": 0, "thinking": "hm",
                 "answer": f"<answer>{q['reference']}</answer>", "complete": True, "finish_reason": "stop",
                 "prompt_tokens": 1, "completion_tokens": 1} for q in questions.to_pylist()]
        return pa.Table.from_pylist(rows, schema=TRACES)


class CountingTrainer(Trainer):
    name = "counting"

    def train(self, examples, student, ctx):
        return {"train_tokens": examples.num_rows}


class KeepAll(Selector):
    name = "keep-all"

    def select(self, pool, budget, seed, ctx):
        return all_kept(pool)


class InCode:
    @nt_harness.hookimpl
    def register_sources(self, register):
        register(TwoQuestions)

    @nt_harness.hookimpl
    def register_teachers(self, register):
        register(EchoTeacher)

    @nt_harness.hookimpl
    def register_trainers(self, register):
        register(CountingTrainer)

    @nt_harness.hookimpl
    def register_selectors(self, register):
        register(KeepAll)


def test_the_train_stage_key_follows_the_mix_through_the_selection(tmp_path):
    pipe = Pipeline(Plugins(extra=[InCode()]), Store(tmp_path), Progress(disable=True), threads=1)
    base = {"source": {"name": "two-questions"}, "teacher": {"name": "echo"}, "selector": {"name": "random"},
            "trainer": {"name": "counting"}, "student": "no-such/model", "budget": 4, "seed": 0}
    keys = {}
    for label, p in [("none", None), ("p0", 0.0), ("p1", 1.0)]:
        spec = RunSpec(**dict(base, selector={"name": "mix", "mode": "random", "p": p}) if p is not None else base)
        pipe.validate(spec)
        keys[label] = pipe.run("t", spec, until="train").stages["train"]
    assert len(set(keys.values())) == 3
    modes = Store(tmp_path).get("train", "counting", keys["p0"]).table("examples").column("mode").to_pylist()
    assert modes == ["system1"] * 4
    with pytest.raises(SpecError, match="needs column.*models_agree"):
        pipe.validate(RunSpec(**dict(base, selector={"name": "mix", "mode": "difficulty"})))


# recipes ---------------------------------------------------------------------------------------------------
def test_recipes_are_registered_and_their_selectors_find_their_columns(tmp_path):
    pm = Plugins()
    names = {"naturalthoughts:topic", "naturalthoughts:cluster", "naturalthoughts:long", "naturalthoughts:short-ref",
             "naturalthoughts:mix-random-0.2", "naturalthoughts:mix-random-0.4", "naturalthoughts:mix-random-0.6",
             "naturalthoughts:mix-difficulty"}
    assert names <= set(pm.recipes)
    assert all(pm.recipes[n].description for n in names)
    pipe = Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1)
    for n in names:
        pipe.validate(make_spec(pm, pm.recipes[n], {"profile": "embedded"}, None))


def test_cli_names_a_bad_mixing_probability(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nt_harness.cli", "run", "naturalthoughts:mix-random-0.4", "--set",
                          "selector.p=2", "--workdir", str(tmp_path / "w"), "--quiet"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "selector" in out.stderr and "p" in out.stderr


# natural_reasoning -------------------------------------------------------------------------------------------
def test_natural_reasoning_source_reads_the_public_schema(ctx):
    table = NaturalReasoningSource(path=str(DATA / "natural_reasoning.jsonl")).load(ctx)
    assert table.schema.equals(QUESTIONS)
    assert table.num_rows == 5 and ctx.stats["dropped_duplicate"] == 1
    assert ctx.stats["without_system1_answer"] == 1
    first = table.to_pylist()[0]
    assert first["reference"] == "80" and first["source"] == "natural_reasoning"
    meta = json.loads(first["metadata"])
    assert meta == {"system1_model": "Llama3.3-70B-Instruct", "system1_answer": "The average speed is 120 / 1.5 = 80 km/h."}
    assert table.column("reference").to_pylist()[3] == ""  # a null reference answer is empty
    limited = NaturalReasoningSource(path=str(DATA / "natural_reasoning.jsonl"), limit=2).load(ctx)
    assert limited.num_rows == 2


def test_natural_reasoning_reads_parquet_too(ctx, tmp_path):
    rows = [json.loads(line) for line in (DATA / "natural_reasoning.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nr.parquet")
    table = NaturalReasoningSource(path=str(tmp_path / "nr.parquet")).load(ctx)
    assert table.num_rows == 5


@pytest.mark.parametrize("line, problem", [
    ('{"reference_answer": "1"}', "no `question`"),
    ('{"question": " "}', "`question` must be a non-empty string"),
    ('{"question": "q?", "responses": [{"response": "r"}]}', "responses[0] must have string `response_model`"),
    ('{"question": "q?", "reference_answer": 3}', "`reference_answer` must be a string or null"),
    ('{"question": "q?"', "not valid JSON"),
])
def test_natural_reasoning_names_the_file_and_row_of_a_malformed_row(ctx, tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text((DATA / "natural_reasoning.jsonl").read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(MalformedRow) as e:  # a SpecError: the CLI shows it as one line
        NaturalReasoningSource(path=str(path)).load(ctx)
    assert f"{path}: row 2: " in str(e.value) and problem in str(e.value)


# embed -------------------------------------------------------------------------------------------------------
def test_embed_annotator_gives_clusters_of_the_requested_k(tmp_path, tiny_llama):
    texts = [f"What is {a} plus {b}?" for a, b in [(1, 2), (3, 4), (5, 6)]] + \
            [f"Who wrote the novel {t}?" for t in ["Emma", "Dune", "Ulysses"]] + \
            [f"Translate '{w}' into French." for w in ["cat", "house", "tree"]] + ["Define entropy.", "Name a prime."]
    n = len(texts)
    p = pa.table({"trace_id": [f"q{i}/{s}" for i in range(n) for s in range(2)],
                  "question_id": [f"q{i}" for i in range(n) for _ in range(2)],
                  "question": [t for t in texts for _ in range(2)]})
    ctx = Context(out=tmp_path, scratch=tmp_path, workdir=tmp_path, threads=1, resolve_model=lambda spec: tiny_llama)
    ann = EmbedAnnotator(model="tiny-llama", k=3, batch_size=4)
    out = ann.annotate(p, ctx)
    assert out.column("trace_id").equals(p.column("trace_id"))
    cluster = out.column("cluster").to_pylist()
    assert set(cluster) == {0, 1, 2}
    assert cluster[0::2] == cluster[1::2]  # both traces of a question share its cluster
    assert ctx.stats["k"] == 3 and sum(ctx.stats["cluster_sizes"]) == n
    emb = pq.read_table(tmp_path / "question_embeddings.parquet")
    assert emb.num_rows == n and emb.column("question_id").to_pylist() == [f"q{i}" for i in range(n)]
    assert ann.annotate(p, Context(out=tmp_path, scratch=tmp_path, workdir=tmp_path, threads=1,
                                   resolve_model=lambda spec: tiny_llama)).equals(out)
    few = EmbedAnnotator(model="tiny-llama", k=50).annotate(p, ctx)
    assert len(set(few.column("cluster").to_pylist())) <= n and ctx.stats["k"] == n


@pytest.mark.parametrize("selector", [
    LongSelector(), TopicUniformSelector(), ClusterUniformSelector(), VerbositySelector(), ShortReferenceSelector(),
    StrategyDiverseSelector(), ComposeSelector(steps=[{"name": "disagree"}, {"name": "long"}]),
], ids=lambda s: s.name)
def test_selectors_accept_an_empty_pool(ctx, selector):
    empty = determinism_pool().slice(0, 0)
    assert selector.select(empty, 10, seed=0, ctx=ctx).num_rows == 0


def test_natural_reasoning_grades_math_references_and_leaves_free_text_ungraded(ctx):
    source = NaturalReasoningSource(path=str(DATA / "natural_reasoning.jsonl"))
    questions = source.load(ctx)  # 80 / second law / odd / (no reference) / e^x (sin x + cos x)
    answers = ["<answer>80</answer>", "<answer>the second law</answer>", "odd", "anything", "<answer>0</answer>"]
    assert source.score(questions, answers) == [1.0, None, None, None, None]
    assert source.score(questions.slice(0, 1), ["<answer>81</answer>"]) == [0.0]


def test_system1_takes_the_recorded_llama_answer_and_grades_it(ctx):
    """NaturalReasoning ships Llama-3.3-70B-Instruct's answer, the paper's System-1 answer (§4.2): the
    `system1` annotator uses it instead of generating one (no model is loaded here: all four are recorded)."""
    from nt_hf.system1 import System1Annotator

    source = NaturalReasoningSource(path=str(DATA / "natural_reasoning.jsonl"))
    questions = source.load(ctx).slice(0, 4)  # the fifth has no Llama response
    p = pa.table({**{c: questions.column(c) for c in questions.column_names},
                  "trace_id": [f"{q}/0" for q in questions.column("question_id").to_pylist()]})
    ctx.source = source
    out = System1Annotator(model="no-such-model").annotate(p, ctx)
    assert out.column("trace_id").equals(p.column("trace_id"))
    assert out.column("system1_answer").to_pylist()[0] == "The average speed is 120 / 1.5 = 80 km/h."
    assert out.column("system1_correct").to_pylist() == [1.0, None, None, None]
    assert ctx.stats["recorded"] == 4
