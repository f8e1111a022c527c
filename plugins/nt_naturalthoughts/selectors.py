"""NaturalThoughts' selection strategies (Li et al. 2025, arXiv 2507.01921 §3.2), model-free parts.

Every selector writes kept/reason for every trace, keeps one complete trace per question, is
deterministic given the seed, and works on whole columns (numpy/pyarrow), so choosing among a million
traces costs array operations, not a Python loop per trace. A selector reads only the columns it needs.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationError, model_validator

from nt_harness.components import Selector, Settings
from nt_harness.plugins import PluginError, shared
from nt_harness.recipes import SpecError
from nt_harness.selection import Decisions, codes, column, fill_random, first_per_question, start, unchosen

# "Long" (§3.2): keep each example with probability p = (l / C)^τ, l = reasoning length in tokens,
# C = 5000, τ = 2.5 (NaturalThoughts, arXiv 2507.01921 §3.2).
LONG_SCALE_TOKENS = 5000.0
LONG_EXPONENT = 2.5
# "Reasoning strategies" (§3.2): keep traces with R_min = 4 to R_max = 8 distinct meta-reasoning
# strategies, downsampling low-density ones (NaturalThoughts, arXiv 2507.01921 §3.2).
MIN_STRATEGIES, MAX_STRATEGIES = 4, 8


# building blocks -------------------------------------------------------------------------------------
def keep_sampled(d: Decisions, question: np.ndarray, accepted: np.ndarray, budget: int, rng, reason: str) -> int:
    """Keep accepted traces, one per question, in random order, up to the budget."""
    return d.keep(first_per_question(question, rng.permutation(np.flatnonzero(accepted))), reason, budget)


def finish(d: Decisions, ctx, question, complete, budget, rng, fill: bool) -> pa.Table:
    if fill:
        ctx.stats["filled"] = fill_random(d, question, complete, budget, rng, "kept: fill (random)")
    return d.table()


# selectors ---------------------------------------------------------------------------------------------
class DisagreeSelector(Selector):
    """Models disagree (§3.2, the paper's best at 10k-100k examples): a question whose direct (System-1) answer
    differs from the teacher's reasoned one is one where the reasoning mattered. The verdict is the `judge`
    annotator's ``models_agree``, or with ``by = "verifier"`` the `system1` annotator's grade."""

    name = "disagree"
    description = "traces whose answer the System-1 model does not share (NaturalThoughts' best)"

    class Settings(Settings):
        fill: bool = True  # top up with random complete traces when too few disagree (recorded)
        # judge: the `judge` annotator found the two answers different (any question, as the paper judged with
        # Llama-3.1-8B-Instruct, §4.2); verifier: the System-1 answer is graded wrong (needs a verifier; ours)
        by: Literal["verifier", "judge"] = "judge"
        require_correct: bool = False  # ours, not the paper's: the teacher's own answer must verify too

    def __init__(self, settings=None, **kw):
        super().__init__(settings, **kw)
        s = self.settings
        self.requires = (("correct",) if s.require_correct else ()) + (
            ("system1_correct",) if s.by == "verifier" else ("models_agree",))

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        ok = complete
        if self.settings.require_correct:
            correct = column(pool, "correct") >= 1.0
            d.drop(complete & ~correct, "dropped: teacher answer wrong")
            ok = complete & correct
        if self.settings.by == "verifier":
            agree = column(pool, "system1_correct") >= 1.0
        else:
            verdict = column(pool, "models_agree")
            d.drop(ok & np.isnan(verdict), "dropped: not judged")
            ok = ok & ~np.isnan(verdict)
            agree = verdict >= 1.0
        d.drop(ok & agree, "dropped: models agree")
        disagree = np.flatnonzero(ok & ~agree)
        d.keep(first_per_question(question, rng.permutation(disagree)), "kept: models disagree", budget)
        if self.settings.fill and d.n_kept < budget:
            n = fill_random(d, question, complete, budget, rng, "kept: fill (random)")
            ctx.stats["filled"] = n
        return d.table()


class LongSelector(Selector):
    """l is ``thinking_tokens`` from the `length` annotator: the teacher's own count where the pool has one (the
    unit the paper's C = 5000 is in), else a tokenizer's; the annotator's ``counted_by`` stat says which."""

    name = "long"
    version = "1"
    description = ("length-biased: keep with p = (l/C)^τ on thinking tokens, the teacher's where the pool has them "
                   "(NaturalThoughts §3.2), then fill")
    requires = ("thinking_tokens",)

    class Settings(Settings):
        scale_tokens: float = Field(LONG_SCALE_TOKENS, gt=0)  # C
        exponent: float = Field(LONG_EXPONENT, gt=0)  # τ
        fill: bool = True  # top up, length-weighted, when the sample is short of the budget (recorded)

    def keep_probability(self, thinking_tokens: np.ndarray) -> np.ndarray:
        s = self.settings
        return np.minimum(1.0, (np.maximum(thinking_tokens, 0.0) / s.scale_tokens) ** s.exponent)

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        p = self.keep_probability(column(pool, "thinking_tokens", fill=0.0))
        accepted = complete & (rng.random(pool.num_rows) < p)
        d.drop(complete & ~accepted, "dropped: not sampled by length")
        keep_sampled(d, question, accepted, budget, rng, "kept: sampled by length, p=(l/C)^τ")
        ctx.stats["sampled"] = int(accepted.sum())
        ctx.stats["mean_keep_probability"] = float(p[complete].mean()) if complete.any() else 0.0
        if self.settings.fill and d.n_kept < budget:
            # weighted sampling without replacement ∝ p (Efraimidis & Spirakis keys log(u)/p), so the fill
            # keeps the length bias instead of diluting it with uniform picks
            with np.errstate(divide="ignore"):
                key = np.where(p > 0, np.log(rng.random(pool.num_rows)) / np.where(p > 0, p, 1.0), -np.inf)
            rows = np.flatnonzero(complete & unchosen(d, question))
            order = rows[np.lexsort((rng.random(len(rows)), -key[rows]))]
            ctx.stats["filled"] = d.keep(first_per_question(question, order), "kept: fill (length-weighted)", budget)
        return d.table()


class UniformOverSelector(Selector):
    """Round-robin over the groups of a column: the r-th pick of every group before any group's (r+1)-th,
    so groups are balanced until the small ones run out. Not registered itself."""

    group_column: ClassVar[str] = ""

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        group = codes(pool, self.group_column)
        candidates = first_per_question(question, rng.permutation(np.flatnonzero(complete)))
        g = group[candidates]
        by_group = np.argsort(g, kind="stable")  # random order kept within a group
        sorted_g = g[by_group]
        starts = np.flatnonzero(np.r_[True, sorted_g[1:] != sorted_g[:-1]]) if len(g) else np.zeros(0, np.int64)
        sizes = np.diff(np.r_[starts, len(g)])
        turn = np.empty(len(g), dtype=np.int64)
        turn[by_group] = np.arange(len(g)) - np.repeat(starts, sizes)
        group_order = rng.permutation(group.max() + 1 if len(group) else 0)  # which group goes first in a round
        order = candidates[np.lexsort((group_order[g], turn))]
        d.keep(order, f"kept: uniform over {self.group_column}", budget)
        kept_groups = pool.column(self.group_column).filter(pa.array(d.kept)).value_counts().to_pylist()
        ctx.stats["kept_per_group"] = {str(v["values"]): v["counts"] for v in kept_groups}
        ctx.stats["groups"] = len(sizes)
        return d.table()


class TopicUniformSelector(UniformOverSelector):
    name = "topic-uniform"
    version = "1"
    description = "uniform over question topics, round-robin (NaturalThoughts §3.2 topic diversity)"
    requires = ("topic",)
    group_column = "topic"


class ClusterUniformSelector(UniformOverSelector):
    name = "cluster-uniform"
    version = "1"
    description = "uniform over k-means clusters of question embeddings (NaturalThoughts §3.2 semantic diversity)"
    requires = ("cluster",)
    group_column = "cluster"


class VerbositySelector(Selector):
    name = "verbosity"
    version = "1"
    description = "traces in one verbosity bin (low/medium/high of a 0-10 score; NaturalThoughts §3.2)"
    requires = ("verbosity",)

    class Settings(Settings):
        level: Literal["low", "medium", "high"] = "high"
        # The paper compares low/medium/high subsets of the 0-10 score without giving the edges: settings.
        low_max: float = 3.0  # low: score <= low_max
        high_min: float = 7.0  # high: score >= high_min; medium: in between
        fill: bool = True  # top up with random complete traces when the bin is short (recorded)

        @model_validator(mode="after")
        def _ordered(self):
            if not self.low_max < self.high_min:
                raise ValueError("low_max must be below high_min")
            return self

    def select(self, pool, budget, seed, ctx):
        s = self.settings
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        score = column(pool, "verbosity")
        scored = ~np.isnan(score)
        bins = {"low": score <= s.low_max, "high": score >= s.high_min}
        bins["medium"] = scored & ~bins["low"] & ~bins["high"]
        d.drop(complete & ~scored, "dropped: no verbosity score")
        d.drop(complete & scored & ~bins[s.level], f"dropped: verbosity not {s.level}")
        keep_sampled(d, question, complete & bins[s.level], budget, rng, f"kept: verbosity {s.level}")
        return finish(d, ctx, question, complete, budget, rng, s.fill)


class ShortReferenceSelector(Selector):
    name = "short-reference"
    version = "1"
    description = "easy-to-verify questions: short reference answers (NaturalThoughts §3.2)"

    class Settings(Settings):
        # "easy to verify" proxied by the reference answer's length in characters (a number, a word, a
        # short expression); the paper gives no cut-off, so it is a setting
        max_reference_chars: int = Field(32, ge=1)
        fill: bool = True

    def select(self, pool, budget, seed, ctx):
        s = self.settings
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        reference = pool.column("reference").combine_chunks().cast(pa.string())
        length = pc.fill_null(pc.utf8_length(pc.utf8_trim_whitespace(reference)), 0).to_numpy(zero_copy_only=False)
        d.drop(complete & (length == 0), "dropped: no reference answer")
        d.drop(complete & (length > s.max_reference_chars), f"dropped: reference over {s.max_reference_chars} chars")
        short = complete & (length > 0) & (length <= s.max_reference_chars)
        keep_sampled(d, question, short, budget, rng, "kept: short reference answer")
        return finish(d, ctx, question, complete, budget, rng, s.fill)


class StrategyDiverseSelector(Selector):
    name = "strategy-diverse"
    version = "1"
    description = "traces using 4-8 distinct reasoning strategies, low-density ones downsampled (NaturalThoughts §3.2)"
    requires = ("strategy_count", "strategy_density")

    class Settings(Settings):
        min_strategies: int = Field(MIN_STRATEGIES, ge=0)  # R_min
        max_strategies: int = Field(MAX_STRATEGIES, ge=0)  # R_max
        # "low density" (strategies per 1k thinking tokens) and how hard it is downsampled are not given
        # in the paper: below this quantile of the in-range traces' density, keep this fraction
        low_density_quantile: float = Field(0.25, ge=0, le=1)
        low_density_keep: float = Field(0.5, ge=0, le=1)
        fill: bool = True  # top up with random complete traces (outside the range; recorded)

        @model_validator(mode="after")
        def _ordered(self):
            if self.min_strategies > self.max_strategies:
                raise ValueError("min_strategies must not exceed max_strategies")
            return self

    def select(self, pool, budget, seed, ctx):
        s = self.settings
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        count = column(pool, "strategy_count")
        density = column(pool, "strategy_density")
        in_range = (count >= s.min_strategies) & (count <= s.max_strategies)  # NaN compares False
        d.drop(complete & ~in_range, f"dropped: strategies outside {s.min_strategies}-{s.max_strategies}")
        candidates = complete & in_range
        known = candidates & ~np.isnan(density)
        threshold = np.quantile(density[known], s.low_density_quantile) if known.any() else -np.inf
        low = candidates & (~known | (density < threshold))
        downsampled = low & (rng.random(pool.num_rows) >= s.low_density_keep)
        d.drop(downsampled, "dropped: low strategy density (downsampled)")
        keep_sampled(d, question, candidates & ~downsampled, budget, rng,
                     f"kept: {s.min_strategies}-{s.max_strategies} strategies")
        ctx.stats.update(in_range=int(candidates.sum()), low_density_threshold=float(threshold),
                         downsampled=int(downsampled.sum()))
        return finish(d, ctx, question, complete, budget, rng, s.fill)


def build_selector(spec: dict, where: str, **settings) -> Selector:
    """A selector from its spec, for selectors made of selectors; ``settings`` apply where it has them."""
    conf = dict(spec)
    name = conf.pop("name", None)
    if not name:
        raise SpecError(f"{where}: no selector name given")
    try:
        cls = shared().component("selector", name)
    except PluginError as e:
        raise SpecError(f"{where}: {e}") from None
    conf.update({k: v for k, v in settings.items() if k in cls.Settings.model_fields})
    try:
        return cls(**conf)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise SpecError(f"{where} ({name}): {problems}") from None


class ComposeSelector(Selector):
    """Selectors in sequence: each narrows the traces the one before kept (e.g. models-disagree, then
    length-biased sampling among those), the last one to the budget; then fill from random, recorded."""

    name = "compose"
    version = "1"
    description = "selectors applied in order, each narrowing the last one's choice, then fill from random"

    class Settings(Settings):
        steps: list[dict] = Field(min_length=1)  # selector specs, e.g. [{"name": "disagree"}, {"name": "long"}]
        fill: bool = True  # top up with random complete traces when the last step is short (recorded)

    def __init__(self, settings=None, **kw):
        super().__init__(settings, **kw)
        self.steps: list[Selector] = []
        for i, spec in enumerate(self.settings.steps):
            if "fill" in spec:
                raise SpecError(f"compose.steps[{i}] ({spec.get('name')}): steps never fill; compose's own `fill` "
                                "tops up")
            self.steps.append(build_selector(spec, f"compose.steps[{i}]", fill=False))
        # an instance attribute: the pipeline checks the columns every step needs before any work
        self.requires = tuple(dict.fromkeys(c for step in self.steps for c in step.requires))

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        rows = np.arange(pool.num_rows)
        path = " > ".join(step.name for step in self.steps)
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            sub = pool.take(pa.array(rows, pa.int64()))
            step_ctx = dataclasses.replace(ctx, stats={})
            sel = step.select(sub, budget if last else sub.num_rows, seed + i, step_ctx)
            ctx.stats[f"step{i}:{step.name}"] = step_ctx.stats
            kept = sel.column("kept").to_numpy(zero_copy_only=False)
            reason = sel.column("reason").to_numpy(zero_copy_only=False)
            dropped = np.flatnonzero(~kept)
            d.reason[rows[dropped]] = [f"{r} [{step.name}]" for r in reason[dropped]]
            if last:
                chosen = np.flatnonzero(kept)
                chosen = chosen[np.argsort(sel.column("rank").to_numpy()[chosen], kind="stable")]
                d.keep(rows[chosen], [f"{r} [{path}]" for r in reason[chosen]], budget)
            else:
                rows = rows[kept]
                if not len(rows):
                    break
        d.drop(~complete, "dropped: incomplete")
        return finish(d, ctx, question, complete, budget, rng, self.settings.fill)


class MixSelector(Selector):
    """Mixed System-1/System-2 distillation (NaturalThoughts Table 4) as a selection: another selector picks
    the traces, this one decides which train with their thinking (System-2) and which on the final answer only
    (System-1), in the selection's ``mode`` column; the trainer renders what it is given."""

    name = "mix"
    version = "1"
    description = "System-1/System-2 mix over another selector's choice: a random share p, or System-2 where the " \
                  "judge says the models disagree (Table 4)"

    class Settings(Settings):
        select: dict = Field(default_factory=lambda: {"name": "random"})  # the selector whose choice is mixed
        # random: each kept trace System-2 with probability p (the paper's 0.2/0.4/0.6 is the System-2 share);
        # difficulty: System-2 where the `judge` annotator found the models' answers different, System-1 elsewhere
        mode: Literal["random", "difficulty"] = "random"
        p: float = Field(0.5, ge=0, le=1)

        @model_validator(mode="after")
        def _p_is_randoms(self):
            if self.mode == "difficulty" and "p" in self.model_fields_set:
                raise ValueError("p, the System-2 share, is mode random's; difficulty mixing decides by the judge")
            return self

    def __init__(self, settings=None, **kw):
        super().__init__(settings, **kw)
        self.inner = build_selector(self.settings.select, "mix.select")
        difficulty = ("models_agree",) if self.settings.mode == "difficulty" else ()
        self.requires = tuple(dict.fromkeys(self.inner.requires + difficulty))

    def select(self, pool, budget, seed, ctx):
        sel = self.inner.select(pool, budget, seed, ctx)
        if self.settings.mode == "random":
            system2 = np.random.default_rng(seed).random(sel.num_rows) < self.settings.p
        else:
            index = {t: i for i, t in enumerate(pool.column("trace_id").to_pylist())}
            agree = column(pool, "models_agree", fill=1.0)  # unjudged: System-1
            system2 = agree[[index[t] for t in sel.column("trace_id").to_pylist()]] < 1.0
        kept = sel.column("kept").to_numpy(zero_copy_only=False)
        modes = np.where(kept, np.where(system2, "system2", "system1"), None)
        ctx.stats["system2_kept"] = int((kept & system2).sum())
        return sel.append_column("mode", pa.array(modes.tolist(), pa.string()))
