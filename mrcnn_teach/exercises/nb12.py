"""Checks for the exercises of notebooks/12_ablations.ipynb (the paper's ablations, in miniature).

The statistics are those of benchmarks/ablations.py (`welch`, `paired`, `compare`), recomputed here
from their definitions, since the benchmarks are not part of the package.
"""

from __future__ import annotations

import math
import statistics

from . import need_function, refuse_names, run_check


# ------------------------------------------------------------------ Exercise 1: seeds needed

def _seeds_needed(difference: float, std_a: float, std_b: float, k: float = 2.0) -> int:
    """The smallest n with |difference| > k * sqrt(std_a^2/n + std_b^2/n)."""
    return math.floor(k**2 * (std_a**2 + std_b**2) / difference**2) + 1


# (difference, std_a, std_b, k), in AP points; none on a boundary, where round-off could decide.
# The first two are the notebook's question (a -2% change on a 42.7 baseline; the baseline's and the
# class-agnostic runs' spreads), then unequal spreads, other k.
SEEDS_CASES = [(-0.845, 0.784, 0.784, 2.0), (-0.845, 2.99, 2.99, 2.0), (-6.5, 0.78, 0.3, 2.0),
               (2.6, 0.78, 3.0, 2.0), (1.1, 1.0, 1.0, 3.0)]
SEEDS_HIDDEN = [(0.37, 0.21, 0.9, 2.0), (-12.0, 6.8, 0.8, 2.5), (0.02, 0.011, 0.005, 1.96), (4.0, 0.5, 0.5, 2.0)]


def check_seeds_needed(my_seeds_needed, hidden=False) -> bool:
    """my_seeds_needed(difference, std_a, std_b, k) -> the smallest number of seeds per variant n with
    |difference| > k * SE, SE = sqrt(std_a^2 / n + std_b^2 / n)."""

    def compare():
        need_function(my_seeds_needed)
        for difference, std_a, std_b, k in (SEEDS_HIDDEN if hidden else SEEDS_CASES):
            expected = _seeds_needed(difference, std_a, std_b, k)
            got = my_seeds_needed(difference, std_a, std_b, k)
            assert got is not None, "your function returned None"
            assert float(got) == int(got), f"the number of seeds is a whole number, got {got!r}"
            assert int(got) == expected, (f"difference {difference}, std_a {std_a}, std_b {std_b}, k {k}: expected "
                                          f"{expected} seeds, got {got}")

    return run_check("seeds needed", compare, hidden=hidden)


# ------------------------------------------------------------------ Exercise 2: Welch (debug)

def _welch(a, b) -> tuple[float, float]:
    se2_a, se2_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / (len(a) - 1) + se2_b**2 / (len(b) - 1))
    return t, df


# mask AP (%) per seed of benchmarks/results/ablations.json: softmax and baseline, roi_pool and baseline
WELCH_CASES = [([14.30, 6.68, 0.82], [41.87, 43.43, 42.78]), ([36.48, 36.29, 35.95], [41.87, 43.43, 42.78]),
               ([1.0, 2.0, 3.0], [5.0, 6.0, 7.0])]
WELCH_HIDDEN = [([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0, 11.0]), ([0.5, 0.9], [0.1, 0.2, 0.25, 0.3, 0.2, 0.4]),
                ([10.0, 12.0, 11.5, 9.0, 13.0, 10.5, 12.5], [3.0, 20.0, 8.0])]


def check_welch(my_welch, hidden=False) -> bool:
    """my_welch(a, b) -> (t, df) of Welch's test of mean(a) - mean(b)."""

    def compare():
        need_function(my_welch)
        refuse_names(my_welch, {"welch", "ttest_ind", "compare", "comparisons", "scipy", "buggy_welch"},
                     "fix the formula in your own code (the check compares with Welch-Satterthwaite)")
        for a, b in (WELCH_HIDDEN if hidden else WELCH_CASES):
            t, df = _welch(a, b)
            got = my_welch(list(a), list(b))
            assert isinstance(got, (tuple, list)) and len(got) == 2, "return two numbers, (t, df)"
            assert abs(float(got[0]) - t) < 1e-6 * max(1.0, abs(t)), f"a = {a}, b = {b}: t should be {t:.4f}, got {float(got[0]):.4f}"
            assert abs(float(got[1]) - df) < 1e-6 * df, (f"a = {a}, b = {b}: df should be {df:.4f}, got {float(got[1]):.4f}"
                                                       " (check each term of the denominator)")

    return run_check("Welch's t and degrees of freedom", compare, hidden=hidden)


# ------------------------------------------------------------------ Exercise 3: paired vs unpaired

def _paired_vs_unpaired(baseline, variant) -> tuple[float, float, float]:
    n = len(baseline)
    se_unpaired = math.sqrt(statistics.variance(baseline) / n + statistics.variance(variant) / n)
    se_paired = statistics.stdev([v - b for v, b in zip(variant, baseline)]) / math.sqrt(n)
    return se_unpaired, se_paired, statistics.correlation(baseline, variant)


# mask AP75 and AP (%) per seed 0, 1, 2 of the benchmark: (baseline, variant)
PAIRED_CASES = [([49.43, 50.65, 48.40], [37.23, 39.49, 36.29]),  # roi_pool, AP75: r close to 1
                ([41.87, 43.43, 42.78], [14.30, 6.68, 0.82])]  # softmax, AP: r < 0
PAIRED_HIDDEN = [([0.1, 0.4, 0.3, 0.8], [0.2, 0.45, 0.5, 0.7]), ([5.0, 7.0, 6.0, 9.0, 4.0], [1.0, 8.0, 2.0, 3.0, 9.0]),
                 ([1.0, 2.0], [3.0, 3.5])]


def check_paired_vs_unpaired(my_paired_vs_unpaired, hidden=False) -> bool:
    """my_paired_vs_unpaired(baseline, variant) -> (SE of the difference of means, SE of the mean per-seed
    difference, correlation of the two lists)."""

    def compare():
        need_function(my_paired_vs_unpaired)
        refuse_names(my_paired_vs_unpaired, {"paired", "welch", "compare", "comparisons", "scipy", "ttest_rel"},
                     "compute the two standard errors yourself, from the seeds' values")
        for baseline, variant in (PAIRED_HIDDEN if hidden else PAIRED_CASES):
            expected = _paired_vs_unpaired(baseline, variant)
            got = my_paired_vs_unpaired(list(baseline), list(variant))
            assert isinstance(got, (tuple, list)) and len(got) == 3, "return three numbers, (se_unpaired, se_paired, r)"
            for name, e, g in zip(("se_unpaired", "se_paired", "r"), expected, got):
                assert abs(float(g) - e) < 1e-6 * max(1.0, abs(e)), (f"baseline {baseline}, variant {variant}: {name} "
                                                                     f"should be {e:.4f}, got {float(g):.4f}")

    return run_check("paired vs unpaired standard errors", compare, hidden=hidden)
