"""Baselines LIMO, OpenThoughts and s1K: each selector's rule on hand-built pools, the importers of their
released sets on small hand-written files, the pass-through teacher, and the recipes."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nt_openthoughts
import nt_released
import nt_s1k
from nt_harness.components import Context, Settings, Teacher
from nt_harness.plugins import Plugins
from nt_harness.records import SELECTION, TRACES, conform
from nt_harness.recipes import SpecError
from nt_limo.released import LimoReleasedSource
from nt_limo.selector import LimoSelector
from nt_openthoughts.decontaminate import Contamination, benchmark_questions
from nt_openthoughts.released import OpenThoughtsReleasedSource
from nt_openthoughts.selector import OpenThoughtsSelector
from nt_released import AsIsSelector, ReleasedTeacher
from nt_released.importer import MalformedRow
from nt_s1k.released import S1KReleasedSource
from nt_s1k.selector import S1KSelector, diverse_sample
from conftest import kept_ids

DATA = Path(__file__).parent / "data" / "released"
REPO = Path(__file__).resolve().parents[1]


def plugins() -> Plugins:
    """The installed plugins, plus these three where the installed entry points predate them."""
    pm = Plugins()
    for module in (nt_released, nt_s1k, nt_openthoughts):
        if not pm.pm.is_registered(module):
            pm.add(module)
    return pm


def pool(n_questions=10, n=2, **columns):
    rows = n_questions * n
    base = {
        "trace_id": [f"q{i // n}/{i % n}" for i in range(rows)],
        "question_id": [f"q{i // n}" for i in range(rows)],
        "question": [f"question number {i // n}" for i in range(rows)],
        "source": ["s"] * rows,
        "topic": ["t"] * rows,
        "thinking": ["let me think"] * rows,
        "answer": ["<answer>1</answer>"] * rows,
        "complete": [True] * rows,
        "finish_reason": ["stop"] * rows,
        "completion_tokens": list(range(rows)),
    }
    base.update(columns)
    return pa.table(base)


def in_rank_order(sel):
    rows = [(r, t) for t, r, k in zip(*(sel.column(c).to_pylist() for c in ("trace_id", "rank", "kept"))) if k]
    return [t for _, t in sorted(rows)]


def reasons(sel):
    return dict(zip(sel.column("trace_id").to_pylist(), sel.column("reason").to_pylist()))


# LIMO -----------------------------------------------------------------------------------------------

def test_limo_two_stage_solver_filter(ctx):
    # q0: solver 1 solves it; q1: solver 2 solves it 4 times (too easy); q2: never (too hard); q3, q4: 1-3 times
    p = pool(5, 1, correct=[1.0] * 5, solver1_passes=[1, 0, 0, 0, 0], solver2_passes=[2, 4, 0, 1, 3])
    sel = LimoSelector(fill=False).select(p, 10, seed=0, ctx=ctx)
    assert sorted(kept_ids(sel)) == ["q3/0", "q4/0"]
    r = reasons(sel)
    assert r["q0/0"] == "dropped: too easy (solver 1 solves it)"  # not overwritten by stage 2
    assert r["q1/0"] == "dropped: too easy (solver 2 solves it too often)"
    assert r["q2/0"] == "dropped: too hard (solver 2 solves it too rarely)"
    # equal budgets: the fill says it took a filtered-out question
    filled = LimoSelector().select(p, 3, seed=0, ctx=ctx)
    assert len(kept_ids(filled)) == 3
    assert "kept: fill (best chain of a filtered-out question)" in reasons(filled).values()


def test_limo_without_solver_columns_keeps_the_pass_rate_rule(ctx):
    p = pool(4, 4, correct=[1.0] * 4 + [1.0, 0, 0, 0] * 3)  # q0 solved 4/4: too easy
    sel = LimoSelector(fill=False).select(p, 10, seed=0, ctx=ctx)
    assert {t.split("/")[0] for t in kept_ids(sel)} == {"q1", "q2", "q3"}
    assert reasons(sel)["q0/0"] == "dropped: too easy"  # its best chain (the others: not the best)


# OpenThoughts ---------------------------------------------------------------------------------------

def task_folder(tmp_path, questions):
    folder = tmp_path / "tasks" / "bench"
    folder.mkdir(parents=True)
    (folder / "bench.jsonl").write_text("".join(json.dumps({"problem": q, "answer": "0"}) + "\n" for q in questions))
    (folder / "bench.yaml").write_text(
        "task: bench\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: bench.jsonl\n"
        "custom_dataset: !function utils.load\ndoc_to_text: \"Problem: {{problem}}\"\n")
    return tmp_path / "tasks"


LEAK = "a train leaves the station at noon travelling at sixty miles per hour towards a city two hundred miles away"


def test_decontamination_drops_shared_13_grams_but_not_template_text(tmp_path):
    template = "solve the following puzzle carefully and give your final answer inside the answer tags please now"
    bench = [LEAK + " when does it arrive", *(f"{template} instance {i}" for i in range(4))]
    folder = task_folder(tmp_path, bench)
    questions = benchmark_questions(["bench"], folder)["bench"]
    assert questions[0].startswith("Problem: a train")  # rendered through the task's doc_to_text
    index = Contamination(questions, n=13, boilerplate_docs=3)
    assert index.leaks("Rephrased: " + LEAK + " and how long does it take?")
    assert not index.leaks(f"{template} instance 99")  # the template is in 4 benchmark questions
    assert not index.leaks("a train leaves the station at noon")  # shorter than a 13-gram of the leak
    with pytest.raises(SpecError, match="no lm-eval task 'nope'"):
        benchmark_questions(["nope"], folder)


def test_decontamination_reads_the_project_gym_task():
    from nt_lmeval import tasks_dir

    questions = benchmark_questions(["gym_heldout"], tasks_dir())["gym_heldout"]
    rows = [json.loads(line) for line in (REPO / "tasks/gym_heldout/gym_heldout.jsonl").open()]
    assert questions == [r["question"] for r in rows]


def test_openthoughts_dedup_decontaminate_mix_and_rank_by_length(tmp_path, ctx):
    folder = task_folder(tmp_path, [LEAK])
    questions = [
        "q0 short", "q1 long", LEAK + " when?", "q1 long",  # q3 duplicates q1's text from another source
        "q4 medium", "q5 from a weak source", "q6 from a third source",
    ]
    sources = ["a", "a", "a", "b", "b", "c", "d"]
    lengths = [10, 500, 900, 500, 200, 50, 5]
    p = pool(7, 2, question=[q for q in questions for _ in range(2)], source=[s for s in sources for _ in range(2)],
             thinking_tokens=[x for x in lengths for _ in range(2)], answer_tokens=[0] * 14)
    sel = OpenThoughtsSelector(decontaminate=["bench"], tasks_path=str(folder), fill=False).select(p, 6, 0, ctx)
    r = reasons(sel)
    assert r["q3/0"] == "dropped: duplicate question"
    assert r["q2/0"].startswith("dropped: contaminated")
    # sources ranked by mean length of their clean questions: a (255), b (200) beat c (50), d (5)
    assert r["q5/0"] == r["q6/1"] == "dropped: source not among its domain's top sources"
    # longest questions first, every response of each (no answer filtering, wrong answers included)
    assert in_rank_order(sel) == ["q1/0", "q1/1", "q4/0", "q4/1", "q0/0", "q0/1"]
    assert ctx.stats["contaminated_questions"] == 1


def test_openthoughts_ranks_by_difficulty_when_rated(ctx):
    p = pool(3, 1, difficulty=[2.0, 9.0, 5.0], completion_tokens=[900, 1, 500])
    sel = OpenThoughtsSelector(decontaminate=[]).select(p, 2, 0, ctx)
    assert in_rank_order(sel) == ["q1/0", "q2/0"] and ctx.stats["rank_by"] == "difficulty"
    by_length = OpenThoughtsSelector(decontaminate=[], rank_by="length").select(p, 2, 0, ctx)
    assert in_rank_order(by_length) == ["q0/0", "q2/0"]


# The OpenThoughts presets, each value beside its source (where the source is silent, so marked).
def test_openthoughts_trainer_presets_state_the_papers_numbers():
    from nt_sft.trainer import SFTTrainer

    pm = plugins()
    ot3 = pm.recipes["openthoughts:ot3"].spec["trainer"]
    assert ot3["lr"] == 8e-5  # arXiv 2506.04178, OpenThinker3-7B training details; mlfoundations-dev cards: 8e-05
    assert ot3["epochs"] == 5  # arXiv 2506.04178; mlfoundations-dev/openthoughts2_math_100k card: num_epochs 5.0
    assert ot3["global_batch"] == 512  # arXiv 2506.04178; the same card: total_train_batch_size 512
    assert ot3["packing"] is True  # arXiv 2506.04178; open-thoughts train/README.md: packing from OpenThinker2 on
    assert ot3["schedule"] == "cosine" and ot3["warmup_ratio"] == 0.1  # the same card: cosine, warmup_ratio 0.1
    assert ot3["weight_decay"] == 0.0  # not fixed by the paper: ours (Trainer default; the cards list none)
    assert ot3["max_length"] == 16384  # not fixed by the paper: ours (train/README.md cutoff_len of OpenThinker 1/2)
    # micro-batch 4 (ours) x 128 accumulation on one process = the paper's 512
    assert SFTTrainer(**{k: v for k, v in ot3.items() if k != "name"}).settings.grad_accum == 128

    ot114k = pm.recipes["openthoughts:114k"].spec["trainer"]
    assert ot114k["lr"] == 1e-5  # open-thoughts/OpenThinker-7B model card: learning_rate 1e-05
    assert ot114k["epochs"] == 3  # the same card: num_epochs 3.0
    assert ot114k["schedule"] == "cosine" and ot114k["warmup_ratio"] == 0.1  # the card: cosine, warmup_ratio 0.1
    assert ot114k["batch_size"] == 1  # the card: train_batch_size 1 (per device)
    assert ot114k["global_batch"] == 96  # 32 devices (the card) x 1 x 3 accumulation
    assert ot114k["max_length"] == 16384  # open-thoughts train/README.md: cutoff_len 16384
    assert ot114k.get("packing", False) is False  # train/README.md: packing came with OpenThinker2
    assert ot114k["weight_decay"] == 0.0  # not fixed by the paper: ours (Trainer default; the card lists none)
    assert SFTTrainer(**{k: v for k, v in ot114k.items() if k != "name"}).settings.grad_accum == 96

    # a released set trains with the preset of the model its authors trained on it
    assert pm.recipes["openthoughts:released"].spec["trainer"] == ot114k  # OpenThoughts-114k -> OpenThinker-7B
    assert pm.recipes["openthoughts:released-ot3"].spec["trainer"] == ot3  # OpenThoughts3-1.2M -> OpenThinker3-7B
    paper = pm.recipes["openthoughts:paper-method"]
    assert paper.spec["teacher"] == {"n": 16}  # arXiv 2506.04178: 16 answers per question; refines the profile's
    assert paper.spec["selector"]["near_duplicate"] == 0.75  # as notes quote the paper (their code: fuzz.ratio >= 95)
    assert "its own pool" in paper.description and "equal-pool" in paper.description


def test_openthoughts_near_duplicates_by_indel_similarity(ctx):
    from rapidfuzz.distance import Indel

    near_a = "A train leaves the station at noon at 60 mph. When does it arrive at a city 120 miles away?"
    near_b = "A train leaves the station at noon at 50 mph. When does it arrive at a city 100 miles away?"
    far_a = "Find all primes p such that p^2 + 2 is also prime."
    far_b = "How many positive divisors does 360 have?"
    assert Indel.normalized_similarity(near_a, near_b) >= 0.75 > Indel.normalized_similarity(far_a, far_b)
    p = pool(4, 2, question=[q for q in (near_a, far_a, near_b, far_b) for _ in range(2)])
    sel = OpenThoughtsSelector(decontaminate=[], near_duplicate=0.75).select(p, 100, 0, ctx)
    r = reasons(sel)
    # the later of the near-duplicate pair goes (open_thoughts/deduplicate.py keeps the lowest index)
    assert r["q2/0"] == r["q2/1"] == "dropped: near-duplicate question (Indel similarity >= 0.75)"
    assert {t.split("/")[0] for t in kept_ids(sel)} == {"q0", "q1", "q3"}  # the distinct pair stays
    assert ctx.stats["near_duplicate_questions"] == 1
    # without the setting only exact copies go
    assert len(kept_ids(OpenThoughtsSelector(decontaminate=[]).select(p, 100, 0, ctx))) == 8


def _gym_question():
    """The longest held-out gym question: enough words to share 13-grams that are not template text."""
    rows = [json.loads(line) for line in (REPO / "tasks/gym_heldout/gym_heldout.jsonl").open()]
    return max(rows, key=lambda r: len(r["question"]))["question"]


def test_openthoughts_decontaminates_against_the_runs_benchmarks_by_default(ctx):
    from nt_harness.components import Benchmark
    from nt_lmeval import LMEvalBenchmark

    leak = _gym_question()
    p = pool(2, 1, question=[leak, "What is the capital of France?"])
    ctx.benchmarks = [LMEvalBenchmark(tasks=["gym_heldout"])]  # the real benchmark, its real lm-eval task
    sel = OpenThoughtsSelector().select(p, 10, 0, ctx)
    assert reasons(sel)["q0/0"].startswith("dropped: contaminated")
    assert kept_ids(sel) == ["q1/0"]
    assert ctx.stats["decontaminated_against"] == {"gym_heldout": 216}
    # an explicit task list overrides the run's benchmarks; [] turns decontamination off
    assert kept_ids(OpenThoughtsSelector(decontaminate=[]).select(p, 10, 0, ctx)) == ["q0/0", "q1/0"]

    class Opaque(Benchmark):
        name = "opaque"

    ctx.benchmarks = [Opaque()]  # a benchmark that cannot list its questions is named, not skipped
    with pytest.raises(SpecError, match="benchmark 'opaque' does not list its questions"):
        OpenThoughtsSelector().select(p, 10, 0, ctx)


def test_openthoughts_select_key_follows_the_runs_benchmarks(tmp_path):
    from nt_harness.pipeline import Pipeline
    from nt_harness.progress import Progress
    from nt_harness.recipes import RunSpec
    from nt_harness.store import Store

    leak = _gym_question()
    rows = [{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": "<think>\nhm\n</think>\n1"}]}
            for q in (leak, "What is the capital of France?")]
    (tmp_path / "ot.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    math = tmp_path / "math500.jsonl"
    math.write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2", "unique_id": "m0"}) + "\n")
    base = {"source": {"name": "openthoughts-released", "path": str(tmp_path / "ot.jsonl")},
            "teacher": {"name": "released"}, "annotators": [], "selector": {"name": "openthoughts"},
            "trainer": {"name": "sft"}, "student": "tiny-llama", "budget": 10, "seed": 0}
    gym = [{"name": "lmeval", "tasks": ["gym_heldout"]}]
    both = [{"name": "lmeval", "tasks": ["gym_heldout", "math500_reasoning"],
             "local_data": {"math500_reasoning": str(math)}}]
    pipe = Pipeline(plugins(), Store(tmp_path / "store"), Progress(disable=True), threads=1)
    keys = {label: pipe.run("ot", RunSpec(**base, benchmarks=b), until="select").stages["select"]
            for label, b in (("gym", gym), ("both", both), ("gym again", gym))}
    assert keys["gym"] != keys["both"]  # another benchmark set selects anew
    assert keys["gym"] == keys["gym again"]  # the same one is a cache hit
    manifest = pipe.store.get("select", "openthoughts", keys["both"]).manifest
    assert manifest["stats"]["decontaminated_against"] == {"gym_heldout": 216, "math500_reasoning": 1}
    assert manifest["stats"]["contaminated_questions"] == 1


# s1K ------------------------------------------------------------------------------------------------

def test_s1k_quality_and_difficulty(ctx):
    p = pool(6, 2,
             complete=[True] * 10 + [False, True],
             answer=["x"] * 8 + ["", "x", "x", "x"],
             finish_reason=["stop"] * 6 + ["error: timeout", "stop"] + ["stop"] * 4,
             system1_correct=[1.0, 1.0] + [0.0] * 10,
             solver2_passes=[0, 0, 1, 1] + [0] * 8,
             thinking_tokens=[10, 20] * 6)
    sel = S1KSelector(fill=False).select(p, 10, 0, ctx)
    r = reasons(sel)
    assert r["q0/0"] == r["q1/1"] == "dropped: easy (a solver answers it)"
    assert r["q3/0"] == "dropped: quality (API error)"
    assert r["q4/0"] == "dropped: quality (empty answer)"
    assert r["q5/0"] == "dropped: quality (incomplete)"
    assert r["q2/0"] == "dropped: not the longest trace of its question"
    assert sorted(kept_ids(sel)) == ["q2/1", "q3/1", "q4/1", "q5/1"]
    assert ctx.stats["solver_columns"] == ["system1_correct", "solver2_passes"]


def test_s1k_diversity_is_uniform_over_domains_and_favours_long_traces():
    # domain A has 20 questions, B has 2: uniform domain choice gives B half of the first picks
    domains = np.array(["A"] * 20 + ["B"] * 2)
    lengths = np.array(list(range(20)) + [1, 2], dtype=float)
    rows = np.arange(22)
    firsts_b, longest_first = 0, 0
    for seed in range(400):
        picks = diverse_sample(domains, lengths, rows, 2, np.random.default_rng(seed))
        firsts_b += domains[picks[0]] == "B"
        longest_first += picks[0] == 19
    assert 150 < firsts_b < 250
    assert 70 < longest_first < 130  # domain A (p 1/2) then rank 0 (p ~1/2): ~1/4 of 400
    all_picks = diverse_sample(domains, lengths, rows, 100, np.random.default_rng(0))
    assert sorted(all_picks) == list(range(22))  # runs out of questions, no repeats


# importers ------------------------------------------------------------------------------------------

def load(source_cls, path, ctx, **kw):
    return source_cls(path=str(path), **kw).load(ctx)


def test_openthoughts_114k_split(ctx):
    t = load(OpenThoughtsReleasedSource, DATA / "openthoughts_114k.jsonl", ctx)
    rows = t.to_pylist()
    assert rows[0]["question"] == "What is 2 + 3?"
    assert rows[0]["thinking"] == "I add 2 and 3. Let me check: 5."
    assert rows[0]["answer"] == "The sum is \\boxed{5}."
    assert rows[1]["answer"] == "Yes, 7 is prime." and "<|" not in rows[1]["thinking"]
    meta = load(OpenThoughtsReleasedSource, DATA / "openthoughts_114k_metadata.jsonl", ctx).to_pylist()[0]
    assert (meta["question"], meta["thinking"], meta["answer"]) == (
        "Compute 6 * 7.", "Six sevens are forty-two.", "\\boxed{42}")
    assert meta["reference"] == "6 * 7 = \\boxed{42}" and meta["topic"] == "math" and meta["source"] == "numina_math"


def test_openthoughts3_and_2_split_and_keep_difficulty(ctx):
    t = load(OpenThoughtsReleasedSource, DATA / "openthoughts3.jsonl", ctx)
    rows = t.to_pylist()
    assert rows[0]["thinking"] == "Slicing with [::-1] reverses it."
    assert rows[0]["answer"].startswith("```python") and rows[0]["topic"] == "code"
    assert rows[0]["source"] == "nvidia/OpenCodeReasoning" and rows[0]["teacher"] == "QwQ-32B"
    assert t.column("difficulty").to_pylist() == [8.0, 3.0, 5.0]
    assert rows[1]["question_id"] == rows[2]["question_id"]  # two answers to one question
    ot2 = load(OpenThoughtsReleasedSource, DATA / "openthoughts2.jsonl", ctx).to_pylist()[0]
    assert (ot2["thinking"], ot2["answer"]) == ("3 times 3 is 9.", "\\boxed{9}")


def test_limo_split(ctx):
    rows = load(LimoReleasedSource, DATA / "limo.jsonl", ctx).to_pylist()
    assert rows[0]["thinking"].endswith("2*5 = 10.") and rows[0]["answer"].startswith("**Final Answer**")
    assert rows[1]["thinking"] == "Adding one and one gives two."
    assert rows[1]["answer"] == "Therefore the answer is $\\boxed{2}$."
    assert rows[2]["thinking"] == "A hexagon has six sides, by definition." and rows[2]["answer"] == "\\boxed{6}"
    assert [r["reference"] for r in rows] == ["5", "2", "6"]


def test_s1k_and_s1k_11_split(ctx):
    s1k = load(S1KReleasedSource, DATA / "s1k.jsonl", ctx).to_pylist()[0]
    assert (s1k["thinking"], s1k["answer"]) == ("Two plus two. That is 4.", "The answer is $\\boxed{4}$.")
    assert s1k["topic"] == "math" and s1k["source"] == "qq8933/AIME_1983_2024"
    v11 = load(S1KReleasedSource, DATA / "s1k_1.1.jsonl", ctx).to_pylist()[0]
    assert v11["thinking"].startswith("Okay, 3 * 3") and v11["answer"] == "**Answer:** \\boxed{9}"
    assert v11["teacher"] == "DeepSeek-R1"
    gemini = load(S1KReleasedSource, DATA / "s1k_1.1.jsonl", ctx, trajectory="gemini").to_pylist()[0]
    assert (gemini["thinking"], gemini["answer"]) == ("Three threes.", "\\boxed{9}")


def test_parquet_files_read_like_jsonl(tmp_path, ctx):
    rows = [json.loads(line) for line in (DATA / "openthoughts3.jsonl").open()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ot3.parquet")
    a = load(OpenThoughtsReleasedSource, tmp_path / "ot3.parquet", ctx)
    b = load(OpenThoughtsReleasedSource, DATA / "openthoughts3.jsonl", ctx)
    assert a.select(["question", "thinking", "answer"]).equals(b.select(["question", "thinking", "answer"]))


# The layout of the OpenThoughts-114k hub repo (two configs declared in its README), as `git clone` leaves it
REPO_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
- config_name: metadata
  data_files:
  - split: train
    path: metadata/train-*
---
"""


