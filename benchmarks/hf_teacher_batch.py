"""Throughput of the `hf` teacher on SmolLM2-135M-Instruct by batch size, and against bare transformers
``generate`` at the best one; prints a table, then one JSON line of measured figures.

    python benchmarks/hf_teacher_batch.py --threads 2                       # batch 1..32, ~4 min on 2 quiet cores
    python benchmarks/hf_teacher_batch.py --batch-sizes 4,8,16 --max-new-tokens 128

Each batch size runs HFTeacher.generate on max(batch, 8) requests (full batches only), with the embedded
profile's sampling (T 0.7, top-p 0.95) and a fresh scratch folder, once per round (rounds interleave the
sizes; the fastest round of each is kept, since on a shared machine the slower ones measure neighbours). tok/s counts the
tokens the teacher really generated (each row up to its EOS) over its generation time (model load
excluded, as in the teacher's manifest stats). ``force_answer`` is off so each batch is exactly one
``generate`` call, and the bare anchor (transformers alone: tokenizer, left padding, ``model.generate``)
does the same work: the same prompts, the same sampling and per-batch seeds, hence the same tokens; its
time is the generate loop only (model load excluded on both sides).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from nt_harness.components import Context
from nt_harness.models import ModelResolver
from nt_harness.plugins import Plugins
from nt_harness.records import QUESTIONS, question_id
from nt_hf.generation import batch_seed
from nt_hf.teacher import HFTeacher


def arithmetic_questions(n: int) -> pa.Table:
    texts = [f"What is {i} * {i + 3} + {2 * i}? Give your final answer inside <answer></answer> tags." for i in range(n)]
    return pa.Table.from_pylist([dict(question_id=question_id("bench", t), source="bench", question=t, reference="",
                                      topic="arithmetic", metadata="{}") for t in texts], schema=QUESTIONS)


def run_teacher(model: str, batch: int, requests: int, args) -> dict:
    teacher = HFTeacher(model=model, n=1, batch_size=batch, max_new_tokens=args.max_new_tokens,
                        temperature=0.7, top_p=0.95, force_answer=None)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(out=Path(tmp) / "out", scratch=Path(tmp) / "scratch", workdir=Path(tmp), threads=args.threads,
                      resolve_model=lambda spec: spec)
        started = time.perf_counter()
        teacher.generate(arithmetic_questions(requests), ctx)
        wall = time.perf_counter() - started
    s = ctx.stats
    return {"batch": batch, "requests": requests, "tokens": s["generated_tokens"], "generate_s": s["generate_s"],
            "tok_s": round(s["generated_tokens"] / s["generate_s"], 1), "wall_s": round(wall, 1)}


def run_bare(model: str, batch: int, requests: int, args) -> tuple[int, float]:
    """The teacher's work with nothing around it: the same chat prompts, left-padded batches, one
    ``model.generate`` each with the same explicit GenerationConfig and the same per-batch seeds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    s = HFTeacher(model="-", n=1).settings
    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    eos = lm.generation_config.eos_token_id
    eos = sorted({*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id} - {None})
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=0.7, top_p=0.95,
                              top_k=0, repetition_penalty=1.0, num_beams=1, eos_token_id=eos,
                              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0])
    texts = [tok.apply_chat_template([{"role": "system", "content": s.system_prompt}, {"role": "user", "content": q}],
                                     add_generation_prompt=True, tokenize=False) + s.prefill
             for q in arithmetic_questions(requests).column("question").to_pylist()]
    started, tokens = time.perf_counter(), 0
    for i in range(0, requests, batch):
        enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(batch_seed(0, i // batch))
        with torch.inference_mode():
            out = lm.generate(**enc, generation_config=config)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += next((j for j, t in enumerate(row) if t in eos), len(row))
    return tokens, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a folder or a model alias (built under --workdir)")
    parser.add_argument("--workdir", default=".nt-harness", help="where model aliases are built")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--table-rounds", type=int, default=2, help="runs of every batch size (best one kept)")
    parser.add_argument("--rounds", type=int, default=2, help="paired harness/bare rounds at the best batch size")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = ModelResolver(Plugins().models, Path(args.workdir) / "models").resolve(args.model)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    runs: dict[int, list[dict]] = {b: [] for b in sizes}
    for r in range(args.table_rounds):  # every size once per round, the order reversed every other round
        for batch in sizes if r % 2 == 0 else sizes[::-1]:
            runs[batch].append(run_teacher(model, batch, max(batch, 8), args))
            x = runs[batch][-1]
            print(f"round {r}  batch {batch:>3}  requests {x['requests']:>3}  tokens {x['tokens']:>5}  "
                  f"generate {x['generate_s']:>6.1f} s  {x['tok_s']:>6.1f} tok/s", flush=True)
    # the fastest round of each size: on a shared machine the slower ones measure the neighbours
    table = [max(runs[b], key=lambda x: x["tok_s"]) for b in sizes]
    print(f"{'batch':>5} {'requests':>8} {'tokens':>6} {'tok/s (best of ' + str(args.table_rounds) + ')':>20}")
    for x in table:
        print(f"{x['batch']:>5} {x['requests']:>8} {x['tokens']:>6} {x['tok_s']:>20.1f}")
    best = max(table, key=lambda x: x["tok_s"])
    print(f"best batch size: {best['batch']} ({best['tok_s']} tok/s)", flush=True)

    # the anchor: bare generate at the best batch size, paired rounds in alternating order
    figures = {"harness": [], "bare": []}
    for r in range(args.rounds):
        order = ["harness", "bare"] if r % 2 == 0 else ["bare", "harness"]
        for name in order:
            if name == "harness":
                t = run_teacher(model, best["batch"], best["requests"], args)
                figures["harness"].append((t["tokens"], t["generate_s"]))
            else:
                figures["bare"].append(run_bare(model, best["batch"], best["requests"], args))
    rate = {k: sum(t for t, _ in v) / sum(s for _, s in v) for k, v in figures.items()}
    print(json.dumps({
        "threads": args.threads, "max_new_tokens": args.max_new_tokens,
        "table": [{k: x[k] for k in ("batch", "requests", "tokens", "tok_s")} for x in table],
        "all_runs_tok_s": {b: [x["tok_s"] for x in v] for b, v in runs.items()},
        "best_batch": best["batch"], "best_tok_s": best["tok_s"],
        "anchor": {"batch": best["batch"], "requests": best["requests"], "rounds": args.rounds,
                   "harness_tok_s": round(rate["harness"], 1), "bare_tok_s": round(rate["bare"], 1),
                   "ratio": round(rate["harness"] / rate["bare"], 3),
                   "same_token_counts": all(a == b for (a, _), (b, _) in zip(figures["harness"], figures["bare"]))},
    }))


if __name__ == "__main__":
    main()
