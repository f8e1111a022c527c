"""LLM-prompted annotators (NaturalThoughts, arXiv 2507.01921 §3.2): topic, reasoning strategies, verbosity,
and the judge of whether two final answers agree.

Each one asks any registered teacher (the ``backend`` setting: the local `hf` model by default, an
OpenAI-compatible server or vLLM at paper scale, where the paper used Llama-3.1-70B-Instruct to annotate
and Llama-3.1-8B-Instruct to judge) one prompt per question or trace, so it inherits that teacher's
batching, concurrency, retries and resumable shards. Replies are parsed leniently; an unparseable reply
is asked again (a fresh seed, sampling) at most ``retries`` times, then recorded as null and counted.
Prompts are versioned: the ``prompt`` setting names a version (part of every cache key); a changed
prompt gets a new version, never an edit in place.

The strategy taxonomy (``STRATEGIES``) follows the meta-reasoning behaviours the paper annotates
(self-verification, backtracking, exploration, ...) and the cognitive behaviours of Gandhi et al. 2025
(arXiv 2503.01307: verification, backtracking, subgoal setting, backward chaining), one line each.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from nt_harness.components import Annotator, Context, Settings
from nt_harness.asking import ask
from nt_harness.records import first_rows

# The 13 top-level domains NaturalThoughts reports its topic annotation over (§3.2, Figure 2).
PAPER_DOMAINS = ("Engineering", "Philosophy", "Medicine", "Economics", "Science", "Law", "History", "Education",
                 "Management", "Literature and Arts", "Agronomy", "Sociology", "Military Science")

STRATEGIES = {
    "self-verification": "checks an intermediate or final result (substituting back, re-computing, testing)",
    "backtracking": "notices an error or dead end and returns to an earlier point to try again",
    "exploring alternatives": "considers more than one approach or interpretation before committing",
    "subgoal decomposition": "breaks the problem into smaller parts solved in turn",
    "working backwards": "reasons from the goal or the required answer towards the givens",
    "case analysis": "splits into exhaustive cases and treats each one",
    "analogy": "relates the problem to a known, similar problem or a standard result",
    "estimation": "estimates, bounds or sanity-checks the magnitude or plausibility of an answer",
    "restating": "restates or reformulates the question to clarify what is asked",
    "abstraction": "generalises from examples or finds the pattern or rule behind them",
    "elimination": "rules out options or candidates one by one",
    "summarizing": "summarises progress so far before continuing",
}

# Names people (and models) write for the same strategy: matched as whole words, case-insensitive.
ALIASES = {
    "verification": "self-verification", "verify": "self-verification", "double-check": "self-verification",
    "backtrack": "backtracking", "exploration": "exploring alternatives", "alternatives": "exploring alternatives",
    "decomposition": "subgoal decomposition", "subgoal": "subgoal decomposition", "subgoals": "subgoal decomposition",
    "backward chaining": "working backwards", "working backward": "working backwards", "cases": "case analysis",
    "sanity check": "estimation", "restatement": "restating", "rephrasing": "restating",
    "generalization": "abstraction", "pattern": "abstraction", "process of elimination": "elimination",
    "summary": "summarizing", "summarising": "summarizing",
}

# The text to annotate comes first and the instruction last: small models follow the last instruction
# (SmolLM2-135M answered the question itself when the instruction came first).
PROMPTS = {
    "topic": {"v1": (
        "Question:\n{question}\n\nDo not answer the question. Classify it into exactly one of these domains: "
        "{labels}.\nReply with the domain name only."
    )},
    "strategies": {"v1": (
        "Question:\n{question}\n\nA model's reasoning about it:\n{thinking}\n\nWhich of these reasoning "
        "strategies does the reasoning use?\n{taxonomy}\n\nReply with the names of the strategies it uses, "
        "separated by commas, or \"none\"."
    )},
    "verbosity": {"v1": (
        "Question:\n{question}\n\nA model's reasoning about it:\n{thinking}\n\nRate how verbose the reasoning "
        "is, from 0 to 10: 0 means every step is needed and stated once; 10 means it is full of repetition, "
        "restatements, needless re-checks and digressions. Reply with the number only."
    )},
    "judge": {"v1": (
        "Question:\n{question}\n\nAnswer A:\n{answer}\n\nAnswer B:\n{other}\n\nAre answers A and B "
        "equivalent (the same final answer, possibly written differently)? Reply \"yes\" or \"no\" only."
    )},
}

# A local model, greedy, no thinking and no system prompt: the embedded default. At paper scale point
# `backend` at a server, e.g. {name = "openai", model = "meta-llama/Llama-3.1-70B-Instruct", ...}.
LOCAL_BACKEND = {"name": "hf", "model": "smollm2", "system_prompt": None, "prefill": "", "force_answer": None,
                 "temperature": 0.0, "batch_size": 8}


def clip(text: str, max_chars: int) -> tuple[str, bool]:
    """Head and tail of a long text with a marker between: the end of a trace is where it concludes."""
    if len(text) <= max_chars:
        return text, False
    half = max_chars // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}", True


def first_match(text: str, names: dict[str, str]) -> str | None:
    """The canonical name of whichever of ``names`` (written form -> canonical) appears first as a whole
    word; on a tie the longest form wins ("Military Science" over "Science")."""
    best = None
    for form, canon in names.items():
        m = re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", text, re.IGNORECASE)
        if m and (best is None or (m.start(), -len(form)) < best[0]):
            best = ((m.start(), -len(form)), canon)
    return best[1] if best else None


def parse_strategies(text: str) -> list[str] | None:
    """Distinct taxonomy strategies named in a reply, in taxonomy order; [] for "none"; None if unreadable."""
    forms = {**{k: k for k in STRATEGIES}, **ALIASES}
    found = set()
    for part in re.split(r"[,;\n]", text):
        canon = first_match(part, forms)
        if canon:
            found.add(canon)
    if found:
        return [k for k in STRATEGIES if k in found]
    return [] if re.search(r"\bnone\b", text, re.IGNORECASE) else None


def parse_score(text: str, low: int = 0, high: int = 10) -> float | None:
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)", text)
    if m and low <= float(m.group(1)) <= high:
        return float(m.group(1))
    return None


def parse_yes_no(text: str) -> float | None:
    m = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
    return None if m is None else float(m.group(1).lower() == "yes")


class PromptedAnnotator(Annotator):
    """Asks ``backend`` one prompt per unit (a question or a trace) and parses the reply into values."""

    task: ClassVar[str] = ""  # key of PROMPTS
    per_question: ClassVar[bool] = False  # one prompt per question (its value shared by its traces)

    class Settings(Settings):
        backend: dict = Field(default_factory=lambda: dict(LOCAL_BACKEND),
                              description="the teacher spec that answers the prompts (any registered teacher)")
        prompt: str = Field("v1", description="prompt version (PROMPTS); part of the cache key")
        max_tokens: int = Field(32, ge=1, description="reply budget, set as the backend's max_new_tokens/max_tokens")
        retries: int = Field(2, ge=0, description="re-asks of an unparseable reply, sampling with a new seed")
        retry_temperature: float = Field(0.7, ge=0)
        max_chars: int = Field(48_000, ge=256, description="longer thinking is clipped to its head and tail")
        only_complete: bool = Field(True, description="annotate only complete traces (others get null)")
        # where the backend can prefill the reply (the local hf teacher): a small model then answers in the
        # asked form instead of answering the question (SmolLM2-135M: 33 of 40 topic replies unreadable
        # without it); servers without prefill ignore it
        reply_prefix: str | None = None

    def __init__(self, settings=None, **kw):
        super().__init__(settings, **kw)
        if self.settings.prompt not in PROMPTS[self.task]:
            raise ValueError(f"annotator {self.name}: unknown prompt version {self.settings.prompt!r}; "
                             f"known: {', '.join(PROMPTS[self.task])}")
        if "name" not in self.settings.backend:
            raise ValueError(f"annotator {self.name}: backend needs a teacher name, e.g. {LOCAL_BACKEND}")

    def nested(self):
        return {"backend": ("teacher", self.settings.backend)}

    # what a subclass defines
    def render(self, row: dict, template: str) -> str | None:
        """The prompt for one unit (a pool row), or None to skip it (its value stays null)."""
        raise NotImplementedError

    def parse(self, reply: str):
        raise NotImplementedError

    def annotate(self, pool: pa.Table, ctx: Context) -> pa.Table:
        s = self.settings
        template = PROMPTS[self.task][s.prompt]
        if self.per_question:
            qids, rows = first_rows(pool)
            unit_rows = pool.take(pa.array(rows, pa.int64())).to_pylist()
            units = qids
        else:
            unit_rows = pool.to_pylist()
            units = [r["trace_id"] for r in unit_rows]
        prompts = [None if (s.only_complete and not self.per_question and not r["complete"])
                   else self.render(r, template) for r in unit_rows]
        values, stats = ask(ctx, s.backend, units, prompts, self.parse, s.max_tokens, s.retries, s.retry_temperature,
                            s.reply_prefix)
        ctx.stats.update(stats)
        if self.per_question:
            by_question = dict(zip(units, values))
            values = [by_question[q] for q in pool.column("question_id").to_pylist()]
        return self.columns_of(pool, values, ctx)

    def columns_of(self, pool: pa.Table, values: list, ctx: Context) -> pa.Table:
        raise NotImplementedError

    def render_thinking(self, row: dict, template: str, **fields) -> str | None:
        """A prompt about a trace's (clipped) thinking; None for a trace without any."""
        thinking = clip(row["thinking"] or "", self.settings.max_chars)[0]
        return template.format(question=row["question"], thinking=thinking, **fields) if thinking else None


