"""Annotators that need no generation: token lengths and verifier correctness."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from nt_harness.components import Annotator, Settings


class LengthAnnotator(Annotator):
    """Token lengths of the thinking and the answer.

    count "teacher": where the pool has the teacher's own ``reasoning_tokens`` (records.py), thinking_tokens is
    that and answer_tokens the rest of its completion_tokens. The `long` selector's p = (l/5000)^2.5 is stated in
    the teacher's tokens, and another tokenizer's count 10 % off moves p by 27 %. Rows without a teacher count,
    and every row under count "tokenizer", are counted with ``tokenizer``; ``counted_by`` in the stats says how
    many rows came from each.
    """

    name = "length"
    version = "2"  # 2: the teacher's own counts first
    description = "thinking and answer length in the teacher's tokens where the pool has them, else a tokenizer's"
    columns = ("thinking_tokens", "answer_tokens")

    class Settings(Settings):
        tokenizer: str = "smollm2"  # a model spec; its tokenizer counts the tokens
        count: Literal["teacher", "tokenizer"] = "teacher"

    def annotate(self, pool, ctx):
        n = pool.num_rows
        thinking, answer = [0] * n, [0] * n
        teacher = [None] * n
        if self.settings.count == "teacher" and "reasoning_tokens" in pool.column_names:
            teacher = pool.column("reasoning_tokens").to_pylist()
            completion = pool.column("completion_tokens").to_pylist()
            for i, r in enumerate(teacher):
                if r is not None:
                    thinking[i], answer[i] = r, max(completion[i] - r, 0)
        rest = [i for i, r in enumerate(teacher) if r is None]
        if rest:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(ctx.resolve_model(self.settings.tokenizer))
            for field, out in (("thinking", thinking), ("answer", answer)):
                texts = pool.column(field).take(rest).to_pylist()
                for i, ids in zip(rest, tok(texts, add_special_tokens=False)["input_ids"]):
                    out[i] = len(ids)
        by_teacher, tokenizer = n - len(rest), self.settings.tokenizer
        ctx.stats["counted_by"] = {"teacher": by_teacher, f"tokenizer {tokenizer}": len(rest)}
        # one line for the run's pool_summary (pipeline.py), beside e.g. verify's share of correct traces
        if not rest:
            ctx.stats["summary"] = "lengths in teacher tokens"
        elif not by_teacher:
            ctx.stats["summary"] = f"lengths in {tokenizer} tokens"
        else:
            ctx.stats["summary"] = f"lengths in teacher tokens ({by_teacher}), else {tokenizer} tokens ({len(rest)})"
        return pa.table({"trace_id": pool.column("trace_id"), "thinking_tokens": pa.array(thinking, pa.int32()),
                         "answer_tokens": pa.array(answer, pa.int32())})


class VerifyAnnotator(Annotator):
    name = "verify"
    description = "is the teacher's final answer correct? (the source's verifier; null when it has none)"
    columns = ("correct",)

    def annotate(self, pool, ctx):
        if ctx.source is None:
            raise RuntimeError("annotator 'verify' needs the pipeline's source for its verifier")
        scores = ctx.source.score(pool, pool.column("answer").to_pylist())
        verified = ctx.stats["verified"] = sum(s is not None for s in scores)
        correct = ctx.stats["correct"] = sum(1 for s in scores if s is not None and s >= 1.0)
        if verified:
            ctx.stats["summary"] = f"{correct / verified:.0%} of {verified} traces fully correct"
        return pa.table({"trace_id": pool.column("trace_id"), "correct": pa.array(scores, pa.float64())})
