"""The reasoning presets in tasks/*_reasoning: every YAML loads in lm-eval from a local file (no download),
and the shared scoring (nt_lmeval.reasoning) is right on hand-written responses."""

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nt_lmeval import LMEvalBenchmark, reasoning, tasks_dir

DATA = Path(__file__).parent / "data" / "reasoning_tasks"
# a folder holding the real MATH-500, AIME 2024 and AMC 2023 files (math500.jsonl, aime24.jsonl, amc23.jsonl)
REFERENCE = Path(os.environ.get("NT_HARNESS_REFERENCE_DATA") or "no-reference-data")

LOCAL = {
    "math500_reasoning": DATA / "math500.jsonl",
    "aime24_reasoning": DATA / "aime24.jsonl",
    "amc23_reasoning": DATA / "amc23.jsonl",
    "gpqa_diamond_reasoning": DATA / "gpqa_diamond.csv",
    "mmlu_pro_reasoning": DATA / "mmlu_pro.jsonl",
    "supergpqa_reasoning": DATA / "supergpqa.jsonl",
}
# samples per question: NaturalThoughts (arXiv 2507.01921) §4 for MATH-500, GPQA-Diamond, MMLU-Pro,
# SuperGPQA; ours for AIME24/AMC23 (NaturalThoughts did not run them; their protocol variants are tested below)
REPEATS = {"math500_reasoning": 16, "aime24_reasoning": 10, "amc23_reasoning": 10,
           "gpqa_diamond_reasoning": 24, "mmlu_pro_reasoning": 1, "supergpqa_reasoning": 1}


def manager(local_data):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False,
                       metadata={"local_data": {k: str(v) for k, v in local_data.items()}})


@pytest.fixture(scope="module")
def loaded():
    tasks = manager(LOCAL).load(list(LOCAL))["tasks"]
    return {name: (task, list(task.test_docs())) for name, task in tasks.items()}


def test_every_preset_loads_from_its_local_file(loaded):
    assert set(loaded) == set(LOCAL)
    for name, (task, docs) in loaded.items():
        rows = reasoning.read_table(LOCAL[name]).num_rows
        assert len(docs) == rows, name
        assert task.config.repeats == REPEATS[name], name
        gen = task.config.generation_kwargs
        assert (gen["do_sample"], gen["temperature"], gen["top_p"], gen["max_gen_toks"]) == (True, 0.6, 0.95, 16384)
        assert all(d["question_id"] for d in docs) and len({d["question_id"] for d in docs}) == rows
        prompt = task.doc_to_text(docs[0])
        assert ("\\boxed{}" in prompt) if "reference" in docs[0] else ("Answer: $LETTER" in prompt), name


def test_math_docs_normalise_hub_and_local_shapes(loaded):
    _, amc = loaded["amc23_reasoning"]
    assert [d["reference"] for d in amc] == ["27", "36"]  # float answers 27.0 -> "27"
    assert amc[0]["problem"].startswith("How many miles")  # hub amc23 names it `question`
    _, math500 = loaded["math500_reasoning"]
    assert math500[0]["question_id"] == "test/prealgebra/1.json"
    from datasets import Dataset

    ids = reasoning.math_docs(Dataset.from_list([{"id": 0, "question": "a?", "answer": 1.0},
                                                 {"id": 1, "question": "b?", "answer": 2.0}]))["question_id"]
    assert ids == ["0", "1"]  # a row id of 0 is an id, not a missing one


def test_without_a_local_file_offline_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="local_data"):
        reasoning.load_docs("math500_reasoning", "HuggingFaceH4/MATH-500", "test", local_data={})


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # last one, nested braces
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("$\\boxed 5$", "5"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\frac{1}{2}", None),  # never closed (cut off)
    ("put the final answer within \\boxed{}.", None),  # the prompt echoed: an empty box is no answer
    ("the answer is 42", None),
])
def test_last_boxed(text, expected):
    assert reasoning.last_boxed(text) == expected