def test_a_local_clone_of_the_hub_repo_loads_through_datasets_with_its_configs(tmp_path, ctx, monkeypatch):
    """The hub id path runs `datasets.load_dataset` too; only the download is not exercised (no hub here)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "OpenThoughts-114k"
    for config, name in (("data", "openthoughts_114k.jsonl"), ("metadata", "openthoughts_114k_metadata.jsonl")):
        (repo / config).mkdir(parents=True)
        rows = [json.loads(line) for line in (DATA / name).open()]
        pq.write_table(pa.Table.from_pylist(rows), repo / config / "train-00000-of-00001.parquet")
    (repo / "README.md").write_text(REPO_README)
    columns = ["question", "thinking", "answer", "reference", "topic", "source"]
    for config, name in ((None, "openthoughts_114k.jsonl"), ("metadata", "openthoughts_114k_metadata.jsonl")):
        cloned = load(OpenThoughtsReleasedSource, repo, ctx, config=config)
        assert cloned.select(columns).equals(load(OpenThoughtsReleasedSource, DATA / name, ctx).select(columns))
    # a bad row in a clone is named by folder, config, split and row
    bad = tmp_path / "bad"
    (bad / "data").mkdir(parents=True)
    rows = [json.loads(line) for line in (DATA / "openthoughts_malformed.jsonl").open()]
    pq.write_table(pa.Table.from_pylist(rows), bad / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(MalformedRow, match=rf"{bad}\[default/train\]: row 2: response has <\|begin_of_thought"):
        load(OpenThoughtsReleasedSource, bad, ctx)


@pytest.mark.parametrize("cls,name,message", [
    (LimoReleasedSource, "limo_malformed.jsonl", "row 2: `answer` must be a non-empty string"),
    (OpenThoughtsReleasedSource, "openthoughts_malformed.jsonl", "row 2: response has <|begin_of_thought|> but no"),
    (S1KReleasedSource, "s1k_malformed.jsonl", "row 2: not valid JSON"),
])
def test_malformed_row_names_file_and_row(ctx, cls, name, message):
    with pytest.raises(MalformedRow) as e:
        load(cls, DATA / name, ctx)
    assert str(DATA / name) in str(e.value) and message in str(e.value)


def test_released_teacher_passes_traces_through_and_as_is_selects_them(ctx):
    questions = load(OpenThoughtsReleasedSource, DATA / "openthoughts3.jsonl", ctx)
    traces = conform(ReleasedTeacher().generate(questions, ctx), TRACES, "released")
    qid = traces.column("question_id").to_pylist()
    assert traces.column("trace_id").to_pylist() == [f"{qid[0]}/0", f"{qid[1]}/0", f"{qid[1]}/1"]
    assert traces.column("thinking").to_pylist() == questions.column("thinking").to_pylist()
    assert traces.column("difficulty").to_pylist() == [8.0, 3.0, 5.0]  # extra columns reach the selectors
    sel = AsIsSelector().select(traces, 2, 0, ctx)
    assert sel.schema.equals(SELECTION) and len(kept_ids(sel)) == 2
    assert len(kept_ids(AsIsSelector().select(traces, 10, 0, ctx))) == 3
    with pytest.raises(SpecError, match="needs a source whose rows carry traces"):
        ReleasedTeacher().generate(questions.drop(["thinking"]), ctx)


def test_verifier_of_released_sets_uses_the_reference(ctx):
    src = LimoReleasedSource(path=str(DATA / "limo.jsonl"))
    t = src.load(ctx)
    assert src.score(t, t.column("answer").to_pylist()) == [1.0, 1.0, 1.0]
    assert src.score(t, ["\\boxed{7}", "", "six"])[0] == 0.0


# recipes --------------------------------------------------------------------------------------------

def test_recipes_registered_with_presets_and_native_budgets():
    pm = plugins()
    assert not pm.errors
    for name in ("limo", "limo:solvers", "limo:paper", "limo:paper-solvers", "limo:released", "openthoughts",
                 "openthoughts:ot3", "openthoughts:114k", "openthoughts:released", "s1k", "s1k:solvers", "s1k:paper",
                 "s1k:paper-solvers", "s1k:released"):
        assert name in pm.recipes, name
    assert pm.recipes["openthoughts:ot3"].spec["trainer"]["packing"] is True
    assert pm.recipes["s1k"].native_budget == 1000 and pm.recipes["limo:released"].native_budget == 817
    for kind, name in [("teacher", "released"), ("selector", "as-is"), ("annotator", "solver1"),
                       ("source", "s1k-released"), ("source", "openthoughts-released"), ("source", "limo-released")]:
        assert name in pm.components[kind]


def test_paper_presets_are_valid_trainer_settings():
    from nt_sft.trainer import SFTTrainer

    pm = plugins()
    for name in ("limo:paper", "limo:paper-solvers", "limo:released", "s1k:paper", "s1k:paper-solvers",
                 "s1k:released", "openthoughts:ot3", "openthoughts:114k"):
        conf = {k: v for k, v in pm.recipes[name].spec["trainer"].items() if k != "name"}
        SFTTrainer(**conf)  # pydantic refuses an unknown or invalid key


def test_cli_lists_recipes_and_released_recipe_runs_to_selection(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from nt_harness import cli

    monkeypatch.setattr(cli, "plugins", plugins)
    out = CliRunner().invoke(cli.cli, ["recipes"], terminal_width=250)
    assert out.exit_code == 0, out.output
    for name in ("limo:released", "s1k:paper", "openthoughts:114k", "s1k:solvers"):
        assert name in out.output
    # the released recipe through the real pipeline, up to the selection (no model work)
    out = CliRunner().invoke(cli.cli, [
        "select", "s1k:released", "--workdir", str(tmp_path / "w"), "--quiet",
        "--set", f"source.path={DATA / 's1k_1.1.jsonl'}"])
    assert out.exit_code == 0, out.output
    missing = CliRunner().invoke(cli.cli, ["select", "limo:released", "--workdir", str(tmp_path / "w"), "--quiet"])
    assert missing.exit_code == 2 and "source.path" in missing.output


# LIMO and s1K presets: each value their sources fix, with the source beside it ---------------------------

PAPER_PROFILE = REPO / "configs" / "paper" / "naturalthoughts.toml"


def trainer_settings(conf: dict):
    from nt_sft.trainer import SFTTrainer

    return SFTTrainer(**{k: v for k, v in conf.items() if k != "name"}).settings


def test_limo_trainer_preset_states_the_papers_numbers():
    pm = plugins()
    t = pm.recipes["limo:paper"].spec["trainer"]
    # GAIR-NLP/LIMO train/examples/train_limo.yaml
    assert t["lr"] == 5e-6  # learning_rate: 5.0e-6
    assert t["schedule"] == "cosine" and t["warmup_ratio"] == 0.0  # lr_scheduler_type: cosine, warmup_ratio: 0.0
    assert t["epochs"] == 15  # num_train_epochs: 15
    assert t["max_length"] == 16384  # cutoff_len: 16384
    assert t["packing"] is False  # no `packing`: LLaMA-Factory packs only in pre-training
    # per_device_train_batch_size 1, gradient_accumulation_steps 1 on 32 GPUs: "the effective global batch size
    # is 32" (GAIR-NLP/LIMO issues #3, #9, #19)
    assert t["batch_size"] == 1 and t["global_batch"] == 32
    # HF TrainingArguments' defaults, which train_limo.yaml leaves alone
    assert t["weight_decay"] == 0.0 and t["adam_beta2"] == 0.999 and t["max_grad_norm"] == 1.0
    # GAIR-NLP/LIMO README: the system prompt of training and inference
    assert t["system_prompt"] == "Please reason step by step, and put your final answer within \\boxed{}."
    s = trainer_settings(t)
    assert (s.batch_size, s.grad_accum, s.num_processes) == (1, 32, 1)  # one process accumulates the 32
    for name in ("limo:paper-solvers", "limo:released"):  # the released set trains as LIMO trained it
        assert pm.recipes[name].spec["trainer"] == t, name


def test_s1k_trainer_preset_states_the_papers_numbers():
    pm = plugins()
    t = pm.recipes["s1k:paper"].spec["trainer"]
    # arXiv 2501.19393 Appendix D "Training details" and simplescaling/s1 train/sft.sh
    assert t["lr"] == 1e-5  # "a learning rate of 1e-5"; lr=1e-5
    # "warmed up linearly for 5% ... decayed to 0 ... following a cosine schedule"; --warmup_ratio=0.05
    assert t["schedule"] == "cosine" and t["warmup_ratio"] == 0.05
    assert t["epochs"] == 5  # "we train for 5 epochs"; epochs=5
    # "a batch size of 16"; micro_batch_size=1, gradient_accumulation_steps=1, "16 if 16 gpus"
    assert t["batch_size"] == 1 and t["global_batch"] == 16
    assert t["weight_decay"] == 1e-4  # "weight decay of 1e-4"; --weight_decay 1e-4
    assert t["adam_beta2"] == 0.95  # "β1 = 0.9, β2 = 0.95"; --adam_beta2 0.95 (β1 0.9 is the trainer's fixed one)
    assert t["max_grad_norm"] == 1.0  # sft.sh sets none: HF TrainingArguments' default
    assert t["max_length"] == 32768  # --block_size=32768 (train/sft.py: max_seq_length = block_size)
    assert t["packing"] is False  # train/sft.py sets no packing: trl's default, off
    assert t["system_prompt"] is None  # data/tokenization.py: no system turn (Qwen's template adds its default)
    s = trainer_settings(t)
    assert (s.batch_size, s.grad_accum, s.num_processes) == (1, 16, 1)
    for name in ("s1k:paper-solvers", "s1k:released"):
        assert pm.recipes[name].spec["trainer"] == t, name


def test_limo_and_s1k_paper_solver_presets_name_the_papers_models(tmp_path):
    from nt_harness.cli import make_spec
    from nt_harness.pipeline import Pipeline
    from nt_harness.progress import Progress
    from nt_harness.store import Store
    from nt_s1k.msc import msc_domains

    pm = plugins()
    limo = pm.recipes["limo:paper-solvers"].spec
    ann = {a["name"]: a for a in limo["annotators"]}
    # arXiv 2502.03387 §3.1.1: stage 1 drops what Qwen2.5-Math-7B-Instruct solves within 4 attempts, stage 2 keeps
    # what DeepSeek-R1-Distill-Qwen-32B solves 1-3 times of 32
    assert (ann["solver1"]["model"], ann["solver1"]["attempts"]) == ("Qwen/Qwen2.5-Math-7B-Instruct", 4)
    assert (ann["solver2"]["model"], ann["solver2"]["attempts"]) == ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 32)
    assert limo["selector"] == {"name": "limo", "solver1_max_passes": 0, "solver2_min_passes": 1,
                                "solver2_max_passes": 3}
    s1k = pm.recipes["s1k:paper-solvers"].spec
    ann = {a["name"]: a for a in s1k["annotators"]}
    # arXiv 2501.19393 §2.2: a question is dropped when Qwen2.5-7B-Instruct or Qwen2.5-32B-Instruct answers it
    assert (ann["solver1"]["model"], ann["solver1"]["attempts"]) == ("Qwen/Qwen2.5-7B-Instruct", 1)
    assert (ann["solver2"]["model"], ann["solver2"]["attempts"]) == ("Qwen/Qwen2.5-32B-Instruct", 1)
    assert s1k["selector"]["solver_columns"] == ["solver1_passes", "solver2_passes"]
    # §2.2: lengths in Qwen2.5 tokens; domains: every question classified into an MSC class
    assert ann["length"]["tokenizer"] == "Qwen/Qwen2.5-32B-Instruct"
    assert ann["topic"]["labels"] == msc_domains() and ann["topic"]["keep_source"] is False
    assert s1k["selector"]["domain_column"] == "topic"
    # both build with the paper's model names on the embedded profile: nothing is downloaded to validate
    pipe = Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1)
    for name in ("limo:paper-solvers", "s1k:paper-solvers"):
        pipe.validate(make_spec(pm, pm.recipes[name], {"profile": "embedded"}, None))


@pytest.mark.parametrize("name,global_batch,max_length", [
    ("s1k:paper", 16, 32768), ("s1k:paper-solvers", 16, 32768), ("s1k:released", 16, 32768),
    ("limo:paper", 32, 16384), ("limo:paper-solvers", 32, 16384), ("limo:released", 32, 16384)])
def test_limo_and_s1k_presets_run_under_the_paper_profile(tmp_path, name, global_batch, max_length):
    """The profile packs 16,384-token sequences over 8 processes with NaturalThoughts' optimizer; the presets
    keep their own numbers, train unpacked (s1's 32,768-token examples fit no 16,384-token pack) and reach their
    global batch over the profile's processes."""
    from nt_harness.cli import make_spec
    from nt_harness.pipeline import Pipeline
    from nt_harness.progress import Progress
    from nt_harness.store import Store

    pm = plugins()
    data = DATA / ("s1k.jsonl" if name.startswith("s1k") else "limo.jsonl")
    sets = [f"source.path={data}"] if name.endswith(":released") else []
    spec = make_spec(pm, pm.recipes[name], {"profile": str(PAPER_PROFILE), "set": sets}, None)
    Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1).validate(spec)  # builds every component
    s = trainer_settings(spec.trainer)
    assert s.num_processes == 8 and s.batch_size * s.grad_accum * s.num_processes == global_batch
    assert s.max_length == max_length and s.packing is False
    assert not s.packing or (s.pack_length or s.max_length) >= s.max_length  # what the trainer refuses
    assert s.weight_decay == pm.recipes[name].spec["trainer"]["weight_decay"] != 0.1  # not the profile's
    assert s.schedule == "cosine" and s.lr == pm.recipes[name].spec["trainer"]["lr"]
    if name == "s1k:paper-solvers":  # the MSC classifier asks the profile's annotator server
        topic = next(a for a in spec.annotators if a["name"] == "topic")
        assert topic["backend"]["model"] == "meta-llama/Llama-3.1-70B-Instruct"


