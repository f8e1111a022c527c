"""The `system1` annotator: the student's direct answer to each question, without thinking, and whether
the source's verifier accepts it: a measure of how hard a question is without reasoning, which difficulty-based
selectors read (NaturalThoughts' `disagree`, s1K's `s1k`)."""

from __future__ import annotations

import json
import time
from typing import Literal

import pyarrow as pa
from pydantic import Field

from nt_harness.asking import ask
from nt_harness.components import Annotator, Context, Settings
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, first_rows
from nt_hf.generation import ChatModel, Sampling
from nt_harness.shards import run_sharded

ANSWER_DIRECTLY = (
    "Answer immediately, without explaining or showing any working. "
    "Reply with the final answer only, in the format the question asks for."
)

SCHEMA = pa.schema([("trace_id", pa.string()), ("question_id", pa.string()), ("system1_answer", pa.string())])


class System1Annotator(Annotator):
    name = "system1"
    version = "2"
    description = ("a direct (no-thinking) answer per question: the source's recorded one where it has one, else "
                   "the model's greedy one; graded by the source")
    columns = ("system1_answer", "system1_correct")

    class Settings(Settings):
        model: str = "smollm2"
        system_prompt: str | None = ANSWER_DIRECTLY
        prefill: str = Field("", description='text the answer starts with, e.g. "<answer>"; kept in system1_answer')
        max_new_tokens: int = Field(48, ge=1)
        stop: list[str] = Field(["</answer>"], description="the answer ends right after any of these")
        # tags: the reply as written; source: the source's reading of the reply's final answer in <answer> tags
        # (Source.final_answers), for a model too small to write tags reliably (as the hf teacher's answer_from)
        answer_from: Literal["tags", "source"] = "tags"
        batch_size: int = Field(8, ge=1)
        dtype: str = Field(
            "auto", pattern="^(auto|float32|bfloat16|float16)$",
            description="auto: bf16 on a CPU that computes it natively, else fp32; the checkpoint's dtype on GPU",
        )
        # a teacher spec that answers instead of the local model (e.g. Llama-3.3-70B-Instruct behind an
        # OpenAI-compatible server, as the paper's System-1 model); the instruction goes in the user turn
        backend: dict | None = None
        # a System-1 answer the source ships in a question's metadata (`system1_answer`: NaturalReasoning's
        # Llama-3.3-70B-Instruct response, the one the paper compared R1 with, §4.2) is taken as is; only the
        # questions without one are answered by the model
        recorded: bool = True

    def nested(self):
        return {"backend": ("teacher", self.settings.backend)} if self.settings.backend else {}

    def annotate(self, pool: pa.Table, ctx: Context) -> pa.Table:
        qids, rows = first_rows(pool)
        questions = pool.take(rows).select(QUESTIONS.names)
        answers = recorded_answers(qids, questions) if self.settings.recorded else {}
        ctx.stats["recorded"] = len(answers)
        todo = [i for i, q in enumerate(qids) if q not in answers]
        if todo:
            asked = questions.take(todo)
            answers.update(zip(asked.column("question_id").to_pylist(), self.answer(asked, ctx)))
        return self.graded(pool, questions, qids, [answers[q] for q in qids], ctx)

    def answer(self, questions: pa.Table, ctx: Context) -> list[str]:
        """The model's direct answers to ``questions``, in order."""
        s = self.settings
        qids, texts = questions.column("question_id").to_pylist(), questions.column("question").to_pylist()
        if s.backend:
            prompts = [f"{s.system_prompt}\n\n{t}" if s.system_prompt else t for t in texts]
            answers, stats = ask(ctx, s.backend, qids, prompts, lambda reply: reply.strip(), s.max_new_tokens)
            ctx.stats.update(stats)
            return [a or "" for a in answers]
        # shards are keyed by question id here (the run_sharded contract calls them trace ids)
        batches = [qids[i:i + s.batch_size] for i in range(0, len(qids), s.batch_size)]
        model: ChatModel | None = None
        done = {"tokens": 0, "seconds": 0.0}

        def run_batch(b: int) -> pa.Table:
            nonlocal model
            if model is None:
                model = ChatModel(ctx.resolve_model(s.model), threads=ctx.threads, dtype=s.dtype)
            started = time.perf_counter()
            start = b * s.batch_size
            prompts = [model.chat_prompt(t, s.system_prompt, s.prefill) for t in texts[start:start + s.batch_size]]
            outs = model.complete(prompts, s.max_new_tokens, Sampling(temperature=0.0), seed=0, stop=tuple(s.stop))
            done["tokens"] += sum(len(c.token_ids) for c in outs)
            done["seconds"] += time.perf_counter() - started
            advance(0, info=f"{done['tokens'] / max(done['seconds'], 1e-9):.0f} tok/s")
            answers = [(s.prefill + model.decode(c.token_ids)).strip() for c in outs]
            if s.answer_from == "source" and ctx.source is not None:
                read = ctx.source.final_answers(questions.slice(start, len(answers)), answers)
                answers = ["" if a is None else f"<answer>{a}</answer>" for a in read]
            return pa.table({"trace_id": batches[b], "question_id": batches[b], "system1_answer": answers})

        progress = ctx.progress or Progress(disable=True)
        with progress.task(f"system1 ({s.model})", total=len(qids)) as advance:
            answered, _ = run_sharded(batches, ctx.scratch, run_batch, SCHEMA, advance)
        ctx.stats["generated_tokens"] = done["tokens"]
        return answered.column("system1_answer").to_pylist()

    @staticmethod
    def graded(pool, questions, qids, answers, ctx) -> pa.Table:
        scores = ctx.source.score(questions, answers) if ctx.source is not None else [None] * len(answers)
        by_question = {q: (a, c) for q, a, c in zip(qids, answers, scores)}
        per_trace = [by_question[q] for q in pool.column("question_id").to_pylist()]
        ctx.stats.update(questions=len(qids), system1_correct=sum(c for c in scores if c is not None))
        return pa.table(
            {
                "trace_id": pool.column("trace_id"),
                "system1_answer": pa.array([a for a, _ in per_trace], pa.string()),
                "system1_correct": pa.array([None if c is None else float(c) for _, c in per_trace], pa.float64()),
            }
        )


def recorded_answers(qids: list[str], questions: pa.Table) -> dict[str, str]:
    """{question id: System-1 answer} for the questions whose metadata carries one."""
    out = {}
    for qid, meta in zip(qids, questions.column("metadata").to_pylist()):
        try:
            answer = json.loads(meta or "{}").get("system1_answer")
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"system1: question {qid}: metadata is not a JSON object") from None
        if answer is not None:
            out[qid] = answer
    return out