class TopicAnnotator(PromptedAnnotator):
    name = "topic"
    version = "1"
    description = "LLM-labelled topic per question: one of the paper's 13 domains or the source's categories"
    columns = ("topic",)
    task = "topic"
    per_question = True

    class Settings(PromptedAnnotator.Settings):
        # paper: the 13 domains of §3.2; source: the pool's own topic labels (reasoning-gym categories), so
        # the annotator's agreement with a known ground truth is measured; or an explicit list
        labels: Literal["paper", "source"] | list[str] = "paper"
        # a question the source already labels keeps its label and costs no call (reasoning-gym's
        # categories); false asks about every question, which measures agreement with labels = "source"
        keep_source: bool = True
        reply_prefix: str | None = "Domain:"
        max_tokens: int = Field(16, ge=1)

    def annotate(self, pool, ctx):
        labels = self.settings.labels
        if labels == "paper":
            labels = list(PAPER_DOMAINS)
        elif labels == "source":
            labels = sorted({t for t in pool.column("topic").to_pylist() if t})
            if not labels:
                raise ValueError("annotator topic: labels = 'source' but the pool's questions have no topic")
        self._labels = labels
        return super().annotate(pool, ctx)

    def render(self, row, template):
        if self.settings.keep_source and row["topic"]:
            return None
        return template.format(labels=", ".join(self._labels), question=row["question"])

    def parse(self, reply):
        return first_match(reply, {label: label for label in self._labels})

    def columns_of(self, pool, values, ctx):
        truth = pool.column("topic").to_pylist()
        if self.settings.keep_source:
            values = [t or v for t, v in zip(truth, values)]
        _, rows = first_rows(pool)
        per_q = [(values[i], truth[i]) for i in rows if truth[i] in self._labels]
        if per_q and not self.settings.keep_source:  # the source's topic is a ground truth in the label set: how often the LLM agrees
            ctx.stats["agreement_with_source_topic"] = round(sum(v == t for v, t in per_q) / len(per_q), 4)
            ctx.stats["agreement_questions"] = len(per_q)
        ctx.stats["traces_per_topic"] = {t: values.count(t) for t in dict.fromkeys(values) if t is not None}
        return pa.table({"trace_id": pool.column("trace_id"), "topic": pa.array(values, pa.string())})


