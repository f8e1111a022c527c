"""OpenThoughts' data recipe (Guha et al. 2025, arXiv 2506.04178) as a selector on any pool.

In pipeline order, each step the paper's ablations chose:
1. de-duplication of questions (whatever the source): exact text, or with ``near_duplicate`` also questions whose
   Indel similarity (rapidfuzz) to an earlier one reaches it, as open_thoughts/deduplicate.py does on its
   ``question`` column (there fuzz.ratio >= 95, i.e. 0.95);
2. decontamination: drop questions sharing a 13-gram with a question of the benchmarks the run evaluates
   (``ctx.benchmarks``' ``questions()``, or the lm-eval tasks named in ``decontaminate``;
   nt_openthoughts.decontaminate);
3. source mixing: per domain, only the top 1-2 question sources (the paper ranked sources by training on
   each; without that run here they are ranked by the same signal as step 4, or named in ``sources``);
4. question filtering: rank questions by LLM response length (longest first), or by an LLM-rated
   difficulty column when the pool has one, and keep the top questions to the budget;
5. every response of a kept question, with no answer filtering (none of their answer filters helped;
   the paper samples 16 answers per question: the pool's teacher n here, 16 in `openthoughts:paper-method`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.compute as pc
from pydantic import Field

from nt_harness.components import Selector, Settings
from nt_harness.selection import Decisions, column
from nt_openthoughts.decontaminate import Contamination, benchmark_questions, run_benchmark_questions


def response_length(pool) -> np.ndarray:
    """Tokens from the `length` annotator, else the teacher's completion_tokens, else characters / 4."""
    if {"thinking_tokens", "answer_tokens"} <= set(pool.column_names):
        return column(pool, "thinking_tokens", 0.0) + column(pool, "answer_tokens", 0.0)
    tokens = column(pool, "completion_tokens")
    chars = pc.add(pc.utf8_length(pc.fill_null(pool.column("thinking"), "")),
                   pc.utf8_length(pc.fill_null(pool.column("answer"), ""))).to_numpy(zero_copy_only=False) / 4
    return np.where(np.isnan(tokens), chars, tokens)


def near_duplicates(texts: list[str], threshold: float, workers: int = 1) -> np.ndarray:
    """For distinct texts in pool order: whether each has Indel normalized similarity >= ``threshold`` with an
    earlier one (rapidfuzz, no preprocessing), so the first of every near-duplicate pair stays, as
    open_thoughts/deduplicate.py keeps the lowest index of each matching pair. Row blocks bound the memory."""
    from rapidfuzz.distance import Indel
    from rapidfuzz.process import cdist

    dup = np.zeros(len(texts), dtype=bool)
    for start in range(0, len(texts), 512):
        block = cdist(texts[start:start + 512], texts[:start + 512], scorer=Indel.normalized_similarity,
                      score_cutoff=threshold, workers=workers)
        for i, row in enumerate(block):
            dup[start + i] = bool(np.any(row[:start + i] >= threshold))
    return dup


def default_tasks_dir() -> str:
    from nt_lmeval import tasks_dir

    return str(tasks_dir())


