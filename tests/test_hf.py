"""The `hf` teacher and `system1` annotator on a real (random-init) tiny Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import nt_harness
import nt_hf
from nt_harness.components import Context, Source
from nt_harness.models import ModelResolver
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, TRACES, conform, question_id
from nt_harness.store import Store
from nt_hf.generation import ChatModel, Sampling
from nt_hf.system1 import System1Annotator
from nt_hf.teacher import HFTeacher, split_trace
from conftest import run_spec

QUESTION_TEXTS = ["What is 2 + 3?", "Name a primary colour.", "Is 17 prime? Answer yes or no, please, briefly."]


class ExactMatchSource(Source):
    """Grades by string equality with the reference; None when there is no reference.

    A stand-in for the gym source (another helper's plugin, written at the same time as this one): the
    annotator only needs *a* verifier to call, and this one's verdicts are predictable.
    """

    name = "exact-match-test"

    def __init__(self):
        super().__init__()
        self.calls: list[list[str]] = []

    def score(self, questions, answers):
        self.calls.append(questions.column("question_id").to_pylist())
        refs = questions.column("reference").to_pylist()
        return [None if not r else float(a == r) for a, r in zip(answers, refs)]

    def load(self, ctx):
        rows = [dict(question_id=question_id("test", q), source="test", question=q, reference="nope", topic="t",
                     metadata="{}") for q in QUESTION_TEXTS]
        return pa.Table.from_pylist(rows, schema=QUESTIONS)


class ExactMatchPlugin:
    @staticmethod
    @nt_harness.hookimpl
    def register_sources(register):
        register(ExactMatchSource)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> ModelResolver:
    return ModelResolver(Plugins().models, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny(models, tmp_path_factory) -> str:
    """tiny-llama re-initialised with wider weights (std 0.3). At the alias's std 0.02 greedy decoding writes
    "\n" forever, so comparisons of greedy outputs would pass whatever the batching did."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = models.resolve("tiny-llama")
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("tiny-wide") / "model"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def questions() -> pa.Table:
    rows = [
        dict(question_id=question_id("test", q), source="test", question=q, reference="", topic="t", metadata="{}")
        for q in QUESTION_TEXTS
    ]
    return pa.Table.from_pylist(rows, schema=QUESTIONS)


def make_ctx(root: Path, models: ModelResolver, source=None) -> Context:
    root.mkdir(parents=True, exist_ok=True)
    return Context(out=root / "out", scratch=root / "scratch", workdir=root, threads=1,
                   progress=Progress(disable=True), resolve_model=models.resolve, source=source)


@pytest.fixture
def teacher(tiny):
    return lambda **kw: HFTeacher(**{"model": tiny, "max_new_tokens": 6, "batch_size": 2, **kw})


def test_split_trace():
    tags = ("<think>", "</think>")
    assert split_trace("<think>\na\n</think>\n<answer>1</answer>", *tags) == ("a", "<answer>1</answer>", True)
    assert split_trace("a </think> b", "<think>", "</think>") == ("a", "b", True)  # template prefilled <think>
    assert split_trace("<think>\ncut off", "<think>", "</think>") == ("cut off", "", False)
    assert split_trace("just an answer", "<think>", "</think>") == ("", "just an answer", False)


def test_batched_greedy_equals_one_by_one(tiny):
    model = ChatModel(tiny, threads=1)
    prompts = [model.chat_prompt(q, "Think.", "<think>\n") for q in QUESTION_TEXTS]
    assert len({len(p) for p in prompts}) > 1  # different lengths, so left padding is exercised
    batched = model.complete(prompts, 8, Sampling(), seed=0)
    alone = [model.complete([p], 8, Sampling(), seed=0)[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert all(len(c.token_ids) == 8 and not c.stopped for c in batched)


def test_checkpoint_generation_config_does_not_leak(tiny, tmp_path):
    """A hub checkpoint's generation_config.json (here: suppress the token greedy decoding writes first, a
    repetition penalty, a short max_length) must not change a run."""
    prompt = ChatModel(tiny, threads=1).chat_prompt(QUESTION_TEXTS[0])
    plain = ChatModel(tiny, threads=1).complete([prompt], 10, Sampling(), seed=0)[0]
    odd = tmp_path / "odd"
    shutil.copytree(tiny, odd)
    config = json.loads((odd / "generation_config.json").read_text())
    config.update(suppress_tokens=[plain.token_ids[0]], repetition_penalty=50.0, max_length=3)
    (odd / "generation_config.json").write_text(json.dumps(config))
    leaked = ChatModel(str(odd), threads=1).complete([prompt], 10, Sampling(), seed=0)[0]
    assert leaked.token_ids == plain.token_ids and len(plain.token_ids) == 10


def test_traces_conform_and_n_samples_have_distinct_ids(teacher, tiny, models, questions, tmp_path):
    table = teacher(n=3, temperature=1.0).generate(questions, make_ctx(tmp_path, models))
    table = conform(table, TRACES, "hf")
    assert table.num_rows == 9
    assert len(set(table.column("trace_id").to_pylist())) == 9
    assert table.column("trace_id").to_pylist()[:3] == [f"{questions['question_id'][0]}/{k}" for k in range(3)]
    assert table.column("sample").to_pylist() == [0, 1, 2] * 3
    assert table.column("question").to_pylist() == [q for q in QUESTION_TEXTS for _ in range(3)]
    assert set(table.column("teacher").to_pylist()) == {tiny}
    assert len(set(table.column("thinking").to_pylist()[:3])) == 3  # sampling: three different traces
    assert all(t > 0 for t in table.column("prompt_tokens").to_pylist())


def test_cut_off_by_max_new_tokens_is_incomplete(teacher, models, questions, tmp_path):
    table = teacher().generate(questions, make_ctx(tmp_path, models))
    assert table.column("finish_reason").to_pylist() == ["length"] * 3
    assert table.column("complete").to_pylist() == [False] * 3
    assert table.column("completion_tokens").to_pylist() == [6] * 3
    assert table.column("answer").to_pylist() == [""] * 3  # never reached </think>


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_resume_equals_uninterrupted(teacher, models, questions, tmp_path, temperature):
    settings = dict(n=3, temperature=temperature, batch_size=3, seed=7)  # whole questions: 3 batches of 3 samples
    whole = teacher(**settings).generate(questions, make_ctx(tmp_path / "whole", models))

    ctx = make_ctx(tmp_path / "resumed", models)
    teacher(**settings).generate(questions, ctx)
    shards = sorted(ctx.scratch.glob("batch-*.parquet"))
    assert len(shards) == 3
    for lost in (shards[1], shards[2]):  # a crash after batch 0
        lost.unlink()
    ctx = make_ctx(tmp_path / "resumed", models)
    resumed = teacher(**settings).generate(questions, ctx)
    assert ctx.stats["batches_resumed"] == 1
    assert resumed.equals(whole)
    if temperature:
        other_seed = teacher(**{**settings, "seed": 8}).generate(questions, make_ctx(tmp_path / "seed8", models))
        assert not other_seed.equals(whole)


def test_shard_from_other_batching_is_redone(teacher, models, questions, tmp_path):
    ctx = make_ctx(tmp_path, models)
    teacher(batch_size=2).generate(questions, ctx)
    ctx = make_ctx(tmp_path, models)
    table = teacher(batch_size=3).generate(questions, ctx)  # same scratch, batch 0 now holds other ids
    assert ctx.stats["batches_resumed"] == 0
    assert table.num_rows == 3


@pytest.fixture(scope="session")
def tiny_early_eos(tiny, tmp_path_factory) -> tuple[str, list[int]]:
    """The test model, with the 4th token it writes greedily named an end-of-sequence token besides
    <|im_end|> in its generation_config: a real model that stops early, so the forced-answer path runs."""
    model = ChatModel(tiny, threads=1)
    prompt = model.chat_prompt(QUESTION_TEXTS[0], HFTeacher.Settings().system_prompt, "<think>\n")
    ids = model.complete([prompt], 12, Sampling(), seed=0)[0].token_ids
    stop = ids[3]
    assert stop not in ids[:3]
    folder = tmp_path_factory.mktemp("early-eos") / "model"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], stop]
    (folder / "generation_config.json").write_text(json.dumps(config))
    return str(folder), ids[:3]


def test_eos_before_think_end_forces_an_answer(teacher, tiny_early_eos, models, questions, tmp_path):
    folder, thinking_ids = tiny_early_eos
    one = questions.slice(0, 1)
    thinking = ChatModel(folder, threads=1).decode(thinking_ids).strip()

    plain = teacher(model=folder, max_new_tokens=12, temperature=0, force_answer=None)
    plain = plain.generate(one, make_ctx(tmp_path / "plain", models)).to_pylist()[0]
    assert (plain["thinking"], plain["answer"], plain["complete"]) == (thinking, "", True)
    assert plain["finish_reason"] == "stop"
    assert plain["completion_tokens"] == 3

    forced = teacher(model=folder, max_new_tokens=12, temperature=0, force_answer="\n</think>\n", answer_max_tokens=5)
    row = forced.generate(one, make_ctx(tmp_path / "forced", models)).to_pylist()[0]
    assert row["thinking"] == thinking and row["complete"]
    assert row["answer"] != "" and row["completion_tokens"] > 3
    assert row["finish_reason"] == ("length" if row["completion_tokens"] == 3 + 5 else "stop")


def test_system1_broadcasts_one_answer_per_question_in_pool_order(teacher, tiny, models, questions, tmp_path):
    refs = ["", "nope", "nope"]  # question 0 has no verifier
    pool_q = questions.set_column(3, "reference", pa.array(refs))
    traces = teacher(n=2).generate(pool_q, make_ctx(tmp_path / "teacher", models))
    pool = traces.take([5, 0, 2, 1, 4, 3])  # questions interleaved: broadcasting must follow pool order
    source = ExactMatchSource()
    annotator = System1Annotator(model=tiny, max_new_tokens=5, batch_size=2)
    out = annotator.annotate(pool, make_ctx(tmp_path / "s1", models, source))

    assert out.column_names == ["trace_id", "system1_answer", "system1_correct"]
    assert out.column("trace_id").to_pylist() == pool.column("trace_id").to_pylist()
    assert source.calls == [[pool["question_id"][i].as_py() for i in (0, 1, 2)]]  # unique, first-seen order
    by_question = {}
    for qid, answer in zip(pool.column("question_id").to_pylist(), out.column("system1_answer").to_pylist()):
        by_question.setdefault(qid, set()).add(answer)
    assert all(len(a) == 1 and a != {""} for a in by_question.values())
    expected = {questions["question_id"][0].as_py(): None, questions["question_id"][1].as_py(): 0.0,
                questions["question_id"][2].as_py(): 0.0}
    assert out.column("system1_correct").to_pylist() == [expected[q] for q in pool.column("question_id").to_pylist()]

    # the verdict follows the answer: make question 1's reference its System-1 answer
    q1 = questions["question_id"][1].as_py()
    answer_q1 = next(iter(by_question[q1]))
    pool2 = pool.set_column(3, "reference", pa.array(
        [answer_q1 if q == q1 else r for q, r in zip(pool["question_id"].to_pylist(), pool["reference"].to_pylist())]))
    again = annotator.annotate(pool2, make_ctx(tmp_path / "s1", models, ExactMatchSource()))  # resumes from shards
    verdicts = zip(pool["question_id"].to_pylist(), again["system1_correct"].to_pylist())
    assert [c for q, c in verdicts if q == q1] == [1.0, 1.0]


def test_teacher_and_system1_run_as_pipeline_stages(tiny, tmp_path):
    plugins = Plugins(load_entrypoints=False, extra=[nt_hf, ExactMatchPlugin])
    pipeline = Pipeline(plugins, Store(tmp_path), Progress(disable=True), threads=1)
    spec = run_spec(source="exact-match-test", teacher={"name": "hf", "model": tiny, "n": 2, "max_new_tokens": 4},
                    annotators=[{"name": "system1", "model": tiny, "max_new_tokens": 3}])
    source, pool = pipeline.pool(spec)
    assert pool.table().num_rows == 6
    assert pool.manifest["stats"]["completion_tokens"] == 24 and pool.manifest["stats"]["batches"] == 1
    table, keys = pipeline.annotated(spec, source, pool)
    assert len(keys) == 1
    assert table.column("system1_correct").to_pylist() == [0.0] * 6


def test_system1_prefill_is_kept_in_the_answer(tiny, teacher, models, questions, tmp_path):
    pool = teacher().generate(questions, make_ctx(tmp_path / "teacher", models))
    annotator = System1Annotator(model=tiny, max_new_tokens=3, prefill="<answer>")
    out = annotator.annotate(pool, make_ctx(tmp_path / "s1", models))
    assert all(a.startswith("<answer>") and len(a) > len("<answer>") for a in out.column("system1_answer").to_pylist())
    assert out.column("system1_correct").to_pylist() == [None] * 3  # no source, no verdict


@pytest.mark.parametrize("top_k, top_p", [(50, 0.95), (0, 0.9), (3, 1.0), (1000, 0.5)])
def test_nucleus_sampler_is_transformers_top_k_then_top_p(top_k, top_p):
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from nt_hf.sampling import NucleusSampler

    scores = torch.randn(4, 2000, generator=torch.Generator().manual_seed(0)) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(0.7)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + [TopPLogitsWarper(top_p)])
    expected = warpers(None, scores.clone()).softmax(-1)
    probs, ids = NucleusSampler(0.7, top_p, top_k, seed=0).candidates(scores)
    ours = torch.zeros_like(expected).scatter_(-1, ids, probs)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    # the processor leaves exactly one token standing per row, one that the distribution allows
    out = NucleusSampler(0.7, top_p, top_k, seed=1)(None, scores)
    assert ((out == 0).sum(-1) == 1).all()
    assert (expected.gather(-1, out.argmax(-1, keepdim=True)) > 0).all()


