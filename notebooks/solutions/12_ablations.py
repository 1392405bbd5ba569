"""Worked solutions of the exercises of 12_ablations.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math
import statistics

from mrcnn_teach.exercises.nb12 import check_paired_vs_unpaired, check_seeds_needed, check_welch


def my_seeds_needed(difference, std_a, std_b, k=2.0):
    """Smallest n with |d| > k * SE(n), SE(n) = sqrt(std_a^2 / n + std_b^2 / n) = sqrt((std_a^2 + std_b^2) / n).

    |d| > k sqrt((s_a^2 + s_b^2) / n)  <=>  n > k^2 (s_a^2 + s_b^2) / d^2, so n is the next whole number above.
    n grows with the square of the spread: the class-agnostic runs spread about 4x as much as the
    baseline's, so a budget computed from the baseline's spread is about 15x too small. The honest budget
    uses each variant's own spread (and, with 3 seeds, treats even that as uncertain).
    """
    return math.floor(k**2 * (std_a**2 + std_b**2) / difference**2) + 1


def my_welch(a, b):
    """Welch's t and the Welch-Satterthwaite df. The bug: each term of the denominator divides by n, not n - 1.

    That makes df 1.5 times too large for 3 seeds each (softmax vs baseline: about 3.1 instead of 2.05), so
    the |t| needed at 5% drops from about 4.2 to about 3.1: the buggy test is too lenient.
    """
    n_a, n_b = len(a), len(b)
    se2_a = statistics.variance(a) / n_a
    se2_b = statistics.variance(b) / n_b
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / (n_a - 1) + se2_b**2 / (n_b - 1))
    return t, df


def my_paired_vs_unpaired(baseline, variant):
    """(SE of the difference of the means, SE of the mean per-seed difference, r over the seeds).

    s_d^2 = s_b^2 + s_v^2 - 2 r s_b s_v, so SE_paired^2 = SE_unpaired^2 - 2 r s_b s_v / n: pairing pays where
    r > 0 (roi_pool's AP75, r about +0.98: a seed that is good for the baseline is good for RoIPool too) and
    costs where r < 0 (softmax's AP, r about -0.6: its runs vary for reasons of their own).
    """
    n = len(baseline)
    se_unpaired = math.sqrt(statistics.variance(baseline) / n + statistics.variance(variant) / n)
    se_paired = statistics.stdev([v - b for v, b in zip(variant, baseline)]) / math.sqrt(n)
    return se_unpaired, se_paired, statistics.correlation(baseline, variant)


CHECKS = [
    (check_seeds_needed, my_seeds_needed),
    (check_welch, my_welch),
    (check_paired_vs_unpaired, my_paired_vs_unpaired),
]


def _seeds_one_mean(difference, std_a, std_b, k=2.0):
    return math.floor(k**2 * std_a**2 / difference**2) + 1  # forgets that the other mean is noisy too


def _seeds_one_std(difference, std_a, std_b, k=2.0):
    return math.floor(2 * k**2 * std_a**2 / difference**2) + 1  # assumes both spread like the first


def _welch_buggy(a, b):
    se2_a, se2_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(se2_a + se2_b)
    return t, (se2_a + se2_b) ** 2 / (se2_a**2 / len(a) + se2_b**2 / len(b))  # the notebook's bug, unfixed


def _welch_pooled_df(a, b):
    t, _ = my_welch(a, b)
    return t, len(a) + len(b) - 2  # the equal-variance test's df


def _paired_se_without_sqrt_n(baseline, variant):
    se_u, _, r = my_paired_vs_unpaired(baseline, variant)
    return se_u, statistics.stdev([v - b for v, b in zip(variant, baseline)]), r  # the std, not the SE


def _unpaired_se_added(baseline, variant):
    n = len(baseline)
    _, se_p, r = my_paired_vs_unpaired(baseline, variant)
    return statistics.stdev(baseline) / math.sqrt(n) + statistics.stdev(variant) / math.sqrt(n), se_p, r  # SEs added


WRONG = [
    (check_seeds_needed, _seeds_one_mean),
    (check_seeds_needed, _seeds_one_std),
    (check_welch, _welch_buggy),
    (check_welch, _welch_pooled_df),
    (check_paired_vs_unpaired, _paired_se_without_sqrt_n),
    (check_paired_vs_unpaired, _unpaired_se_added),
]
