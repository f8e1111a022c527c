"""The `hf` teacher: n sampled reasoning traces per question from a local transformers model.

Questions are ordered by prompt length (less padding) and cut into fixed batches of whole questions, their n
samples together so they share the prompt's prefill; each batch is seeded from (seed, batch index) and saved
as a shard in ctx.scratch, so a killed run resumes where it stopped and ends with exactly the table an
uninterrupted run would have written (rows in question order).

Each trace also records ``reasoning_tokens``: how many of the tokens the model generated came before the end of
its thinking, counted on the generated ids (records.py: the optional column; the `length` annotator prefers it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from nt_harness.components import Context, Settings, Teacher
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, TRACES, trace_id
from nt_hf.generation import ChatModel, Completion, Sampling, batch_seed, chat_prompt, load_tokenizer
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
# TRACES plus the teacher's own count of the thinking's tokens
HF_TRACES = pa.schema(list(TRACES) + [("reasoning_tokens", pa.int32())])


def thinking_token_count(decode, token_ids: list[int], prefix: str, think_start: str, think_end: str) -> int:
    """How many of the generated ``token_ids`` (continuing ``prefix``, the prefill) come before the end of the
    thinking, read as split_trace reads the text: all of them when think_end never follows think_start, none when
    neither tag is there (all answer). Counted on the ids, not by re-tokenizing the text: re-tokenizing need not
    give the ids the model wrote. ``decode`` turns ids into text; a binary search over prefixes finds the last
    token that ends before think_end starts."""
    text = prefix + decode(token_ids)
    start = text.find(think_start)
    end = text.find(think_end, start + len(think_start) if start >= 0 else 0)
    if end < 0:
        return len(token_ids) if start >= 0 else 0
    chars = end - len(prefix)  # think_end's offset in the generated text; < 0: the prefill closed the thinking
    lo, hi = 0, len(token_ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(decode(token_ids[:mid])) <= chars:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class Samples:
    """A batch's samples, prompt by prompt: the first completion, the final one (the forced answer's where one
    was forced, else the first), the text (prefill, thinking, any forced answer), whether the thinking ended."""

    first: list[Completion]
    finals: list[Completion]
    texts: list[str]
    ended: list[bool]
    forced: list[int]  # the samples continued with force_answer


class HFTeacher(Teacher):
    name = "hf"
    version = "2"  # 2: reasoning_tokens
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
        budget_forcing: bool = Field(
            False, description="also force the answer when the thinking hits max_new_tokens (s1's budget forcing, "
                               "arXiv 2501.19393 §3.1), so every sample answers; else such a sample is incomplete",
        )
        stop: list[str] = Field(["</answer>"], description="a sample ends right after any of these (kept in it)")
        # tags: the answer is what follows the thinking; source: the whole response is the thinking and its answer
        # is the source's reading of the response's final answer (Source.final_answers), inside answer_tags, for a
        # model too small to write tags reliably
        answer_from: Literal["tags", "source"] = "tags"
        answer_tags: tuple[str, str] = ("<answer>", "</answer>")
        dtype: str = Field(
            "auto", pattern="^(auto|float32|bfloat16|float16)$",
            description="auto: bf16 on a CPU that computes it natively, else fp32; the checkpoint's dtype on GPU",
        )

    def generate(self, questions: pa.Table, ctx: Context) -> pa.Table:
        s = self.settings
        qrows = questions.select(QUESTIONS.names).to_pylist()
        tokenizer = load_tokenizer(ctx.resolve_model(s.model))
        prompts = [chat_prompt(tokenizer, q["question"], s.system_prompt, s.prefill) for q in qrows]
        per_batch = max(1, s.batch_size // s.n)  # whole questions: their samples share the prefill
        order = sorted(range(len(qrows)), key=lambda q: (len(prompts[q]), q))
        groups = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
        ids = [[trace_id(qrows[q]["question_id"], k) for q in group for k in range(s.n)] for group in groups]
        model: ChatModel | None = None  # loaded only when a batch has to run (a fully resumed run needs none)
        done = {"tokens": 0, "seconds": 0.0}

        def run_batch(i: int) -> pa.Table:
            nonlocal model
            if model is None:
                model = ChatModel(ctx.resolve_model(s.model), threads=ctx.threads, dtype=s.dtype)
            started = time.perf_counter()
            rows_q = [q for q in groups[i] for _ in range(s.n)]
            samples = self._sample(model, [prompts[q] for q in groups[i]], batch_seed(s.seed, i))
            rows = self._rows(samples, model, [qrows[q] for q in rows_q], ids[i], [len(prompts[q]) for q in rows_q],
                              questions.take(rows_q), ctx)
            done["tokens"] += sum(r["completion_tokens"] for r in rows)
            done["seconds"] += time.perf_counter() - started
            advance(0, info=f"{done['tokens'] / max(done['seconds'], 1e-9):.0f} tok/s")
            return pa.Table.from_pylist(rows, schema=HF_TRACES)

        progress = ctx.progress or Progress(disable=True)
        with progress.task(f"teacher hf ({s.model})", total=len(qrows) * s.n) as advance:
            table, reused = run_sharded(ids, ctx.scratch, run_batch, HF_TRACES, advance)
        position = {trace_id(q["question_id"], k): i * s.n + k for i, q in enumerate(qrows) for k in range(s.n)}
        table = table.take(np.argsort([position[t] for t in table.column("trace_id").to_pylist()], kind="stable"))
        ctx.stats.update(
            batches=len(groups), batches_resumed=reused, generated_tokens=done["tokens"],
            generate_s=round(done["seconds"], 1),
            tokens_per_s=round(done["tokens"] / done["seconds"], 1) if done["seconds"] else None,
        )
        return table

    def _sample(self, model: ChatModel, prompts: list[list[int]], seed: int) -> Samples:
        """Each prompt's n samples. With ``force_answer``, a sample whose thinking did not close is continued
        with it, so a small model that stops (or runs out of tokens) mid-thought still answers."""
        s = self.settings
        sampling, stop = Sampling(s.temperature, s.top_p, s.top_k), tuple(s.stop)
        first = model.complete(prompts, s.max_new_tokens, sampling, seed, s.n, stop)
        texts = [s.prefill + model.decode(c.token_ids) for c in first]
        # thinking ended on its own (think_end written, or EOS), not cut off by max_new_tokens
        ended = [c.stopped or s.think_end in t for c, t in zip(first, texts)]
        finals = list(first)
        forced: list[int] = []
        if s.force_answer is not None:
            # ended without closing its thinking and without having answered (a stop string)
            forced = [j for j, c in enumerate(first) if s.think_end not in texts[j] and not c.at_stop_string
                      and (c.stopped or s.budget_forcing)]
            suffix = model.encode(s.force_answer)
            answers = model.complete(
                [prompts[j // s.n] + first[j].token_ids + suffix for j in forced],
                s.answer_max_tokens, sampling, seed + 1, stop=stop,
            )
            for j, c in zip(forced, answers):
                texts[j] += s.force_answer + model.decode(c.token_ids)
                finals[j] = c
                ended[j] = True
        return Samples(first, finals, texts, ended, forced)

    def _rows(self, samples: Samples, model: ChatModel, qrows: list[dict], ids: list[str], prompt_tokens: list[int],
              asked: pa.Table, ctx: Context) -> list[dict]:
        """One trace per sample; ``qrows``, ``ids``, ``prompt_tokens`` and ``asked`` (the questions' rows) are
        per sample too."""
        s = self.settings
        first, finals, texts, ended = samples.first, samples.finals, samples.texts, samples.ended
        if s.answer_from == "source":
            read = ctx.source.final_answers(asked, texts) if ctx.source else [None] * len(texts)
            opened, closed = s.answer_tags
            split = [(t.strip(), "" if a is None else f"{opened}{a}{closed}") for t, a in zip(texts, read)]
            ended = [e and a is not None for e, a in zip(ended, read)]  # no answer: incomplete
        else:
            split = [split_trace(t, s.think_start, s.think_end)[:2] for t in texts]
        rows = []
        for j, question in enumerate(qrows):
            thinking, answer = split[j]
            generated = len(first[j].token_ids) + (len(finals[j].token_ids) if finals[j] is not first[j] else 0)
            if s.answer_from == "source":  # the whole response is the thinking
                reasoning = generated
            elif j in samples.forced:  # ended without think_end: all it wrote before the forced answer is thinking
                reasoning = len(first[j].token_ids)
            else:
                reasoning = thinking_token_count(model.decode, first[j].token_ids, s.prefill, s.think_start,
                                                 s.think_end)
            rows.append({
                **question,
                "trace_id": ids[j],
                "teacher": s.model,
                "sample": j % s.n,
                "thinking": thinking,
                "answer": answer,
                "complete": ended[j],
                "finish_reason": "stop" if finals[j].stopped else "length",
                "prompt_tokens": prompt_tokens[j],
                "completion_tokens": generated,
                "reasoning_tokens": reasoning,
            })
        return rows