def test_answer_part_strips_thinking():
    assert reasoning.answer_part("<think>\ntry \\boxed{1}\n</think>\n\\boxed{2}") == "\n\\boxed{2}"
    assert reasoning.answer_part("<think>\ncut off mid-thought \\boxed{1}") is None
    assert reasoning.answer_part("no thinking \\boxed{3}") == "no thinking \\boxed{3}"


def test_math_equal_uses_math_verify():
    assert reasoning.math_equal("\\frac{1}{2}", "0.5")
    assert reasoning.math_equal("0.5", "\\frac{1}{2}")
    assert reasoning.math_equal("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)")
    assert reasoning.math_equal("27", "27.0")
    assert not reasoning.math_equal("\\frac{1}{2}", "\\frac{1}{3}")
    assert not reasoning.math_equal("4", "no idea {")


def test_score_math_averages_repeats_and_counts_missing_answers(loaded):
    _, docs = loaded["math500_reasoning"]
    doc = docs[0]  # reference \frac{1}{2}
    right = {"exact_match": 1.0, "no_answer": 0.0}
    assert reasoning.score_math(doc, ["<think>\nhalve\n</think>\nSo \\boxed{0.5}"]) == right
    samples = [
        "<think>\n2/4 = 1/2\n</think>\nThe answer is \\boxed{\\frac{1}{2}}.",  # right
        "<think>\nmaybe \\boxed{\\frac{1}{2}} but let me check",  # thinking cut off: no answer, wrong
        "<think>\nhm\n</think>\n\\boxed{\\frac{1}{3}}",  # wrong
        "<think>\nhm\n</think>\nIt is one half.",  # no boxed answer after thinking
    ]
    assert reasoning.score_math(doc, [samples]) == {"exact_match": 0.25, "no_answer": 0.5}


@pytest.mark.parametrize("text,expected", [
    ("The options... so the answer is B", "B"),
    ("C is tempting.\nAnswer: D", "D"),
    ("Answer: C\nA quick check confirms it.", "C"),  # explicit answer beats a later article "A"
    ("I pick (B).", "B"),  # last standalone letter; "I" is outside A-D here
    ("\\boxed{\\text{A}}", "A"),
    ("Because of ABC and DNA, nothing", None),  # letters inside words are not answers
])
def test_last_letter_abcd(text, expected):
    assert reasoning.last_letter(text, "ABCD") == expected


def test_last_letter_ten_options_ignores_pronoun_after_explicit_answer():
    assert reasoning.last_letter("The answer is (G). I am sure.", "ABCDEFGHIJ") == "G"
    assert reasoning.last_letter("I think J", "ABCDEFGHIJ") == "J"


def test_gpqa_options_shuffled_with_a_fixed_seed_map_back(loaded):
    task, docs = loaded["gpqa_diamond_reasoning"]
    correct = {"rec01": "Photon", "rec02": "+7", "rec03": "Mitochondrion"}
    for doc in docs:
        assert doc["options"][ord(doc["answer"]) - ord("A")] == correct[doc["question_id"]]
        prompt = task.doc_to_text(doc)
        assert f"{doc['answer']}) {correct[doc['question_id']]}" in prompt
    assert {d["answer"] for d in docs} != {"A"}  # the correct answer is not always first
    again = manager(LOCAL).load(["gpqa_diamond_reasoning"])["tasks"]["gpqa_diamond_reasoning"]
    assert [d["options"] for d in again.test_docs()] == [d["options"] for d in docs]  # fixed seed
    first = docs[0]
    right = f"<think>\noptions...\n</think>\nAnswer: {first['answer']}"
    wrong = "<think>\n...\n</think>\nAnswer: " + next(x for x in "ABCD" if x != first["answer"])
    assert reasoning.score_letter(first, [[right, wrong, "<think>\nnever finished"]]) == {
        "exact_match": pytest.approx(1 / 3), "no_answer": pytest.approx(1 / 3)}


