"""How sure a leaderboard is: bootstrap confidence intervals and paired tests on the same questions,
with scipy's implementations."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_ci(values, confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean (None when there is too little data to say)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_test(a: dict, b: dict, seed: int = 0) -> dict | None:
    """Compare per-question values of two runs on the questions both answered.

    Binary outcomes: exact McNemar test (a binomial test on the discordant pairs). Otherwise: a paired
    permutation test of the mean difference. Returns n, mean difference (b - a), p-value, test name.
    """
    common = sorted(set(a) & set(b))
    pairs = [(a[q], b[q]) for q in common if a[q] is not None and b[q] is not None]
    if len(pairs) < 2:
        return None
    x, y = np.array(pairs, dtype=float).T
    diff = float(np.mean(y - x))
    if set(np.unique(np.concatenate([x, y]))) <= {0.0, 1.0}:
        only_b, only_a = int(np.sum((y == 1) & (x == 0))), int(np.sum((y == 0) & (x == 1)))
        p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)
        return {"n": len(pairs), "diff": diff, "p": p, "test": "McNemar (exact)"}
    if np.all(x == y):
        return {"n": len(pairs), "diff": 0.0, "p": 1.0, "test": "paired permutation"}
    res = stats.permutation_test((x, y), lambda u, v: np.mean(v - u), permutation_type="samples",
                                 n_resamples=9999, random_state=np.random.default_rng(seed))
    return {"n": len(pairs), "diff": diff, "p": float(res.pvalue), "test": "paired permutation"}
