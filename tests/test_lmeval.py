"""The gym_heldout lm-eval task and the lmeval benchmark, end to end on a tiny random Llama."""

import importlib.util
import json

import pyarrow.parquet as pq
import pytest

from nt_gym.heldout import heldout_ids
from nt_harness.components import Context
from nt_harness.progress import Progress
from nt_harness.pipeline import per_question_values
from nt_harness.records import completed, result_rows
from nt_lmeval import LMEvalBenchmark, tasks_dir


@pytest.fixture(scope="module")
def utils():
    spec = importlib.util.spec_from_file_location("gym_heldout_utils", tasks_dir() / "gym_heldout" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_loads_in_lmeval_from_any_cwd(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)  # data_files is relative to the task folder, not the cwd
    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    task = manager.load_task_or_group(["gym_heldout"])["gym_heldout"]
    docs = list(task.test_docs())
    assert len(docs) == len(heldout_ids())
    assert {d["question_id"] for d in docs} == heldout_ids()
    assert task.config.generation_kwargs["do_sample"] is False


def _doc(family="basic_arithmetic"):
    rows = [json.loads(line) for line in (tasks_dir() / "gym_heldout" / "gym_heldout.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["dataset"] == family)


def _scored(utils, doc, responses: list[str], reading: str) -> dict:
    """What lm-eval does with one doc's responses: the filter, then process_results on its output."""
    return utils.process_results(doc, getattr(utils, reading)([responses], [doc]))


def test_process_results_on_hand_written_responses(utils):
    doc = _doc()
    ref = doc["answer"]
    right = {"exact_match": 1.0, "score": 1.0, "no_answer": 0.0}
    missing = {"exact_match": 0.0, "score": 0.0, "no_answer": 1.0}
    for reading in ("strict", "flexible"):
        assert _scored(utils, doc, [f"<think>\nmultiples...\n</think>\n<answer>{ref}</answer>"], reading) == right
        assert _scored(utils, doc, [f"<answer>{ref}"], reading) == right  # lm-eval cut the stop string off
        assert _scored(utils, doc, [f"<think>\nit is <answer>{ref}</answer> I guess, but"], reading) == missing
        assert _scored(utils, doc, ["   \n"], reading) == missing
    wrong = {"exact_match": 0.0, "score": 0.0, "no_answer": 0.0}
    assert _scored(utils, doc, ["<answer>none</answer>"], "strict") == wrong
    assert _scored(utils, doc, ["<answer>none</answer>"], "flexible") == missing  # nothing integer-shaped
    in_words = f"<answer>The answer is {ref}.</answer>"
    partial = _scored(utils, doc, [in_words], "strict")  # reasoning-gym's partial credit
    assert partial["exact_match"] == 0.0 and 0.0 < partial["score"] < 1.0
    assert _scored(utils, doc, [in_words], "flexible") == right
    assert _scored(utils, doc, [f"So it is {ref}."], "strict") == missing
    assert _scored(utils, doc, [f"So it is {ref}."], "flexible") == right


def test_benchmark_runs_a_tiny_model(tiny_llama, tmp_path):  # tiny_llama: tests/conftest.py
    ctx = Context(out=tmp_path / "out", scratch=tmp_path, workdir=tmp_path, threads=1,
                  progress=Progress(disable=True))
    ctx.out.mkdir()
    rows = LMEvalBenchmark(limit=4, max_gen_toks=16).evaluate(tiny_llama, ctx)
    assert {(r["task"], r["metric"], r["filter"]) for r in rows} == {
        ("gym_heldout", m, f) for m in ("exact_match", "score", "no_answer") for f in ("strict", "flexible")}
    assert result_rows(rows, "lmeval") == rows  # ResultRows, stored as they came
    for r in rows:
        assert r["n"] == 4 and r["benchmark"] == "lmeval" and 0.0 <= r["value"] <= 1.0
    assert {r["metric"]: r["higher_is_better"] for r in rows} == {"exact_match": True, "score": True, "no_answer": False}
    headline = [(r["metric"], r["filter"]) for r in rows if r["headline"]]
    assert headline == [("exact_match", "flexible")]  # the task's YAML declares it, with a sentence saying why
    assert all("flexible" in r["headline"] for r in rows if r["headline"])
    samples = pq.read_table(ctx.out / "samples.parquet")
    assert samples.num_rows == 8  # 4 questions, each read two ways
    assert samples.column("doc_id").to_pylist() == [0, 1, 2, 3] * 2
    assert samples.column("filter").to_pylist() == ["strict"] * 4 + ["flexible"] * 4
    assert set(samples.column("question_id").to_pylist()) <= heldout_ids()
    assert all(0 < t <= 16 for t in samples.column("response_tokens").to_pylist())
    # lm-eval's form (a no_answer row, a response_tokens column) fills the typed fields the leaderboard reads
    typed = completed(rows, per_question_values(samples))
    assert all(r.no_answer is not None and 0 < r.gen_tokens <= 16 for r in typed if r.metric == "exact_match")
    assert list((ctx.out / "lm_eval").rglob("samples_gym_heldout_*.jsonl"))
    assert list((ctx.out / "lm_eval").rglob("results_*.json"))


def test_process_results_averages_over_repeats(utils):
    doc = _doc()
    ref = doc["answer"]
    # the filters hand process_results every repeat of the doc as one list
    got = _scored(utils, doc, [f"<answer>{ref}</answer>", "<answer>none</answer>", "<think>\ncut off"], "strict")
    assert got["exact_match"] == pytest.approx(1 / 3) and got["no_answer"] == pytest.approx(1 / 3)
    assert utils.strict([["<answer>a", "<answer>b"]], [doc]) == [["a", "b"]]


def test_mode_settings_are_checked():
    from pydantic import ValidationError

    assert LMEvalBenchmark().settings.modes == ["think"]
    for bad in ([], ["think", "think"], ["fast"]):
        with pytest.raises(ValidationError):
            LMEvalBenchmark(modes=bad)


def _render(tokenizer, task):
    """The prompt lm-eval builds for the task's first doc, as the hf backend renders it."""
    def template(messages, add_generation_prompt=True):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             continue_final_message=not add_generation_prompt)

    doc = next(iter(task.test_docs()))
    return task.fewshot_context(doc, 0, apply_chat_template=True, chat_template=template,
                                gen_prefix=task.doc_to_prefix(doc))


def test_modes_are_copies_of_the_task_with_their_own_prompt(tiny_llama):
    from transformers import AutoTokenizer

    from nt_lmeval import ADAPTIVE_INSTRUCTION, NO_THINK_INSTRUCTION

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    plain = LMEvalBenchmark()
    bench = LMEvalBenchmark(modes=["think", "no-think", "adaptive"])
    tasks = {t.config.task: t for t in bench.load_tasks(bench.task_manager())}
    assert list(tasks) == ["gym_heldout", "gym_heldout@no-think", "gym_heldout@adaptive"]
    assert len({id(t) for t in tasks.values()}) == 3
    think = _render(tokenizer, tasks["gym_heldout"])
    assert think == _render(tokenizer, plain.load_tasks(plain.task_manager())[0])  # think: the task as it was
    no_think = _render(tokenizer, tasks["gym_heldout@no-think"])
    assert NO_THINK_INSTRUCTION in no_think and NO_THINK_INSTRUCTION not in think
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n")  # prefilled, answer comes next
    adaptive = _render(tokenizer, tasks["gym_heldout@adaptive"])
    assert ADAPTIVE_INSTRUCTION in adaptive and adaptive.endswith("<|im_start|>assistant\n")
    # a server continues the prefilled turn only when asked (vLLM); the hf backend gets no such kwargs
    chat = LMEvalBenchmark(modes=["no-think"], backend="local-chat-completions", base_url="http://x/v1")
    task = chat.load_tasks(chat.task_manager())[0]
    assert task.config.generation_kwargs["continue_final_message"] is True
    assert "continue_final_message" not in tasks["gym_heldout@no-think"].config.generation_kwargs


def test_sampling_overrides():
    assert LMEvalBenchmark(temperature=1.0, top_p=0.9).generation_kwargs() == {
        "max_gen_toks": 256, "temperature": 1.0, "do_sample": True, "top_p": 0.9}
    assert LMEvalBenchmark(temperature=1.0, greedy=True).generation_kwargs()["do_sample"] is False
    assert LMEvalBenchmark(backend="local-chat-completions").generation_kwargs()["seed"] is None


def test_modes_and_sampled_repeats_on_a_tiny_model(tiny_llama, tmp_path):
    """repeats=2 at temperature 1: two different samples per question, scored as their mean, for each mode
    under its own task name; samples keyed by (task, question) so paired tests work per mode."""
    ctx = Context(out=tmp_path / "out", scratch=tmp_path, workdir=tmp_path, threads=1,
                  progress=Progress(disable=True))
    ctx.out.mkdir()
    bench = LMEvalBenchmark(limit=3, max_gen_toks=12, modes=["think", "no-think"], repeats=2, temperature=1.0)
    rows = bench.evaluate(tiny_llama, ctx)
    assert {(r["task"], r["metric"]) for r in rows} == {
        (t, m) for t in ("gym_heldout", "gym_heldout@no-think") for m in ("exact_match", "score", "no_answer")}
    samples = [s for s in pq.read_table(ctx.out / "samples.parquet").to_pylist() if s["filter"] == "strict"]
    assert len(samples) == 6
    assert {(s["task"], s["mode"]) for s in samples} == {("gym_heldout", "think"), ("gym_heldout@no-think", "no-think")}
    for task in ("gym_heldout", "gym_heldout@no-think"):
        assert len({s["question_id"] for s in samples if s["task"] == task}) == 3
    assert all(s["distinct_responses"] == 2 for s in samples)
    # counted by re-tokenizing the text: a random model's word salad can re-tokenize a little longer
    assert all(0 < s["response_tokens"] <= 2 * 12 for s in samples)
    for task in ("gym_heldout", "gym_heldout@no-think"):
        [jsonl] = list((ctx.out / "lm_eval").rglob(f"samples_{task}_*.jsonl"))
        logged = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(logged) == 6  # 3 questions, each read two ways (filters strict and flexible)
        for item in logged:
            first, second = item["resps"][0]
            assert first != second  # distinct samples, both scored (the filters keep every repeat)
            assert item["no_answer"] in (0.0, 0.5, 1.0)
        prompt = logged[0]["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.endswith("<think>\n\n</think>\n") == (task == "gym_heldout@no-think")
    assert ctx.stats["device"] == "cpu" and ctx.stats["gpus"] == 0 and ctx.stats["modes"] == ["think", "no-think"]


def test_no_think_on_a_chat_completions_server(tiny_llama, tmp_path, smollm2_server):
    """local-chat-completions against a real llama.cpp server (xllamacpp) serving SmolLM2: the server
    continues the prefilled assistant turn (it answers at once, after the empty thinking), and the prefill
    it echoes back is not counted as generated tokens."""
    base = smollm2_server
    ctx = Context(out=tmp_path / "out", scratch=tmp_path, workdir=tmp_path, threads=1, progress=Progress(disable=True))
    ctx.out.mkdir()
    bench = LMEvalBenchmark(backend="local-chat-completions", base_url=f"{base}/chat/completions",
                            served_model="smollm2", modes=["no-think"], greedy=True, max_gen_toks=16, limit=2)
    bench.evaluate(tiny_llama, ctx)  # tiny_llama: a folder with SmolLM2's tokenizer, for token counts
    [jsonl] = list((ctx.out / "lm_eval").rglob("samples_gym_heldout@no-think_*.jsonl"))
    responses = [json.loads(line)["resps"][0][0] for line in jsonl.read_text().splitlines()
                 if json.loads(line)["filter"] == "strict"]
    prefill = bench.settings.no_think_prefill
    assert len(responses) == 2 and all(r.startswith(prefill) and r[len(prefill):].strip() for r in responses)
    assert "<think>" not in "".join(r[len(prefill):] for r in responses)  # continued, not a new turn
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    samples = pq.read_table(ctx.out / "samples.parquet").to_pylist()
    tokens = [r["response_tokens"] for r in samples if r["filter"] == "strict"]
    assert tokens == [len(tokenizer(r[len(prefill):], add_special_tokens=False).input_ids) for r in responses]


def test_lmeval_think_end_token_is_refused_with_the_reason():
    """lm-eval would keep a response whose thinking never closed whole and score it as an answer."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="think_end_token: the tasks read the answer after </think>"):
        LMEvalBenchmark(model_args={"think_end_token": "</think>"})
    assert LMEvalBenchmark(model_args={"enable_thinking": False}).settings.model_args == {"enable_thinking": False}


def test_a_rerun_answers_greedy_requests_from_lm_evals_request_cache(tiny_llama, tmp_path):
    """What a killed evaluation had answered comes back from lm-eval's request cache in the stage's scratch.
    Shown with a second model that answers differently: the pipeline keys the scratch by the checkpoint, so
    in a real run the cache only ever holds this model's answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(other)

    def responses(model_dir, scratch, name):
        ctx = Context(out=tmp_path / name, scratch=scratch, workdir=tmp_path, threads=1,
                      progress=Progress(disable=True))
        ctx.out.mkdir()
        LMEvalBenchmark(limit=3, max_gen_toks=12, greedy=True).evaluate(str(model_dir), ctx)
        [jsonl] = list((ctx.out / "lm_eval").rglob("samples_gym_heldout_*.jsonl"))
        return [json.loads(line)["resps"] for line in jsonl.read_text().splitlines()]

    first = responses(tiny_llama, tmp_path / "scratch", "first")
    assert list((tmp_path / "scratch").glob("lm-eval-requests*.db"))
    assert responses(other, tmp_path / "scratch", "rerun") == first  # all three from the cache
    assert responses(other, tmp_path / "fresh", "fresh") != first  # the other model, asked, answers otherwise


def test_questions_are_the_tasks_docs_as_lm_eval_renders_them(tmp_path):
    """questions() goes through lm-eval itself: a local data_files task, a hub preset given a local file, and a hub
    preset offline without one (one line naming it)."""
    from nt_harness.recipes import SpecError
    from nt_lmeval import reasoning

    rows = [json.loads(line) for line in (tasks_dir() / "gym_heldout" / "gym_heldout.jsonl").read_text().splitlines()]
    assert LMEvalBenchmark(tasks=["gym_heldout"]).questions() == {"gym_heldout": [r["question"] for r in rows]}

    math = tmp_path / "math500.jsonl"
    math.write_text("".join(json.dumps({"problem": p, "answer": a, "unique_id": str(i)}) + "\n"
                            for i, (p, a) in enumerate([("What is 1 + 1?", "2"), ("Solve x^2 = 4 for x > 0.", "2")])))
    bench = LMEvalBenchmark(tasks=["math500_reasoning"], local_data={"math500_reasoning": str(math)},
                            modes=["think", "no-think"], limit=1)
    # every row whatever the limit, each task once whatever the modes, in the preset's own prompt
    assert bench.questions() == {"math500_reasoning": [reasoning.math_prompt("What is 1 + 1?"),
                                                       reasoning.math_prompt("Solve x^2 = 4 for x > 0.")]}

    with pytest.raises(SpecError) as err:
        LMEvalBenchmark(tasks=["gpqa_diamond_reasoning"]).questions()  # conftest: offline; download False
    message = str(err.value)
    assert "'gpqa_diamond_reasoning'" in message and "offline and no local file" in message and "\n" not in message