class StrategiesAnnotator(PromptedAnnotator):
    name = "strategies"
    version = "2"  # 2: density per thinking token, not per completion token
    description = "LLM-labelled reasoning strategies per trace (taxonomy of 12), count, density per 1k thinking tokens"
    columns = ("strategies", "strategy_count", "strategy_density")
    task = "strategies"

    class Settings(PromptedAnnotator.Settings):
        reply_prefix: str | None = "Strategies used:"
        max_tokens: int = Field(64, ge=1)

    def render(self, row, template):
        return self.render_thinking(row, template, taxonomy="\n".join(f"- {k}: {v}" for k, v in STRATEGIES.items()))

    def parse(self, reply):
        return parse_strategies(reply)

    def columns_of(self, pool, values, ctx):
        count = np.array([np.nan if v is None else len(v) for v in values])
        # density: distinct strategies per 1k thinking tokens (NaturalThoughts §3.2). The pool has the teacher's
        # own count of completion tokens (thinking + answer); thinking gets its share of them by characters
        tokens = pool.column("completion_tokens").to_numpy(zero_copy_only=False).astype(float)
        thinking = np.array([len(t or "") for t in pool.column("thinking").to_pylist()], float)
        answer = np.array([len(a or "") for a in pool.column("answer").to_pylist()], float)
        chars = thinking + answer
        tokens = tokens * np.divide(thinking, chars, out=np.zeros_like(chars), where=chars > 0)
        density = np.where(tokens > 0, count / np.maximum(tokens, 1) * 1000, np.nan)
        ctx.stats["strategy_count_histogram"] = {int(k): int(n) for k, n in
                                                 zip(*np.unique(count[~np.isnan(count)], return_counts=True))}
        return pa.table({
            "trace_id": pool.column("trace_id"),
            "strategies": pa.array(values, pa.list_(pa.string())),
            "strategy_count": pa.array(count, pa.float64(), mask=np.isnan(count)),
            "strategy_density": pa.array(density, pa.float64(), mask=np.isnan(density)),
        })