class ScriptedTeacher(Teacher):
    """Replies chosen by the test (``reply(prompt, k)``), recording the settings it ran with and the prompts."""

    name = "scripted"
    runs: list = []
    reply = staticmethod(lambda prompt, k: "")

    class Settings(Settings):
        model: str = "none"
        n: int = 1
        temperature: float = 0.0
        seed: int = 0
        max_tokens: int = 16
        prefill: str = ""

    def generate(self, questions, ctx):
        s = self.settings
        ScriptedTeacher.runs.append((s, questions.column("question").to_pylist()))
        rows = [(q, t, k) for q, t in zip(questions.column("question_id").to_pylist(),
                                          questions.column("question").to_pylist()) for k in range(s.n)]
        return pa.table({"trace_id": [f"{q}/{k}" for q, _, k in rows], "question_id": [q for q, _, _ in rows],
                         "thinking": [""] * len(rows), "answer": [self.reply(t, k) for _, t, k in rows]})


def scripted_context(tmp_path, reply, source=None) -> Context:
    from nt_harness.progress import Progress

    ScriptedTeacher.runs = []
    ScriptedTeacher.reply = staticmethod(reply)
    build = lambda kind, spec, where: ScriptedTeacher(**{k: v for k, v in spec.items() if k != "name"})  # noqa: E731
    return Context(out=tmp_path, scratch=tmp_path, workdir=tmp_path, threads=1, progress=Progress(disable=True),
                   build=build, source=source)