def test_samples_sharing_the_prefill_equal_one_row_per_sample(tiny):
    model = ChatModel(tiny, threads=1, dtype="float32")
    prompts = [model.chat_prompt(q) for q in QUESTION_TEXTS]
    shared = model.complete(prompts, 8, Sampling(), seed=0, samples=3)
    separate = model.complete([p for p in prompts for _ in range(3)], 8, Sampling(), seed=0)
    assert [c.token_ids for c in shared] == [c.token_ids for c in separate]
    sampled = model.complete(prompts, 8, Sampling(1.0, 0.95, 50), seed=0, samples=3)
    assert len({tuple(c.token_ids) for c in sampled[:3]}) > 1  # the samples of one prompt differ


def test_a_row_ends_right_after_a_stop_string(tiny):
    model = ChatModel(tiny, threads=1, dtype="float32")
    prompt = model.chat_prompt(QUESTION_TEXTS[0])
    free = model.complete([prompt], 12, Sampling(), seed=0)[0]
    stop = model.decode(free.token_ids[3:5])  # a string greedy decoding is known to write
    cut = model.complete([prompt], 12, Sampling(), seed=0, stop=(stop,))[0]
    assert cut.stopped and cut.at_stop_string
    assert stop in model.decode(cut.token_ids) and cut.token_ids == free.token_ids[:len(cut.token_ids)]
    assert stop not in model.decode(cut.token_ids[:-1])