class VerbosityAnnotator(PromptedAnnotator):
    name = "verbosity"
    version = "1"
    description = "LLM-rated verbosity of each trace's thinking, 0 (concise) to 10 (repetitive)"
    columns = ("verbosity",)
    task = "verbosity"

    class Settings(PromptedAnnotator.Settings):
        reply_prefix: str | None = "Verbosity score:"
        max_tokens: int = Field(8, ge=1)

    def render(self, row, template):
        return self.render_thinking(row, template)

    def parse(self, reply):
        return parse_score(reply)

    def columns_of(self, pool, values, ctx):
        scored = [v for v in values if v is not None]
        ctx.stats["mean_verbosity"] = round(float(np.mean(scored)), 3) if scored else None
        return pa.table({"trace_id": pool.column("trace_id"), "verbosity": pa.array(values, pa.float64())})


class JudgeAnnotator(PromptedAnnotator):
    """Whether the teacher's final answer and the System-1 answer agree. Graded answers decide without a
    model (both right: agree; one right: disagree); two wrong or ungraded answers go to the LLM judge, as
    the paper's Llama-3.1-8B-Instruct judged R1 against Llama-3.3-70B answers (§4.2)."""

    name = "judge"
    version = "1"
    description = "do the teacher's and the System-1 answers agree? verifier grades first, else an LLM judge"
    columns = ("models_agree",)
    requires = ("system1_answer", "correct", "system1_correct")
    task = "judge"

    class Settings(PromptedAnnotator.Settings):
        reply_prefix: str | None = "Equivalent:"
        max_tokens: int = Field(8, ge=1)
        use_verifier: bool = Field(True, description="decide from grades when they settle it")
        max_chars: int = Field(4_000, ge=64, description="each answer is clipped to this")

    def annotate(self, pool, ctx):
        self._decided = {}
        if self.settings.use_verifier:
            for r in pool.select(["trace_id", "correct", "system1_correct"]).to_pylist():
                a, b = r["correct"], r["system1_correct"]
                if a is not None and b is not None and (a >= 1.0 or b >= 1.0):
                    self._decided[r["trace_id"]] = float(a >= 1.0 and b >= 1.0)
        return super().annotate(pool, ctx)

    def render(self, row, template):
        if row["trace_id"] in self._decided or not row["answer"] or not row["system1_answer"]:
            return None
        return template.format(question=row["question"], answer=clip(row["answer"], self.settings.max_chars)[0],
                               other=clip(row["system1_answer"], self.settings.max_chars)[0])

    def parse(self, reply):
        return parse_yes_no(reply)

    def columns_of(self, pool, values, ctx):
        ids = pool.column("trace_id").to_pylist()
        values = [self._decided.get(t, v) for t, v in zip(ids, values)]
        ctx.stats.update(by_verifier=len(self._decided), agree=sum(v == 1.0 for v in values),
                         disagree=sum(v == 0.0 for v in values))
        return pa.table({"trace_id": pool.column("trace_id"), "models_agree": pa.array(values, pa.float64())})
