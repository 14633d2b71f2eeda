"""Statistics of a benchmark over matched runs: mean and t-interval, paired t-test, a verdict on a claim.

Pure functions of lists of numbers (scipy for the t distribution), used by the toy recipe
benchmark (`benchmarks/toy_recipes.py`) and tested on their own (tests/test_benchmark_statistics.py).
A row of results is a dict with a "method", the run it belongs to ("concept", "seed") and one
value per metric.
"""

from __future__ import annotations

import math
import statistics

from scipy import stats

ALPHA = 0.05


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its t confidence interval (n - 1 degrees of freedom); nan where undefined."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def paired_test(a: list[float], b: list[float]) -> dict:
    """Paired two-sided t-test of a - b over matched runs: mean difference, its 95% CI half-width, p, n.

    p is nan below two pairs; with no spread in the differences t is 0/0 or infinite, so p is 1
    (no difference) or 0 (the same difference in every run).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b)]
    mean, half = mean_ci(differences)
    if len(differences) < 2:
        p = math.nan
    elif max(differences) - min(differences) < 1e-12:
        p = 1.0 if abs(mean) < 1e-12 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"difference": mean, "ci95": half, "p": p, "n": len(differences)}


def verdict(difference: float, p: float, alpha: float = ALPHA) -> str:
    """On a claim that the first of a pair scores higher: agrees / disagrees (significant that way / the other way),
    else cannot tell."""
    if not p < alpha:  # also nan: too few pairs
        return "cannot tell"
    return "agrees" if difference > 0 else "disagrees"


def paired_values(rows: list[dict], a: str, b: str, metric: str) -> tuple[list[float], list[float]]:
    """`metric` of methods `a` and `b` over the (concept, seed) runs both have, in one order."""
    x, y = _by_run(rows, a, metric), _by_run(rows, b, metric)
    common = sorted(x.keys() & y.keys())
    return [x[k] for k in common], [y[k] for k in common]


def _by_run(rows: list[dict], method: str, metric: str) -> dict:
    return {(r["concept"], r["seed"]): r[metric] for r in rows if r["method"] == method and r.get(metric) is not None}