def test_shuffle_depends_on_question_not_row_order():
    a = reasoning.shuffled_options("Q1", "right", ["w1", "w2", "w3"], seed=0)
    assert reasoning.shuffled_options("Q1", "right", ["w1", "w2", "w3"], seed=0) == a
    assert a[0][ord(a[1]) - ord("A")] == "right"
    orders = {tuple(reasoning.shuffled_options(f"Q{i}", "right", ["w1", "w2", "w3"], seed=0)[0]) for i in range(20)}
    assert len(orders) > 3


def test_mmlu_pro_and_supergpqa_letters(loaded):
    _, mmlu = loaded["mmlu_pro_reasoning"]
    assert mmlu[1]["options"] == ["Berlin", "Paris", "Rome"]  # "N/A" padding dropped
    assert reasoning.score_letter(mmlu[0], ["<think>\n7 is prime\n</think>\nAnswer: C"])["exact_match"] == 1.0
    assert reasoning.score_letter(mmlu[0], ["<think>\n7 is prime\n</think>\nAnswer: J"])["exact_match"] == 0.0
    _, sgpqa = loaded["supergpqa_reasoning"]
    assert sgpqa[0]["answer"] == "B" and len(sgpqa[0]["options"]) == 5
    assert reasoning.score_letter(sgpqa[0], ["The answer is (B)"]) == {"exact_match": 1.0, "no_answer": 0.0}
    assert reasoning.score_letter(sgpqa[0], ["<think>\nNitrogen, so B"]) == {"exact_match": 0.0, "no_answer": 1.0}


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="NT_HARNESS_REFERENCE_DATA names no folder of the real files")
def test_real_files_load_and_their_gold_answers_score_right():
    files = {"math500_reasoning": "math500.jsonl", "aime24_reasoning": "aime24.jsonl", "amc23_reasoning": "amc23.jsonl"}
    tasks = manager({t: REFERENCE / f for t, f in files.items()}).load(list(files))["tasks"]
    sizes = {name: len(list(task.test_docs())) for name, task in tasks.items()}
    assert sizes == {"math500_reasoning": 500, "aime24_reasoning": 30, "amc23_reasoning": 40}
    for name in ("aime24_reasoning", "amc23_reasoning"):
        for doc in tasks[name].test_docs():
            boxed = f"<think>\n...\n</think>\nSo the answer is $\\boxed{{{doc['reference']}}}$."
            assert reasoning.score_math(doc, [boxed])["exact_match"] == 1.0, (name, doc["reference"])
    math500 = list(tasks["math500_reasoning"].test_docs())
    right = sum(reasoning.score_math(d, [f"\\boxed{{{d['reference']}}}"])["exact_match"] for d in math500[:100])
    assert right >= 98  # math-verify reads back (nearly) every MATH-500 reference as itself


def test_benchmark_passes_local_data_and_repeats(tiny_llama, tmp_path):  # tiny_llama: tests/conftest.py
    from nt_harness.components import Context
    from nt_harness.progress import Progress

    ctx = Context(out=tmp_path / "out", scratch=tmp_path, workdir=tmp_path, threads=1, progress=Progress(disable=True))
    ctx.out.mkdir()
    local = {"math500_reasoning": str(LOCAL["math500_reasoning"])}
    bench = LMEvalBenchmark(tasks=["math500_reasoning"], local_data=local,
                            repeats=2, max_gen_toks=8, limit=2)
    rows = bench.evaluate(tiny_llama, ctx)
    metrics = {r["metric"]: r for r in rows}
    assert set(metrics) == {"exact_match", "no_answer"} and metrics["exact_match"]["n"] == 2
    assert metrics["no_answer"]["value"] == 1.0  # 8 random tokens never hold a \boxed{} answer
    samples_file = next((ctx.out / "lm_eval").rglob("samples_math500_reasoning_*.jsonl"))
    logged = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert [len(s["resps"][0]) for s in logged] == [2, 2]  # both repeats kept and scored
    assert all(s["doc"]["question_id"].startswith("test/") for s in logged)
    per_question = pq.read_table(ctx.out / "samples.parquet").to_pylist()
    assert [r["question_id"] for r in per_question] == ["test/prealgebra/1.json", "test/precalculus/807.json"]
    assert all(0 < r["response_tokens"] <= 8 and r["no_answer"] == 1.0 for r in per_question)