def test_msc2020_domains_load_and_a_classification_reply_parses_to_its_class(tmp_path):
    from nt_naturalthoughts.prompted import TopicAnnotator
    from nt_s1k.msc import msc_classes, msc_code, msc_domains, msc_topic_annotator

    classes = msc_classes()  # the data file shipped in the plugin
    assert len(classes) == 63 and len(set(msc_domains())) == 63  # MSC2020's two-digit classes
    codes = [c for c, _ in classes]
    assert codes == sorted(codes) and all(len(c) == 2 and c.isdigit() for c in codes)
    assert classes[0] == ("00", "General and overarching topics; collections")
    assert classes[-1] == ("97", "Mathematics education")
    assert msc_code("Number theory") == "11" and msc_code("Biology and other natural sciences") == "92"
    # replies as an instruction model writes them after the "Domain:" prefill (a code, markdown, a reason)
    replies = {"primes": " Number theory", "colour": " 05 Combinatorics", "curvature": " **Differential geometry**"
               "\n\nThe question is about the curvature of a surface.", "lens": " Optics, electromagnetic theory"}
    questions = ["Find all primes p such that p^2 + 2 is prime.", "In how many ways can a 3x3 grid be colour-ed?",
                 "What is the Gaussian curvature of a sphere of radius 2?",
                 "Where does a thin lens of focus 5 cm image an object 10 cm away?"]
    reply = lambda prompt, k: next(r for key, r in replies.items() if key in prompt)  # noqa: E731
    conf = {k: v for k, v in msc_topic_annotator(backend={"name": "scripted"}).items() if k != "name"}
    topics = TopicAnnotator(**conf).annotate(pool(4, 1, question=questions, topic=[""] * 4),
                                             scripted_context(tmp_path, reply))
    assert topics.column("topic").to_pylist() == ["Number theory", "Combinatorics", "Differential geometry",
                                                  "Optics, electromagnetic theory"]  # not "Geometry"
    _, prompts = ScriptedTeacher.runs[0]
    assert all(name in prompts[0] for name in msc_domains())  # every class offered, names whole