class OpenThoughtsSelector(Selector):
    name = "openthoughts"
    version = "2"
    description = ("OpenThoughts: dedup, 13-gram decontamination against the run's benchmarks, top sources per domain, "
                   "longest-response questions")
    uses_benchmarks = True  # decontaminates against the benchmarks the run evaluates (their questions())

    class Settings(Settings):
        rank_by: Literal["auto", "length", "difficulty"] = "auto"  # auto: difficulty when the column exists
        difficulty_column: str = "difficulty"
        sources_per_domain: int | None = Field(2, ge=1)  # OpenThoughts mixes the top 1-2 sources per domain
        sources: dict[str, list[str]] | None = None  # domain -> its chosen sources (overrides the ranking)
        domain_column: str = "topic"
        source_column: str = "source"
        # None: the questions of the benchmarks this run evaluates; a list: these lm-eval tasks instead, read from
        # their local files under tasks_path ([]: no decontamination)
        decontaminate: list[str] | None = Field(None, description="lm-eval task names overriding the run's benchmarks")
        tasks_path: str | None = None  # folder of lm-eval task YAMLs for `decontaminate`; None: the project's tasks/
        # Indel similarity at which a question is a near-duplicate of an earlier one; None: exact duplicates only
        near_duplicate: float | None = Field(None, gt=0.0, le=1.0)
        ngram: int = Field(13, ge=1)
        boilerplate_docs: int = Field(3, ge=2)  # an n-gram in this many benchmark questions is template text
        # 0: any shared n-gram is a leak (the paper's rule). On the embedded gym pool that flags 14 of 40 questions that
        # are disjoint from gym_heldout by construction (template words recombined); 0.8 flags none, a copy is 1.0.
        min_shared_fraction: float = Field(0.0, ge=0.0, le=1.0)
        fill: bool = True  # equal budgets: top up from the sources left out by mixing (recorded)

    def select(self, pool, budget, seed, ctx):
        s = self.settings
        d = Decisions(pool)
        n = pool.num_rows
        complete = column(pool, "complete")
        d.drop(~complete, "dropped: incomplete")
        qids = pool.column("question_id").to_numpy(zero_copy_only=False)
        texts = pool.column("question").to_numpy(zero_copy_only=False)

        # 1. de-duplication: the first question id of each text stays; with near_duplicate, also the first of
        # each pair of distinct texts that similar
        first_id: dict[str, str] = {}
        for q, t in zip(qids, texts):
            first_id.setdefault(t, q)
        duplicate = np.array([first_id[t] != q for q, t in zip(qids, texts)], dtype=bool)
        d.drop(duplicate, "dropped: duplicate question")
        near = np.zeros(n, dtype=bool)
        if s.near_duplicate is not None:
            distinct = list(first_id)
            similar = dict(zip(distinct, near_duplicates(distinct, s.near_duplicate, ctx.threads)))
            near = np.array([similar[t] for t in texts], dtype=bool) & ~duplicate
            d.drop(near, f"dropped: near-duplicate question (Indel similarity >= {s.near_duplicate})")
            ctx.stats["near_duplicate_questions"] = len(set(qids[near]))
        duplicate |= near

        # 2. decontamination, once per distinct question, against distinct benchmark questions (a question
        # listed twice would otherwise count towards the template threshold)
        leaked = np.zeros(n, dtype=bool)
        if s.decontaminate is None:
            bench = run_benchmark_questions(ctx.benchmarks)
        elif s.decontaminate:
            bench = benchmark_questions(s.decontaminate, Path(s.tasks_path or default_tasks_dir()))
        else:
            bench = {}
        ctx.stats["decontaminated_against"] = {task: len(qs) for task, qs in bench.items()}
        if bench:
            distinct_bench = list(dict.fromkeys(q for qs in bench.values() for q in qs))
            index = Contamination(distinct_bench, s.ngram, s.boilerplate_docs, s.min_shared_fraction)
            verdict = {t: index.leaks(t) for t in set(texts)}
            leaked = np.array([verdict[t] for t in texts], dtype=bool)
            ctx.stats.update(benchmark_questions=len(distinct_bench), boilerplate_ngrams=index.boilerplate)
        d.drop(leaked, "dropped: contaminated (shares a 13-gram with a benchmark question)")
        ctx.stats["contaminated_questions"] = len(set(qids[leaked]))
        eligible = complete & ~duplicate & ~leaked

        # 4 (its signal first, as step 3 ranks sources by it): per question, mean over its responses
        by = s.rank_by
        if by == "auto":
            by = "difficulty" if s.difficulty_column in pool.column_names else "length"
        signal = column(pool, s.difficulty_column) if by == "difficulty" else response_length(pool)
        ctx.stats["rank_by"] = by
        uniq, inverse = np.unique(qids, return_inverse=True)
        valid = eligible & ~np.isnan(signal)
        total = np.bincount(inverse, weights=np.where(valid, signal, 0.0), minlength=len(uniq))
        count = np.bincount(inverse, weights=valid, minlength=len(uniq))
        q_score = np.divide(total, count, out=np.full(len(uniq), -np.inf), where=count > 0)[inverse]

        # 3. source mixing
        domains = self.values(pool, s.domain_column)
        sources = self.values(pool, s.source_column)
        top = self.top_sources(domains, sources, q_score, eligible, inverse)
        ctx.stats["sources"] = {dom: list(src) for dom, src in sorted(top.items())}
        mixed_in = np.array([src in top.get(dom, ()) for dom, src in zip(domains, sources)], dtype=bool)
        d.drop(eligible & ~mixed_in, "dropped: source not among its domain's top sources")

        # 4-5. questions by signal, all their responses
        order = np.lexsort((np.arange(n), inverse, -q_score))  # a question's responses stay together
        d.keep([i for i in order if eligible[i] and mixed_in[i]], f"kept: top question by {by}", budget)
        if s.fill and d.n_kept < budget:
            ctx.stats["filled"] = d.keep([i for i in order if eligible[i] and not mixed_in[i]],
                                         f"kept: fill (source left out by mixing, by {by})", budget)
        return d.table()

    @staticmethod
    def values(pool, name: str) -> np.ndarray:
        if name not in pool.column_names:
            return np.full(pool.num_rows, "", dtype=object)
        return pc.fill_null(pool.column(name).cast("string"), "").to_numpy(zero_copy_only=False)

    def top_sources(self, domains, sources, q_score, eligible, inverse) -> dict[str, tuple[str, ...]]:
        """domain -> the sources mixed in: named in ``sources``, else the best ``sources_per_domain`` by
        their questions' mean signal."""
        s = self.settings
        top = {}
        for dom in sorted(set(domains[eligible])):
            here = eligible & (domains == dom)
            if s.sources is not None and dom in s.sources:
                top[dom] = tuple(s.sources[dom])
                continue
            names = sorted(set(sources[here]))
            if s.sources_per_domain is None or len(names) <= s.sources_per_domain:
                top[dom] = tuple(names)
                continue
            means = []
            for src in names:
                _, first = np.unique(inverse[here & (sources == src)], return_index=True)
                rows = np.flatnonzero(here & (sources == src))[first]
                means.append(float(np.mean(q_score[rows])))
            ranked = sorted(zip(names, means), key=lambda x: (-x[1], x[0]))
            top[dom] = tuple(name for name, _ in ranked[: s.sources_per_domain])
        return top
