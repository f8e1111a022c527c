"""LIMO's selection: keep questions that are hard yet solvable, score each correct chain, keep the best
chain per question, then the top questions to the budget.

Chain score (arXiv 2502.03387 §3.2, "Reasoning chain construction"): 30 % elaborated reasoning
(length), 20 % self-verification words, 25 % exploratory (tentative) words, 25 % adaptive granularity
(connectives); word counts are normalised by text length.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nt_harness.components import Selector, Settings
from nt_harness.selection import Decisions, column

WEIGHTS = {"length": 0.30, "verification": 0.20, "tentative": 0.25, "connective": 0.25}  # LIMO §3.2
WORDS = {
    "verification": ["check", "verify", "verified", "confirm", "double-check", "make sure", "validate"],
    "tentative": ["perhaps", "might", "maybe", "possibly", "alternatively", "wait", "suppose", "could be"],
    "connective": ["therefore", "since", "thus", "because", "hence", "so that", "consequently", "which means"],
}


def word_rates(texts: pa.Array) -> dict[str, np.ndarray]:
    """Per text: occurrences of each word family per word of text, computed column-wise."""
    lower = pc.utf8_lower(texts)
    n_words = pc.add(pc.count_substring_regex(lower, r"\S+"), 1).to_numpy(zero_copy_only=False).astype(float)
    rates = {}
    for family, words in WORDS.items():
        pattern = r"\b(?:" + "|".join(w.replace(" ", r"\s+") for w in words) + r")\b"
        rates[family] = pc.count_substring_regex(lower, pattern).to_numpy(zero_copy_only=False) / n_words
    rates["length"] = n_words
    return rates


def chain_scores(texts: pa.Array) -> np.ndarray:
    """Weighted sum of features, each scaled to [0, 1] by its maximum over the candidates."""
    rates = word_rates(texts)
    score = np.zeros(len(texts))
    for feature, weight in WEIGHTS.items():
        top = rates[feature].max() if len(texts) else 0.0
        score += weight * (rates[feature] / top if top > 0 else 0.0)
    return score


def best_per_question(qids: np.ndarray, rows: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The highest-scoring row of each question (ties: the earlier row), best questions first."""
    order = rows[np.lexsort((rows, -score[rows]))]
    _, first = np.unique(qids[order], return_index=True)
    return order[np.sort(first)]


class LimoSelector(Selector):
    name = "limo"
    description = "LIMO difficulty filter on solver pass rates + chain scoring"
    requires = ("correct",)

    class Settings(Settings):
        # LIMO keeps problems a strong solver gets right only 1-3 times in 32 (§3.1). Here the pass rate
        # comes from the teacher's own n samples; the bounds are settings so any solver budget fits.
        min_pass_rate: float = 0.0  # exclusive: at least one correct chain is needed to train on
        max_pass_rate: float = 0.75  # inclusive: questions solved more often are "too easy"
        fill: bool = True  # equal-budget comparisons: top up with the best remaining chains (recorded)
        # With solver annotators (nt_limo.solvers) the two-stage filter of §3.1 replaces the pass-rate one:
        # drop what solver 1 solves (more than solver1_max_passes times in its attempts), keep what solver 2
        # solves solver2_min_passes..solver2_max_passes times (LIMO: 1-3 out of 32).
        solver1_max_passes: int = 0
        solver2_min_passes: int = 1
        solver2_max_passes: int = 3

    def select(self, pool, budget, seed, ctx):
        d = Decisions(pool)
        complete = column(pool, "complete")
        correct = column(pool, "correct", fill=0.0) >= 1.0
        qids = pool.column("question_id").to_numpy(zero_copy_only=False)
        uniq, inverse = np.unique(qids, return_inverse=True)
        pass_rate = (np.bincount(inverse, weights=correct) / np.bincount(inverse))[inverse]
        d.drop(~complete, "dropped: incomplete")
        d.drop(~correct, "dropped: wrong answer")
        if {"solver1_passes", "solver2_passes"} & set(pool.column_names):
            too_easy, too_hard = self.solver_filter(pool, d)
        else:
            too_easy = pass_rate > self.settings.max_pass_rate
            too_hard = ~(pass_rate > self.settings.min_pass_rate)
            d.drop(too_easy, "dropped: too easy")
        score = np.full(len(qids), -np.inf)
        rows = np.flatnonzero(complete)
        texts = pc.binary_join_element_wise(pool.column("thinking"), pool.column("answer"), "\n").take(rows)
        score[rows] = chain_scores(texts)
        cand = complete & correct
        best = best_per_question(qids, np.flatnonzero(cand), score)
        d.drop(cand & ~np.isin(np.arange(len(qids)), best), "dropped: not the best chain of its question")
        hard = best[~too_hard[best] & ~too_easy[best]]
        d.keep(hard, "kept: hard and solvable, top chain score", budget)
        if self.settings.fill and d.n_kept < budget:
            # equal budgets: best chains of easy questions, then (pools with too few verified chains)
            # the best complete but unverified chain of the questions left; each recorded as such
            solvers = {"solver1_passes", "solver2_passes"} & set(pool.column_names)
            filtered = "a filtered-out" if solvers else "an easy"
            filled = d.keep(best, f"kept: fill (best chain of {filtered} question)", budget)
            done = np.isin(qids, qids[d.kept])
            rest = best_per_question(qids, np.flatnonzero(complete & ~done), score)
            filled += d.keep(rest, "kept: fill (best unverified chain)", budget)
            ctx.stats["filled"] = filled
        ctx.stats["questions"] = len(uniq)
        return d.table()

    def solver_filter(self, pool, d: Decisions) -> tuple[np.ndarray, np.ndarray]:
        """LIMO §3.1's two stages on the solver columns; a null (ungraded) count filters nothing."""
        s = self.settings
        too_easy = np.zeros(pool.num_rows, dtype=bool)
        too_hard = np.zeros(pool.num_rows, dtype=bool)
        if "solver1_passes" in pool.column_names:
            too_easy |= column(pool, "solver1_passes") > s.solver1_max_passes
            d.drop(too_easy, "dropped: too easy (solver 1 solves it)")
        if "solver2_passes" in pool.column_names:
            passes = column(pool, "solver2_passes")
            over, under = passes > s.solver2_max_passes, passes < s.solver2_min_passes
            d.drop(over & ~too_easy, "dropped: too easy (solver 2 solves it too often)")
            d.drop(under & ~too_easy, "dropped: too hard (solver 2 solves it too rarely)")
            too_easy |= over
            too_hard |= under
        return too_easy, too_hard