def test_solver_annotator_samples_through_a_backend_teacher(tmp_path):
    from nt_limo.solvers import Solver2Annotator

    class Verifier:
        def score(self, traces, answers):
            return [float(a == "7") for a in answers]

    ann = Solver2Annotator(model="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", attempts=5, temperature=0.6,
                           max_new_tokens=99, seed=3, backend={"name": "scripted"})
    spec = {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "name": "scripted"}
    assert ann.nested() == {"backend": ("teacher", spec)}  # validated with the run; the solver's model by default
    assert Solver2Annotator(backend={"name": "scripted", "model": "other"}).nested()["backend"][1]["model"] == "other"
    ctx = scripted_context(tmp_path, lambda prompt, k: "7" if k < 2 else "8", source=Verifier())
    cols = ann.annotate(pool(2, 2, reference=["7"] * 4, metadata=[""] * 4), ctx)
    settings, questions = ScriptedTeacher.runs[0]
    assert (settings.model, settings.n, settings.temperature, settings.seed, settings.max_tokens) == (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 5, 0.6, 3, 99)
    assert len(questions) == 2  # one request per question, not per trace
    assert cols.column("solver2_passes").to_pylist() == [2, 2, 2, 2]
    assert cols.column("solver2_attempts").to_pylist() == [5] * 4


