"""Annotators that need no generation: token lengths and verifier correctness."""

from __future__ import annotations

import pyarrow as pa

from nt_harness.components import Annotator, Settings


class LengthAnnotator(Annotator):
    name = "length"
    description = "thinking and answer length in tokens of a given tokenizer"
    columns = ("thinking_tokens", "answer_tokens")

    class Settings(Settings):
        tokenizer: str = "smollm2"  # a model spec; its tokenizer counts the tokens

    def annotate(self, pool, ctx):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ctx.resolve_model(self.settings.tokenizer))
        out = {"trace_id": pool.column("trace_id")}
        for field in ("thinking", "answer"):
            texts = pool.column(field).to_pylist()
            ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
            out[f"{field}_tokens"] = pa.array([len(i) for i in ids], pa.int32())
        return pa.table(out)


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
