"""Solver annotators: how often a solver model answers each question correctly in k attempts.

LIMO's difficulty filter (arXiv 2502.03387 §3.1) drops problems a first solver (Qwen2.5-Math-7B-Instruct)
solves within a few attempts, then keeps problems a stronger solver (DeepSeek-R1-Distill-Qwen-32B) solves
only 1-3 times out of 32; s1K (arXiv 2501.19393 §2.2) drops a question when either of two solvers
(Qwen2.5-7B/32B-Instruct, one attempt each) answers it correctly. The attempts are sampled by running
the `hf` teacher on the questions (same prompt, forced answer tag, sharded and resumable in
``ctx.scratch``) and graded by the source's verifier; ``solverN_passes`` is null where there is none.

At the papers' scale (a 32B solver, 32 attempts per question) the local `hf` teacher is too slow: ``backend``
names any registered teacher instead (``{name = "vllm", tensor_parallel_size = 4}``, or ``openai`` at a
server), which gets the solver's ``model`` unless it names its own, and ``attempts``, ``temperature``, ``seed``
and the token budget wherever it has those settings.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from nt_harness.components import Annotator, Context, Settings
from nt_harness.records import QUESTIONS
from nt_hf.teacher import HFTeacher


class SolverAnnotator(Annotator):
    version = "1"
    slot = ""

    class Settings(Settings):
        model: str = "smollm2"
        attempts: int = Field(4, ge=1)
        temperature: float = Field(0.7, ge=0)
        max_new_tokens: int = Field(128, ge=1)
        batch_size: int = Field(8, ge=1)
        seed: int = 0
        generation: dict = Field(default_factory=dict, description="any other `hf` teacher setting")
        backend: dict | None = Field(
            None, description="a teacher spec that samples the attempts instead of the local hf model (vllm, "
                              "openai); its model defaults to `model`, `generation` is not used")

    def nested(self):
        return {"backend": ("teacher", self.backend_spec())} if self.settings.backend else {}

    def backend_spec(self) -> dict:
        return {"model": self.settings.model, **self.settings.backend}

    def attempts_teacher(self, ctx: Context):
        """The teacher that samples the attempts: the local hf model, or ``backend`` with the solver's sampling."""
        s = self.settings
        if not s.backend:
            return HFTeacher(model=s.model, n=s.attempts, temperature=s.temperature,
                             max_new_tokens=s.max_new_tokens, batch_size=s.batch_size, seed=s.seed, **s.generation)
        teacher = ctx.build("teacher", self.backend_spec(), f"annotator {self.name}: backend")
        fields = type(teacher.settings).model_fields
        update = {"n": s.attempts, "temperature": s.temperature, "seed": s.seed,
                  "max_new_tokens": s.max_new_tokens, "max_tokens": s.max_new_tokens}
        return type(teacher)(teacher.settings.model_copy(update={k: v for k, v in update.items() if k in fields}))

    def annotate(self, pool: pa.Table, ctx: Context) -> pa.Table:
        s = self.settings
        first_row: dict[str, int] = {}
        for i, qid in enumerate(pool.column("question_id").to_pylist()):
            first_row.setdefault(qid, i)
        questions = pool.take(list(first_row.values())).select(QUESTIONS.names)
        attempts = self.attempts_teacher(ctx).generate(questions, ctx)
        scores = ctx.source.score(attempts, attempts.column("answer").to_pylist()) if ctx.source else []
        passes: dict[str, int | None] = {q: None for q in first_row}
        for qid, score in zip(attempts.column("question_id").to_pylist(), scores):
            if score is not None:
                passes[qid] = (passes[qid] or 0) + (score >= 1.0)
        per_trace = [passes[q] for q in pool.column("question_id").to_pylist()]
        graded = [p for p in passes.values() if p is not None]
        ctx.stats.update(questions=len(passes), solved=sum(p > 0 for p in graded), ungraded=len(passes) - len(graded))
        return pa.table({
            "trace_id": pool.column("trace_id"),
            f"{self.slot}_passes": pa.array(per_trace, pa.int32()),
            f"{self.slot}_attempts": pa.array([s.attempts] * pool.num_rows, pa.int32()),
        })


class Solver1Annotator(SolverAnnotator):
    name = "solver1"
    slot = "solver1"
    description = "first (weaker) solver: correct answers in k attempts per question (LIMO stage 1, s1K)"
    columns = ("solver1_passes", "solver1_attempts")

    class Settings(SolverAnnotator.Settings):
        attempts: int = Field(4, ge=1)  # LIMO §3.1: solved "within 4 attempts" is too easy


class Solver2Annotator(SolverAnnotator):
    name = "solver2"
    slot = "solver2"
    description = "second (stronger) solver: correct answers in k attempts per question (LIMO stage 2, s1K)"
    columns = ("solver2_passes", "solver2_attempts")

    class Settings(SolverAnnotator.Settings):
        attempts: int = Field(32, ge=1)  # LIMO §3.1: keep problems solved 1-3 times out of 32