class AnswerReadingSource(ExactMatchSource):
    """A source that reads a fixed final answer out of every response but the first (gym reads the family's
    answer shape)."""

    def final_answers(self, questions, responses):
        return [None if i == 0 else "42" for i in range(len(responses))]


def test_answer_from_source_keeps_the_response_as_thinking(teacher, models, questions, tmp_path):
    ctx = make_ctx(tmp_path, models)
    ctx.source = AnswerReadingSource()
    table = teacher(answer_from="source", prefill="", force_answer=None, system_prompt=None, max_new_tokens=4,
                    batch_size=3).generate(questions, ctx)
    rows = table.to_pylist()
    assert sorted(r["answer"] for r in rows) == ["", "<answer>42</answer>", "<answer>42</answer>"]
    assert all(r["thinking"] for r in rows)  # the whole response
    assert all(r["reasoning_tokens"] == r["completion_tokens"] for r in rows)
    assert not any(r["complete"] for r in rows if not r["answer"])  # no answer read: incomplete


def test_reasoning_tokens_count_the_generated_thinking(teacher, tiny, models, questions, tmp_path):
    """reasoning_tokens is the number of ids the model wrote before the end of its thinking. A think_end the model
    writes as its 5th and 6th greedy tokens makes the thinking its first four: the teacher's count is 4, and so is
    the tokenizer's count of the thinking text."""
    one = questions.slice(0, 1)
    model = ChatModel(tiny, threads=1)
    prompt = model.chat_prompt(QUESTION_TEXTS[0], HFTeacher.Settings().system_prompt, "<think>\n")
    ids = model.complete([prompt], 12, Sampling(), seed=0)[0].token_ids
    think_end = model.decode(ids[4:6])
    assert think_end.strip() and think_end not in model.decode(ids[:4])
    row = teacher(max_new_tokens=12, temperature=0, think_end=think_end, force_answer=None, stop=[])
    row = conform(row.generate(one, make_ctx(tmp_path, models)), TRACES, "hf").to_pylist()[0]
    assert row["thinking"] == model.decode(ids[:4]).strip() and row["answer"]
    assert row["reasoning_tokens"] == 4 == len(model.encode(row["thinking"]))
    assert row["completion_tokens"] == 12


def test_reasoning_tokens_when_the_thinking_does_not_close(teacher, tiny_early_eos, models, questions, tmp_path):
    cut = teacher().generate(questions, make_ctx(tmp_path / "cut", models))  # cut off at 6 tokens: all thinking
    assert cut.column("reasoning_tokens").to_pylist() == [6] * 3
    folder, thinking_ids = tiny_early_eos  # EOS after 3 tokens, then a forced answer: the 3 are the thinking
    forced = teacher(model=folder, max_new_tokens=12, temperature=0, force_answer="\n</think>\n", answer_max_tokens=5)
    row = forced.generate(questions.slice(0, 1), make_ctx(tmp_path / "forced", models)).to_pylist()[0]
    assert row["reasoning_tokens"] == len(thinking_ids) == 3 < row["completion_tokens"]
