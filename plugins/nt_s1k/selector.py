"""s1K's selection (Muennighoff et al. 2025, arXiv 2501.19393 §2.2) on any pool, in three stages.

Quality: drop failed or malformed traces (API errors, cut off, empty thinking or answer). Difficulty:
drop a question when either of two solver models answers it correctly (s1K: Qwen2.5-7B/32B-Instruct,
graded by Claude 3.5 Sonnet; here any of the solver columns present: ``system1_correct`` from the
`system1` annotator as the weak solver, ``solver1_passes``/``solver2_passes`` from the solver annotators).
Diversity: pick a domain uniformly at random, then a question in it with weight 2^(-rank), rank 0 being
its longest trace, and repeat until the budget (s1K's Algorithm 1). One trace per question: its longest
trace that passed the quality stage.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from pydantic import Field

from nt_harness.components import Selector, Settings
from nt_harness.selection import Decisions, column

ERROR = "error"  # finish_reason prefix of a failed API request (nt_openai)


def trace_length(pool) -> np.ndarray:
    """Thinking length: tokens when the `length` annotator ran, else characters."""
    if "thinking_tokens" in pool.column_names:
        return column(pool, "thinking_tokens", fill=0.0)
    return pc.utf8_length(pc.fill_null(pool.column("thinking"), "")).to_numpy(zero_copy_only=False).astype(float)


def diverse_sample(domains: np.ndarray, lengths: np.ndarray, rows: np.ndarray, k: int, rng) -> list[int]:
    """s1K Algorithm 1: repeat { domain uniformly; a row in it with weight 2^-rank by length } k times."""
    by_domain = {}
    for d in np.unique(domains[rows]):
        members = rows[domains[rows] == d]
        by_domain[d] = list(members[np.argsort(-lengths[members], kind="stable")])  # rank 0: longest
    chosen = []
    while len(chosen) < k and by_domain:
        d = list(by_domain)[rng.integers(len(by_domain))]
        members = by_domain[d]
        weights = np.exp2(-np.arange(len(members), dtype=float))
        pick = rng.choice(len(members), p=weights / weights.sum())
        chosen.append(int(members.pop(pick)))
        if not members:
            del by_domain[d]
    return chosen


class S1KSelector(Selector):
    name = "s1k"
    version = "1"
    description = "s1K: quality, difficulty (no solver answers it), diversity (uniform domain, 2^-rank by length)"

    class Settings(Settings):
        solver_columns: list[str] = Field(
            default_factory=lambda: ["system1_correct", "solver1_passes", "solver2_passes"],
            description="columns that say a solver got the question right (> 0); those present are used")
        domain_column: str = "topic"
        fill: bool = True  # equal budgets: top up with questions a solver answered, same sampling (recorded)

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d = Decisions(pool)
        n = pool.num_rows
        finish = pc.fill_null(pool.column("finish_reason"), "").to_numpy(zero_copy_only=False)
        error = np.char.startswith(finish.astype(str), ERROR) if n else np.zeros(0, dtype=bool)
        empty_thinking = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(pool.column("thinking"), "")), "")
        empty_answer = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(pool.column("answer"), "")), "")
        d.drop(error, "dropped: quality (API error)")
        d.drop(~column(pool, "complete"), "dropped: quality (incomplete)")
        d.drop(empty_thinking.to_numpy(zero_copy_only=False), "dropped: quality (empty thinking)")
        d.drop(empty_answer.to_numpy(zero_copy_only=False), "dropped: quality (empty answer)")
        good = (~error & column(pool, "complete") & ~empty_thinking.to_numpy(zero_copy_only=False)
                & ~empty_answer.to_numpy(zero_copy_only=False))

        qids = pool.column("question_id").to_numpy(zero_copy_only=False)
        uniq, inverse = np.unique(qids, return_inverse=True)
        used = [c for c in self.settings.solver_columns if c in pool.column_names]
        solved_trace = np.zeros(n, dtype=bool)
        for c in used:
            solved_trace |= column(pool, c) > 0  # null (ungraded) counts as not solved
        solved_question = np.zeros(len(uniq), dtype=bool)
        np.logical_or.at(solved_question, inverse, solved_trace)
        solved = solved_question[inverse]  # a question is easy when any solver got it right in any row
        d.drop(good & solved, "dropped: easy (a solver answers it)")
        ctx.stats["solver_columns"] = used

        lengths = trace_length(pool)
        domains = (pool.column(self.settings.domain_column).to_numpy(zero_copy_only=False).astype(str)
                   if self.settings.domain_column in pool.column_names else np.full(n, ""))
        longest = self.longest_per_question(qids, np.flatnonzero(good), lengths)
        d.drop(good & ~solved & ~np.isin(np.arange(n), longest), "dropped: not the longest trace of its question")
        hard = longest[~solved[longest]]
        d.keep(diverse_sample(domains, lengths, hard, budget, rng), "kept: hard, diverse", budget)
        if self.settings.fill and d.n_kept < budget:
            easy = longest[solved[longest]]
            ctx.stats["filled"] = d.keep(diverse_sample(domains, lengths, easy, budget - d.n_kept, rng),
                                         "kept: fill (a solver answers it)", budget)
        ctx.stats["domains"] = len(set(domains[hard])) if len(hard) else 0
        return d.table()

    @staticmethod
    def longest_per_question(qids, rows, lengths) -> np.ndarray:
        order = rows[np.lexsort((rows, -lengths[rows]))]
        _, first = np.unique(qids[order], return_index=True)
        return np.sort(order[first])
