from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from conveyor.data.drift import (
    CATEGORICAL_METHODS,
    NUMERIC_METHODS,
    chi2_table,
    column_drift,
    drift_report,
)
from conveyor.exceptions import DataError

GRADES = list("ABCDEFG")


def _frame(rows: int, seed: int, *, shift: float = 0.0, grade_p: list[float] | None = None):
    """8 numeric columns of different shapes and 3 categorical ones (str, bool, category)."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for i in range(4):
        data[f"normal_{i}"] = rng.normal(10.0 * i + shift, 1.0 + i, rows)
    data["lognormal"] = rng.lognormal(0.0, 1.0, rows)
    data["uniform"] = rng.uniform(0.0, 1.0, rows)
    data["count"] = rng.poisson(3.0, rows)  # many ties
    data["rounded"] = np.round(rng.normal(0.0, 1.0, rows), 1)
    p = grade_p or [0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02]
    data["grade"] = pd.array(rng.choice(GRADES, rows, p=p), dtype="str")
    data["flag"] = rng.random(rows) < 0.3
    data["term"] = pd.Categorical(rng.choice(["36m", "60m"], rows))
    return pd.DataFrame(data)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# -- exactness against scipy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n1", "n2", "ties", "how"),
    [
        (8, 13, False, "exact"),
        (100, 100, True, "exact"),
        (700, 2300, True, "exact"),
        (3000, 7000, False, "exact"),
        (12_000, 30_000, False, "asymp"),
        (50_000, 40_000, True, "asymp"),
    ],
)
def test_ks_statistic_and_p_value_equal_scipy(n1: int, n2: int, ties: bool, how: str) -> None:
    rng = np.random.default_rng(n1 + n2)
    a, b = rng.normal(0.0, 1.0, n1), rng.normal(0.04, 1.1, n2)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)

    ks = column_drift(a, b, methods="ks")["stats"]["ks"]
    expected = stats.ks_2samp(a, b)

    assert _rel(ks["statistic"], float(expected.statistic)) < 1e-9
    assert _rel(ks["p_value"], float(expected.pvalue)) < 1e-9
    assert ks["p_method"] == how


@pytest.mark.parametrize(
    ("n1", "n2", "ties"), [(5, 9, False), (1000, 1000, True), (20_000, 7_000, False)]
)
def test_wasserstein_equals_scipy(n1: int, n2: int, ties: bool) -> None:
    rng = np.random.default_rng(n1)
    a, b = rng.gamma(2.0, 3.0, n1), rng.gamma(2.2, 3.0, n2)
    if ties:
        a, b = np.round(a), np.round(b)

    w = column_drift(a, b, methods="wasserstein")["stats"]["wasserstein"]

    assert _rel(w["statistic"], stats.wasserstein_distance(a, b)) < 1e-9
    assert _rel(w["normalised"], w["statistic"] / np.std(a)) < 1e-12


def test_chi2_equals_chi2_contingency_on_the_merged_table() -> None:
    # 5000 vs 2000 rows: a column needs 5 * 7000 / 2000 = 17.5 rows to be tested alone.
    labels = ["a", "b", "c", "d", "e", "f"]
    ref_counts = [2000, 1500, 1000, 480, 12, 8]
    cur_counts = [700, 700, 300, 290, 6, 4]
    ref = pd.Series(np.repeat(labels, ref_counts))
    cur = pd.Series(np.repeat(labels, cur_counts))

    chi2 = column_drift(ref, cur, methods="chi2")["stats"]["chi2"]
    table, merged = chi2_table(ref_counts, cur_counts)
    expected = stats.chi2_contingency(table, correction=False)

    # "e" (18 rows) is tested alone; "f" (12) is rare, and "other" alone is too small, so the
    # smallest kept category, "e", joins it.
    assert table.tolist() == [[2000, 1500, 1000, 480, 20], [700, 700, 300, 290, 10]]
    assert merged == 2 and chi2["merged"] == 2 and chi2["dof"] == expected.dof == 4
    assert _rel(chi2["statistic"], float(expected.statistic)) < 1e-9
    assert _rel(chi2["p_value"], float(expected.pvalue)) < 1e-9


def test_chi2_without_rare_categories_is_chi2_contingency_of_the_crosstab() -> None:
    rng = np.random.default_rng(5)
    ref = pd.Series(rng.choice(GRADES, 4000, p=[0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02]))
    cur = pd.Series(rng.choice(GRADES, 3000, p=[0.25, 0.25, 0.2, 0.12, 0.08, 0.06, 0.04]))
    crosstab = pd.concat(
        [ref.value_counts(), cur.value_counts()], axis=1, keys=["ref", "cur"]
    ).to_numpy()

    chi2 = column_drift(ref, cur, methods="chi2")["stats"]["chi2"]
    expected = stats.chi2_contingency(crosstab.T, correction=False)

    assert chi2["merged"] == 0 and chi2["dof"] == 6
    assert _rel(chi2["statistic"], float(expected.statistic)) < 1e-9
    assert _rel(chi2["p_value"], float(expected.pvalue)) < 1e-9


def test_jensenshannon_and_psi_of_category_shares() -> None:
    ref = pd.Series(["x"] * 50 + ["y"] * 30 + ["z"] * 20)
    cur = pd.Series(["x"] * 20 + ["y"] * 30 + ["w"] * 50)  # "z" gone, "w" new

    result = column_drift(ref, cur, methods=["jensenshannon", "psi"])
    p = np.array([0.5, 0.3, 0.2, 0.0])  # x, y, z, w
    q = np.array([0.2, 0.3, 0.0, 0.5])
    e, a = np.maximum(p, 1e-4), np.maximum(q, 1e-4)

    js = result["stats"]["jensenshannon"]["statistic"]
    assert _rel(js, float(jensenshannon(p, q, base=2))) < 1e-9
    assert _rel(result["stats"]["psi"]["statistic"], float(np.sum((a - e) * np.log(a / e)))) < 1e-9
    assert result["categories"] == {"reference": 3, "current": 3, "new": ["w"], "gone": ["z"]}
    assert result["drifted"] is True and result["method"] == "jensenshannon"


def test_numeric_psi_uses_reference_quantile_bins() -> None:
    ref = np.arange(1000, dtype=float)  # deciles: 100 values each
    cur = np.concatenate([np.arange(500, dtype=float), np.full(500, 2000.0)])

    psi = column_drift(ref, cur, methods="psi", bins=10)["stats"]["psi"]

    expected_shares = np.full(10, 0.1)
    actual_shares = np.array([0.1] * 5 + [1e-4] * 4 + [0.5])  # the top bin is open-ended
    expected = float(
        np.sum((actual_shares - expected_shares) * np.log(actual_shares / expected_shares))
    )
    assert psi["bins"] == 10
    assert _rel(psi["statistic"], expected) < 1e-9
    assert psi["drifted"] is True


# -- verdicts ----------------------------------------------------------------------------------


def test_two_samples_of_one_distribution_do_not_drift() -> None:
    report = drift_report(_frame(20_000, seed=1), _frame(15_000, seed=2))

    assert report["drifted"] == []
    assert report["drifted_overall"] is False
    kinds = {name: entry["kind"] for name, entry in report["columns"].items()}
    assert kinds["count"] == "numeric" and kinds["grade"] == "categorical"
    assert kinds["flag"] == "categorical" and kinds["term"] == "categorical"
    json.dumps(report, allow_nan=False)  # JSON-safe, no NaN or numpy scalars
    assert all(
        type(e["stats"]["ks" if e["kind"] == "numeric" else "chi2"]["p_value"]) is float
        for e in report["columns"].values()
    )


def test_a_clear_shift_and_changed_category_shares_drift() -> None:
    reference = _frame(20_000, seed=1)
    current = _frame(20_000, seed=2, shift=1.5, grade_p=[0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1])

    report = drift_report(reference, current)

    assert report["drifted"] == ["normal_0", "normal_1", "normal_2", "normal_3", "grade"]
    grade = report["columns"]["grade"]
    assert grade["method"] == "jensenshannon"
    assert grade["stats"]["chi2"]["p_adjusted"] < 1e-100
    assert report["columns"]["normal_0"]["method"] == "wasserstein"
    assert report["share_drifted"] == pytest.approx(5 / 11)
    assert report["drifted_overall"] is False  # under the default share of 0.5
    assert drift_report(reference, current, drift_share=0.0)["drifted_overall"] is True


def test_a_tiny_shift_on_many_rows_is_significant_but_not_drift() -> None:
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(0.0, 1.0, 300_000), rng.normal(0.03, 1.0, 300_000)

    result = column_drift(ref, cur)

    assert result["stats"]["ks"]["drifted"] is True  # p far below 0.05
    assert result["stats"]["wasserstein"]["normalised"] < 0.1
    assert result["drifted"] is False and result["method"] == "wasserstein"
    assert column_drift(ref, cur, methods="ks")["drifted"] is True


def test_a_large_effect_on_few_rows_needs_significance() -> None:
    ref = pd.Series(["a", "b", "a", "b", "a", "b"])
    cur = pd.Series(["a", "a", "a", "a", "b", "a"])

    together = column_drift(ref, cur, methods=["chi2", "psi"])
    alone = column_drift(ref, cur, methods="psi")

    assert together["stats"]["psi"]["drifted"] is True
    assert together["stats"]["chi2"]["p_value"] > 0.05
    assert together["drifted"] is False and together["method"] == "chi2"
    assert alone["drifted"] is True and alone["method"] == "psi"


def test_multiple_testing_correction_changes_a_borderline_verdict() -> None:
    n = 2000
    base = stats.norm.ppf((np.arange(n) + 0.5) / n)
    reference = pd.DataFrame({f"x{i}": base for i in range(20)})
    current = reference.copy()
    current["x0"] = base + 0.12  # p = 0.0199: below 0.05, above 0.05 / 20
    effect_free = {"methods": {"numeric": "ks"}}

    verdicts = {
        correction: drift_report(reference, current, correction=correction, **effect_free)
        for correction in ("none", "bonferroni", "holm", "fdr_bh")
    }

    p = verdicts["none"]["columns"]["x0"]["stats"]["ks"]["p_value"]
    assert 0.05 / 20 < p < 0.05
    assert verdicts["none"]["drifted"] == ["x0"]
    for correction in ("bonferroni", "holm", "fdr_bh"):
        ks = verdicts[correction]["columns"]["x0"]["stats"]["ks"]
        assert ks["p_adjusted"] == pytest.approx(20 * p, rel=1e-12), correction
        assert verdicts[correction]["drifted"] == [], correction


def test_holm_and_benjamini_hochberg_adjust_step_by_step() -> None:
    n = 2000
    base = stats.norm.ppf((np.arange(n) + 0.5) / n)
    reference = pd.DataFrame({f"x{i}": base for i in range(5)})
    current = reference.copy()
    for name, delta in (("x0", 0.2), ("x1", 0.13), ("x2", 0.13)):
        current[name] = base + delta
    only_tests = {"methods": {"numeric": "ks"}}

    raw = drift_report(reference, current, correction="none", **only_tests)["columns"]
    holm = drift_report(reference, current, correction="holm", **only_tests)["columns"]
    bh = drift_report(reference, current, correction="fdr_bh", **only_tests)["columns"]

    p0, p1, p2 = (raw[f"x{i}"]["stats"]["ks"]["p_value"] for i in range(3))
    assert p0 < p1 == p2 < 1.0 and raw["x3"]["stats"]["ks"]["p_value"] == 1.0
    adjusted = [holm[f"x{i}"]["stats"]["ks"]["p_adjusted"] for i in range(5)]
    # Step-down: each adjusted p is at least the one before it (4 * p1 > 3 * p2).
    assert adjusted == pytest.approx([5 * p0, 4 * p1, 4 * p1, 1.0, 1.0], rel=1e-12)
    adjusted = [bh[f"x{i}"]["stats"]["ks"]["p_adjusted"] for i in range(5)]
    # Step-up: each adjusted p is at most the one after it (5 * p1 / 2 > 5 * p2 / 3).
    assert adjusted == pytest.approx([5 * p0, 5 * p2 / 3, 5 * p2 / 3, 1.0, 1.0], rel=1e-12)


# -- nulls, odd columns, bad input -------------------------------------------------------------


def test_nulls_are_reported_and_dropped_from_the_tests() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=3000), rng.normal(0.1, 1.0, 2000)
    ref, cur = a.copy(), pd.Series(b, dtype="Float64")
    ref[:300] = np.nan
    ref[300:310] = np.inf  # infinities are no measurement either
    cur[:1000] = pd.NA

    result = column_drift(ref, cur, methods=["ks", "wasserstein"])

    assert result["null_share"] == {"reference": 310 / 3000, "current": 0.5}
    expected = stats.ks_2samp(a[310:], b[1000:])
    assert _rel(result["stats"]["ks"]["p_value"], float(expected.pvalue)) < 1e-9
    w = stats.wasserstein_distance(a[310:], b[1000:])
    assert _rel(result["stats"]["wasserstein"]["statistic"], w) < 1e-9

    ref_grades = pd.Series(["a"] * 40 + [None] * 20 + ["b"] * 60)
    cur_grades = pd.Series(["b"] * 30 + ["a"] * 30 + [None] * 10)
    grades = column_drift(ref_grades, cur_grades)
    assert grades["null_share"] == {"reference": 20 / 120, "current": 10 / 70}
    assert grades["stats"]["chi2"]["p_value"] == pytest.approx(
        stats.chi2_contingency([[40, 60], [30, 30]], correction=False).pvalue, rel=1e-9
    )


def test_an_all_null_side_is_a_verdict_not_a_crash() -> None:
    reference = pd.DataFrame({"amount": [1.0, 2.0, 3.0], "grade": ["a", "b", None]})
    current = pd.DataFrame({"amount": [None, None, None], "grade": [None, None, None]})
    both = pd.DataFrame({"amount": [np.nan] * 3, "grade": [None] * 3})

    report = drift_report(reference, current)
    nothing = drift_report(both, current)

    amount = report["columns"]["amount"]
    assert amount["kind"] == "numeric"  # a column of None is not a type mismatch
    assert amount["drifted"] is True and amount["method"] == "null_share"
    assert amount["null_share"] == {"reference": 0.0, "current": 1.0}
    assert "every current value is missing" in amount["reason"]
    assert report["drifted"] == ["amount", "grade"]
    assert nothing["drifted"] == []
    assert nothing["columns"]["grade"]["reason"] == "every value is missing on both sides"
    json.dumps(report, allow_nan=False)


def test_constant_columns() -> None:
    same = column_drift(np.full(500, 7.0), np.full(300, 7.0), methods=list(NUMERIC_METHODS))
    moved = column_drift(np.full(500, 7.0), np.full(300, 8.0), methods=list(NUMERIC_METHODS))

    assert same["drifted"] is False
    assert {m: s["statistic"] for m, s in same["stats"].items()} == {
        "ks": 0.0,
        "wasserstein": 0.0,
        "psi": 0.0,
    }
    assert same["stats"]["ks"]["p_value"] == 1.0
    assert moved["drifted"] is True
    assert moved["stats"]["ks"]["statistic"] == 1.0
    # A constant reference has no spread: the distance is scaled by both sides' spread.
    pooled = np.concatenate([np.full(500, 7.0), np.full(300, 8.0)])
    assert moved["stats"]["wasserstein"]["normalised"] == pytest.approx(1.0 / np.std(pooled))


def test_empty_data_is_an_error() -> None:
    reference = pd.DataFrame({"amount": [1.0, 2.0]})

    with pytest.raises(DataError, match="current data has no rows"):
        drift_report(reference, reference.iloc[:0])
    with pytest.raises(DataError, match="reference data has no rows"):
        drift_report(reference.iloc[:0], reference)
    with pytest.raises(DataError, match="Column 'amount' has no rows in current"):
        column_drift(reference["amount"], reference["amount"].iloc[:0])


def test_a_missing_column_is_named() -> None:
    reference = pd.DataFrame({"amount": [1.0, 2.0], "grade": ["a", "b"]})
    current = pd.DataFrame({"amount": [1.0, 3.0], "term": [36, 60]})

    message = "^The current data has no column 'grade'; the reference data has no column 'term'"
    with pytest.raises(DataError, match=message + r"\. Pass columns="):
        drift_report(reference, current)
    with pytest.raises(DataError, match="reference data has no column 'term'"):
        drift_report(reference, current, columns=["amount", "term"])
    assert drift_report(reference, current, columns=["amount"])["drifted"] == []


def test_a_type_mismatch_is_drift_with_a_reason() -> None:
    reference = pd.DataFrame({"amount": [1.0, 2.0, 3.0], "grade": ["a", "b", "a"]})
    current = pd.DataFrame({"amount": ["1.0", "two", "3"], "grade": ["a", "b", "b"]})

    report = drift_report(reference, current)

    amount = report["columns"]["amount"]
    assert amount["kind"] == "mismatch" and amount["drifted"] is True
    assert amount["method"] == "type" and amount["stats"] == {}
    text = current["amount"].dtype  # str under pandas 3, object under pandas 2
    assert (
        amount["reason"] == f"numeric (float64) in the reference, categorical ({text}) in current"
    )
    assert report["drifted"] == ["amount"]
    json.dumps(report, allow_nan=False)


# -- choosing kinds and methods ----------------------------------------------------------------


def test_every_method_is_selectable_and_wrong_ones_are_named() -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"amount": rng.normal(size=500), "grade": rng.choice(GRADES, 500)})

    report = drift_report(
        frame,
        frame.iloc[::-1],
        methods={"numeric": list(NUMERIC_METHODS), "grade": list(CATEGORICAL_METHODS)},
    )

    assert list(report["columns"]["amount"]["stats"]) == list(NUMERIC_METHODS)
    assert list(report["columns"]["grade"]["stats"]) == list(CATEGORICAL_METHODS)
    assert report["drifted"] == []
    with pytest.raises(DataError, match="'ks' does not apply to categorical column 'grade'"):
        drift_report(frame, frame, methods={"grade": "ks"})
    with pytest.raises(DataError, match="'kolmogorov' does not apply to numeric column 'x'"):
        column_drift(frame["amount"], frame["amount"], name="x", methods="kolmogorov")
    with pytest.raises(DataError, match="methods names columns that are not compared: 'amt'"):
        drift_report(frame, frame, methods={"amt": "ks"})
    with pytest.raises(DataError, match="Unknown correction 'sidak'"):
        drift_report(frame, frame, correction="sidak")


def test_kinds_can_be_forced_and_few_distinct_integers_can_be_categories() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame(
        {"term": rng.choice([36, 60], 1000), "code": rng.integers(0, 99, 1000)}
    )
    current = pd.DataFrame({"term": rng.choice([36, 60], 800), "code": rng.integers(0, 99, 800)})

    default = drift_report(reference, current)
    few = drift_report(reference, current, categorical_int_max=10)
    forced = drift_report(reference, current, kinds={"code": "categorical"})

    assert default["columns"]["term"]["kind"] == "numeric"
    assert few["columns"]["term"]["kind"] == "categorical"
    assert few["columns"]["code"]["kind"] == "numeric"
    assert forced["columns"]["code"]["kind"] == "categorical"
    # A category dtype lists unused categories: they are no category of the data.
    term = pd.Series(pd.Categorical(reference["term"], categories=[12, 36, 60]))
    result = column_drift(term, current["term"].astype("category"))
    assert result["kind"] == "categorical"
    assert result["categories"] == {"reference": 2, "current": 2, "new": [], "gone": []}
    assert result["stats"]["chi2"]["dof"] == 1 and result["stats"]["chi2"]["merged"] == 0
    text = pd.Series(["a"], dtype="str").dtype  # str under pandas 3, object under pandas 2
    with pytest.raises(DataError, match=f"Column 'grade' holds {text} values in the reference"):
        column_drift(
            pd.Series(["a"], dtype="str"),
            pd.Series(["b"], dtype="str"),
            name="grade",
            kind="numeric",
        )


def test_datetimes_are_compared_as_numbers() -> None:
    start = pd.Timestamp("2024-01-01", tz="UTC")
    ref = pd.Series(pd.date_range(start, periods=1000, freq="h"))
    cur = pd.Series(pd.date_range(start + pd.Timedelta(days=30), periods=1000, freq="h"))

    result = column_drift(ref, cur)

    assert result["kind"] == "numeric"
    assert result["stats"]["ks"]["statistic"] == pytest.approx(0.72)
    assert result["drifted"] is True


def test_threads_give_the_same_report() -> None:
    reference, current = _frame(5000, seed=1), _frame(4000, seed=2, shift=0.5)

    assert drift_report(reference, current, workers=2) == drift_report(
        reference, current, workers=1
    )


def test_ks_and_wasserstein_on_a_million_values_with_ties_and_missing_values() -> None:
    """The monitor's shape: a 10,000-row reference against a million-row window, with ties
    within and across the sides, NaN and infinities (dropped before the statistics)."""
    rng = np.random.default_rng(16)
    a = np.round(rng.normal(0.0, 1.0, 10_000), 2)
    b = np.round(rng.normal(0.05, 1.0, 1_000_000), 2)
    a[::97], b[::89], b[5::1013], b[7::2027] = np.nan, np.nan, np.inf, -np.inf
    finite_a, finite_b = a[np.isfinite(a)], b[np.isfinite(b)]

    got = drift_report(
        pd.DataFrame({"x": a}), pd.DataFrame({"x": b}), methods={"x": ["ks", "wasserstein"]}
    )["columns"]["x"]

    expected = stats.ks_2samp(finite_a, finite_b)
    assert got["stats"]["ks"]["statistic"] == float(expected.statistic)
    assert _rel(got["stats"]["ks"]["p_value"], float(expected.pvalue)) < 1e-9
    w = stats.wasserstein_distance(finite_a, finite_b)
    assert _rel(got["stats"]["wasserstein"]["statistic"], w) < 1e-12
    assert got["null_share"]["current"] == (len(b) - len(finite_b)) / len(b)
