"""Small counts in categorical drift: a binary column with a rare class is tested exactly.

Merging every category under 5 expected rows once merged both classes of a binary column into
one, dof 0, p = 1: a prediction shift from 2% to 37% positives passed as "no drift" in releases
and in ``conveyor monitor``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from conveyor.data.drift import chi2_table, column_drift


def test_a_shift_of_a_rare_binary_class_is_drift_by_fishers_exact_test() -> None:
    ref = np.array(["0"] * 384 + ["1"] * 8, dtype=object)
    cur = np.array(["0"] * 17 + ["1"] * 10, dtype=object)

    result = column_drift(
        ref, cur, name="p", kind="categorical", methods=("chi2", "psi"), psi_threshold=0.2
    )

    chi2 = result["stats"]["chi2"]
    assert chi2["test"] == "fisher" and chi2["dof"] == 1
    expected = stats.fisher_exact([[384, 8], [17, 10]]).pvalue
    assert abs(chi2["p_value"] - expected) < 1e-15 and chi2["p_value"] < 1e-8
    assert result["stats"]["psi"]["statistic"] > 1.0
    assert result["drifted"] is True


def test_the_same_rare_share_on_both_sides_is_not_drift() -> None:
    ref = pd.Series(["0"] * 384 + ["1"] * 8)
    cur = pd.Series(["0"] * 26 + ["1"] * 1)

    result = column_drift(ref, cur, methods=("chi2", "psi"))

    assert result["stats"]["chi2"]["test"] == "fisher"
    assert result["stats"]["chi2"]["p_value"] > 0.3
    assert result["drifted"] is False


def test_merging_keeps_two_columns_when_every_category_is_rare() -> None:
    table, merged = chi2_table([3, 2, 1], [0, 1, 4])

    # every total (3, 3, 5) is under the 5.5 rows needed: the largest, "c", stays apart
    assert table.shape == (2, 2) and merged == 2
    assert table.sum() == 11 and sorted(table.sum(axis=0).tolist()) == [5, 6]


def test_large_counts_keep_the_chi_square_test() -> None:
    ref = pd.Series(["0"] * 3000 + ["1"] * 1000)
    cur = pd.Series(["0"] * 2800 + ["1"] * 1200)

    chi2 = column_drift(ref, cur, methods="chi2")["stats"]["chi2"]

    expected = stats.chi2_contingency([[3000, 1000], [2800, 1200]], correction=False)
    assert "test" not in chi2 and chi2["dof"] == 1
    assert abs(chi2["p_value"] - float(expected.pvalue)) < 1e-12
