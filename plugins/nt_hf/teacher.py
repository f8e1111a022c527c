"""The `hf` teacher: n sampled reasoning traces per question from a local transformers model.

Requests (question, sample) are ordered question by question and cut into fixed batches; each batch is
seeded from (seed, batch index) and saved as a shard in ctx.scratch, so a killed run resumes where it
stopped and ends with exactly the table an uninterrupted run would have written.
"""

from __future__ import annotations

import time

import pyarrow as pa
from pydantic import Field

from nt_harness.components import Context, Settings, Teacher
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, TRACES, trace_id
from nt_hf.generation import ChatModel, Sampling, batch_seed
from nt_harness.shards import run_sharded
from nt_harness.traces import split_trace

# Chosen on SmolLM2-135M-Instruct over reasoning-gym chain_sum, letter_counting and aiw (8 questions x 2
# samples each; see the nt_hf report): a worked example in the prompt raised the share of closed
# <answer> tags but the model copied the example into its thinking, so there is none.
THINK_STEP_BY_STEP = (
    "You are a careful problem solver. First think step by step inside <think></think> tags. "
    "After </think>, write the final answer inside <answer></answer> tags and nothing else."
)
# SmolLM2-135M mostly ends its reply (EOS) inside the thinking; forcing the end of thinking plus the
# opening tag the question asks for gives an <answer> in ~80 % of samples, against ~25 % when only
# "\n</think>\n" is forced. For sources with another answer format set force_answer accordingly.
FORCE_ANSWER_TAG = "\n</think>\n<answer>"


class HFTeacher(Teacher):
    name = "hf"
    version = "1"
    description = "reasoning traces from a local transformers model (CPU or GPU), batched and resumable"

    class Settings(Settings):
        model: str = "smollm2"
        n: int = Field(1, ge=1, description="samples per question")
        temperature: float = Field(0.7, ge=0, description="0 = greedy")
        top_p: float = Field(0.95, gt=0, le=1)
        top_k: int = Field(0, ge=0, description="0 = no top-k cut")
        max_new_tokens: int = Field(256, ge=1, description="thinking + answer budget")
        seed: int = 0
        batch_size: int = Field(8, ge=1)
        system_prompt: str | None = THINK_STEP_BY_STEP
        prefill: str = Field("<think>\n", description="text the assistant turn starts with")
        think_start: str = "<think>"
        think_end: str = "</think>"
        force_answer: str | None = Field(
            FORCE_ANSWER_TAG,
            description="appended when a sample ended (EOS) without think_end; the answer is then generated",
        )
        answer_max_tokens: int = Field(64, ge=1, description="new tokens for the forced answer")
        dtype: str = Field(
            "auto", pattern="^(auto|float32|bfloat16|float16)$",
            description="auto: fp32 on CPU, the checkpoint's dtype on GPU",
        )

    def generate(self, questions: pa.Table, ctx: Context) -> pa.Table:
        s = self.settings
        qrows = questions.select(QUESTIONS.names).to_pylist()
        requests = [(q, k) for q in range(len(qrows)) for k in range(s.n)]
        batches = [requests[i:i + s.batch_size] for i in range(0, len(requests), s.batch_size)]
        ids = [[trace_id(qrows[q]["question_id"], k) for q, k in batch] for batch in batches]
        sampling = Sampling(s.temperature, s.top_p, s.top_k)
        model: ChatModel | None = None  # loaded only when a batch has to run (a fully resumed run needs none)
        prompts: dict[int, list[int]] = {}
        done = {"tokens": 0, "seconds": 0.0}

        def run_batch(i: int) -> pa.Table:
            nonlocal model
            if model is None:
                model = ChatModel(ctx.resolve_model(s.model), threads=ctx.threads, dtype=s.dtype)
            started = time.perf_counter()
            batch = batches[i]
            for q, _ in batch:
                if q not in prompts:
                    prompts[q] = model.chat_prompt(qrows[q]["question"], s.system_prompt, s.prefill)
            seed = batch_seed(s.seed, i)
            first = model.complete([prompts[q] for q, _ in batch], s.max_new_tokens, sampling, seed)
            texts = [s.prefill + model.decode(c.token_ids) for c in first]
            # `complete`: thinking ended on its own (think_end written, or EOS), not cut off by max_new_tokens
            ended = [c.stopped or s.think_end in t for c, t in zip(first, texts)]
            finals = list(first)
            if s.force_answer is not None:
                forced = [j for j, c in enumerate(first) if c.stopped and s.think_end not in texts[j]]
                suffix = model.encode(s.force_answer)
                answers = model.complete(
                    [prompts[batch[j][0]] + first[j].token_ids + suffix for j in forced],
                    s.answer_max_tokens, sampling, seed + 1,
                )
                for j, c in zip(forced, answers):
                    texts[j] += s.force_answer + model.decode(c.token_ids)
                    finals[j] = c
            rows = []
            for j, (q, k) in enumerate(batch):
                thinking, answer, _ = split_trace(texts[j], s.think_start, s.think_end)
                generated = len(first[j].token_ids) + (len(finals[j].token_ids) if finals[j] is not first[j] else 0)
                rows.append({
                    **qrows[q],
                    "trace_id": ids[i][j],
                    "teacher": s.model,
                    "sample": k,
                    "thinking": thinking,
                    "answer": answer,
                    "complete": ended[j],
                    "finish_reason": "stop" if finals[j].stopped else "length",
                    "prompt_tokens": len(prompts[q]),
                    "completion_tokens": generated,
                })
                done["tokens"] += generated
            done["seconds"] += time.perf_counter() - started
            advance(0, info=f"{done['tokens'] / max(done['seconds'], 1e-9):.0f} tok/s")
            return pa.Table.from_pylist(rows, schema=TRACES)

        progress = ctx.progress or Progress(disable=True)
        with progress.task(f"teacher hf ({s.model})", total=len(requests)) as advance:
            table, reused = run_sharded(ids, ctx.scratch, run_batch, TRACES, advance)
        ctx.stats.update(
            batches=len(batches), batches_resumed=reused, generated_tokens=done["tokens"],
            generate_s=round(done["seconds"], 1),
            tokens_per_s=round(done["tokens"] / done["seconds"], 1) if done["seconds"] else None,
        )
        return table
