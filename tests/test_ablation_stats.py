"""The statistics of benchmarks/ablations.py (paired and Welch t-tests), against published table values.

scipy is not a dependency, so the reference values are hand-computed or from Student's t table.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "ablations.py"
_spec = importlib.util.spec_from_file_location("ablations", _path)
ablations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablations)


@pytest.mark.parametrize("df, t975", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_critical_matches_the_t_table(df, t975):
    assert ablations.t_critical(df) == pytest.approx(t975, abs=1e-3)
    assert ablations.t_p_value(t975, df) == pytest.approx(0.05, abs=1e-4)


def test_t_p_value_exact_cases():
    assert ablations.t_p_value(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| > 1) = 1/2
    assert ablations.t_p_value(0.0, 3) == pytest.approx(1.0)
    # df = 2 has a closed form: p = 1 - |t| / sqrt(2 + t^2); a fractional df lies between its neighbours
    assert ablations.t_p_value(3.0, 2) == pytest.approx(1 - 3 / math.sqrt(11))
    assert ablations.t_p_value(3.0, 2) > ablations.t_p_value(3.0, 2.5) > ablations.t_p_value(3.0, 3)
    with pytest.raises(ValueError, match="df must be > 0"):
        ablations.t_p_value(1.0, 0)


def test_welch_by_hand():
    w = ablations.welch([1, 2, 3, 4], [2, 4, 6, 9, 11])
    # s_a^2/n_a = (5/3)/4 = 0.41667, s_b^2/n_b = 13.3/5 = 2.66
    assert w["delta"] == pytest.approx(-3.9)
    assert w["se"] == pytest.approx(math.sqrt(5 / 12 + 2.66))
    assert w["df"] == pytest.approx((5 / 12 + 2.66) ** 2 / ((5 / 12) ** 2 / 3 + 2.66**2 / 4))  # 5.18
    assert 3 < w["df"] < 7  # between min(n) - 1 and n_a + n_b - 2
    # equal variances and sizes: Welch's df is the pooled test's 2n - 2
    assert ablations.welch([1, 2, 3], [5, 6, 7])["df"] == pytest.approx(4)
    with pytest.raises(ValueError, match="at least 2"):
        ablations.welch([1.0], [2.0, 3.0])


def test_paired_by_hand_and_the_correlation_identity():
    a, b = [0.50, 0.47, 0.61], [0.42, 0.43, 0.44]
    p = ablations.paired(a, b)
    assert p["diffs"] == pytest.approx([0.08, 0.04, 0.17])
    assert p["std"] == pytest.approx(math.sqrt(((0.08 - 0.29 / 3) ** 2 + (0.04 - 0.29 / 3) ** 2 + (0.17 - 0.29 / 3) ** 2) / 2))
    assert p["se"] == pytest.approx(p["std"] / math.sqrt(3)) and p["df"] == 2
    runs = [{"variant": v, "seed": s, "mask": {"AP": x}} for v, xs in (("baseline", b), ("softmax", a))
            for s, x in enumerate(xs)]
    c = ablations.compare(runs, "softmax", "AP", "mask")
    s_b, s_v = ablations.statistics.stdev(b), ablations.statistics.stdev(a)
    # SE_paired^2 = SE_welch^2 - 2 corr s_b s_v / n
    assert c["paired"]["se"] ** 2 == pytest.approx(c["welch"]["se"] ** 2 - 2 * c["corr"] * s_b * s_v / 3)


def test_the_saved_results_carry_the_comparisons():
    results = ablations.load(_path.parent / "results" / "ablations.json")
    fresh = ablations.comparisons(results["runs"])
    assert json.loads(json.dumps(fresh)) == results["comparisons"]  # --summarise was run on these runs
    assert set(results["comparisons"]) == {"softmax", "roi_pool", "class_agnostic"}


def test_load_names_what_is_missing(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"command": "x", "runs": []}))
    with pytest.raises(ValueError, match=r"missing \[.*'summary'.*'comparisons'"):
        ablations.load(path)