def test_chat_completions_backend_samples_distinct_repeats(tiny_llama, tmp_path, smollm2_server):
    """local-chat-completions against a real llama.cpp server (xllamacpp) serving SmolLM2: the repeats of
    a question must be distinct samples (lm-eval alone would send one fixed seed for all of them)."""
    from nt_harness.components import Context
    from nt_harness.progress import Progress
    base = smollm2_server
    ctx = Context(out=tmp_path / "out", scratch=tmp_path, workdir=tmp_path, threads=1, progress=Progress(disable=True))
    ctx.out.mkdir()
    local = {"math500_reasoning": str(LOCAL["math500_reasoning"])}
    bench = LMEvalBenchmark(tasks=["math500_reasoning"], local_data=local,
                            backend="local-chat-completions", base_url=f"{base}/chat/completions",
                            served_model="smollm2", repeats=3, max_gen_toks=16, limit=2, batch_size=2)
    rows = bench.evaluate(tiny_llama, ctx)  # tiny_llama: a folder with SmolLM2's tokenizer, for token counts
    assert {r["metric"] for r in rows} == {"exact_match", "no_answer"}
    samples_file = next((ctx.out / "lm_eval").rglob("samples_math500_reasoning_*.jsonl"))
    logged = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert [len(s["resps"][0]) for s in logged] == [3, 3]
    assert all(r.strip() for s in logged for r in s["resps"][0])  # real text came back
    assert any(len(set(s["resps"][0])) > 1 for s in logged)  # sampled, not one answer three times


# The AIME 2024 / AMC 2023 protocol presets: one folder per benchmark, the base file with NaturalThoughts'
# generation settings and one file per other source, each `include:`-ing the base (same data, prompt, scoring).
PROTOCOL_PRESETS = {
    bench: [f"{bench}_reasoning{suffix}" for suffix in ("", "_limo", "_limo_sampled", "_evalchemy")]
    for bench in ("aime24", "amc23")
}
# One real problem each, as the hub files hold them (HuggingFaceH4/aime_2024: problem, answer, id;
# math-ai/amc23: question, float answer, id): 2024 AIME I Problem 1 and 2023 AMC 12A Problem 1.
REAL = {
    "aime24": ({"id": 60, "answer": "204", "problem": (
        "Every morning Aya goes for a $9$-kilometer-long walk and stops at a coffee shop afterwards. When she "
        "walks at a constant speed of $s$ kilometers per hour, the walk takes her 4 hours, including $t$ minutes "
        "spent in the coffee shop. When she walks $s+2$ kilometers per hour, the walk takes her 2 hours and 24 "
        "minutes, including $t$ minutes spent in the coffee shop. Suppose Aya walks at $s+\\frac{1}{2}$ kilometers "
        "per hour. Find the number of minutes the walk takes her, including the $t$ minutes spent in the coffee "
        "shop.")}, "204"),
    "amc23": ({"id": 0, "answer": 27.0, "question": (
        "Cities $A$ and $B$ are $45$ miles apart. Alicia lives in $A$ and Beth lives in $B$. Alicia bikes towards "
        "$B$ at 18 miles per hour. Leaving at the same time, Beth bikes toward $A$ at 12 miles per hour. How many "
        "miles from City $A$ will they be when they meet?")}, "27"),
}