# solver annotators ----------------------------------------------------------------------------------

def test_solver_annotator_counts_verified_attempts_per_question(tmp_path, tiny_llama, resolve):
    from nt_gym import GymSource
    from nt_harness.progress import Progress
    from nt_limo.solvers import Solver1Annotator

    source = GymSource(families=["chain_sum"], per_family=2)
    ctx = Context(out=tmp_path, scratch=tmp_path / "scratch", workdir=tmp_path, threads=1,
                  progress=Progress(disable=True), resolve_model=resolve, source=source)
    (tmp_path / "scratch").mkdir()
    questions = source.load(ctx)
    traces = questions.take([0, 0, 1, 1])  # two traces per question
    traces = traces.append_column("trace_id", pa.array([f"{q}/{i % 2}" for i, q in
                                                        enumerate(traces.column("question_id").to_pylist())]))
    cols = Solver1Annotator(model="tiny-llama", attempts=3, max_new_tokens=4, batch_size=6).annotate(traces, ctx)
    assert cols.column_names == ["trace_id", "solver1_passes", "solver1_attempts"]
    passes = cols.column("solver1_passes").to_pylist()
    assert all(p is not None and 0 <= p <= 3 for p in passes)  # gym has a verifier: every question graded
    assert passes[0] == passes[1] and passes[2] == passes[3]  # one count per question
    assert cols.column("solver1_attempts").to_pylist() == [3] * 4
    assert ctx.stats["questions"] == 2


def test_decontamination_share_threshold_tells_copies_from_recombined_templates(tmp_path):
    bench = ["Alice has 3 brothers and 2 sisters. How many sisters does Alice's brother have? Answer inside tags.",
             "Bob has 5 brothers and 1 sisters. How many sisters does Bob's brother have? Answer inside tags."]
    # shares Alice's opening words but is another question: one 13-gram in common, most not
    near = bench[0] + " Also, how many cousins does she have if each sister has two children?"
    copy = bench[1]
    loose, strict = Contamination(bench, 13, 3), Contamination(bench, 13, 3, min_shared_fraction=0.8)
    assert loose.leaks(near) and loose.leaks(copy)
    assert not strict.leaks(near) and strict.leaks(copy)