@pytest.fixture(scope="module")
def protocols(tmp_path_factory):
    """Every AIME/AMC preset loaded through lm-eval's TaskManager from a file holding one real problem (the
    key `<bench>_reasoning` serves all of a benchmark's presets)."""
    folder = tmp_path_factory.mktemp("real")
    files = {}
    for bench, (row, _) in REAL.items():
        files[f"{bench}_reasoning"] = folder / f"{bench}.jsonl"
        files[f"{bench}_reasoning"].write_text(json.dumps(row) + "\n")
    names = [name for presets in PROTOCOL_PRESETS.values() for name in presets]
    tasks = manager(files).load(names)["tasks"]
    assert set(tasks) == set(names)
    return tasks


def generation(task) -> tuple:
    gen = task.config.generation_kwargs
    return task.config.repeats, gen["do_sample"], gen["temperature"], gen["top_p"], gen["max_gen_toks"]


@pytest.mark.parametrize("bench", ["aime24", "amc23"])
def test_protocol_presets_carry_their_sources_numbers(bench, protocols):
    """(repeats, do_sample, temperature, top_p, max_gen_toks) per preset, each from the source cited."""
    nt, limo, limo_sampled, evalchemy = (protocols[name] for name in PROTOCOL_PRESETS[bench])
    # NaturalThoughts settings: arXiv 2507.01921 §4, Llama students, temperature 0.6 / top-p 0.95, up to
    # 16,384 new tokens; the paper did not run AIME/AMC, so the 10 repeats are ours
    assert generation(nt) == (10, True, 0.6, 0.95, 16384)
    # LIMO's released script, GAIR-NLP/LIMO eval/eval.sh: --n_sampling 1 --temperature 0.0 (greedy) --top_p 1
    # --max_tokens 32768
    assert generation(limo) == (1, False, 0.0, 1.0, 32768)
    # LIMO paper's small-benchmark protocol as Zhao et al. 2025 §4.2 state it: 16 samples at temperature 0.7
    # (unbiased pass@1 = mean over the 16); top_p and length from LIMO eval/eval.sh (--top_p 1, --max_tokens 32768)
    assert generation(limo_sampled) == (16, True, 0.7, 1.0, 32768)
    # Evalchemy eval/chat_benchmarks/{AIME24,AMC23}/eval_instruct.py: n_repeat 10, temperature 0.7 (sampled on
    # vLLM), max_new_tokens 32768; top_p unset there, so vLLM's default 1.0
    assert generation(evalchemy) == (10, True, 0.7, 1.0, 32768)
    # only the generation settings differ: the same data, prompt and scoring as the base preset
    for task in (limo, limo_sampled, evalchemy):
        assert task.config.process_results is nt.config.process_results
        assert task.config.custom_dataset is nt.config.custom_dataset


@pytest.mark.parametrize("name", [n for presets in PROTOCOL_PRESETS.values() for n in presets])
def test_protocol_preset_scores_a_real_problem(name, protocols):
    """Each preset, through its own config, scores a right answer to a real problem right and a wrong one wrong."""
    task = protocols[name]
    bench = name.split("_", 1)[0]
    row, reference = REAL[bench]
    [doc] = list(task.test_docs())
    assert doc["reference"] == reference and doc["question_id"]
    prompt = task.doc_to_text(doc)
    assert prompt.startswith(row.get("problem") or row["question"]) and "\\boxed{}" in prompt
    right = f"<think>\nwork it out\n</think>\nThe answer is $\\boxed{{{reference}}}$."
    wrong = "<think>\nwork it out\n</think>\nThe answer is $\\boxed{1}$."
    cut_off = f"<think>\nmaybe \\boxed{{{reference}}}, let me check"
    assert task.process_results(doc, [[right]]) == {"exact_match": 1.0, "no_answer": 0.0}
    assert task.process_results(doc, [[right, wrong, cut_off, right]]) == {"exact_match": 0.5, "no_answer": 0.25}
