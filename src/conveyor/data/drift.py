"""Per-column drift between a reference data set (what a model was trained on) and a current one.

Numeric columns are compared with the two-sample Kolmogorov-Smirnov test (``ks``), the
Wasserstein distance (``wasserstein``, also divided by the reference's standard deviation so its
threshold has no unit) and the population stability index on ten reference-quantile bins
(``psi``). Categorical columns (strings, booleans, ``category``, and integers with at most
``categorical_int_max`` distinct values when asked) get a chi-square test of homogeneity
(``chi2``), the Jensen-Shannon distance in base 2 (``jensenshannon``, in [0, 1]) and the PSI of
category shares.

**The verdict.** On a million rows a test flags a shift of a hundredth of a standard deviation
that nobody should act on, and on a hundred rows an effect size is mostly noise. So a column
drifts when its change is both *real* and *large*:

- real: the p-value of its test (``ks`` or ``chi2``), adjusted over every tested column by
  ``correction`` (Holm by default), is below ``alpha`` (0.05);
- large: an effect size reaches its threshold: normalised Wasserstein >= 0.1 reference standard
  deviations, Jensen-Shannon distance >= 0.1, or PSI >= ``psi_threshold`` (0.2).

With several methods selected, the column drifts when a selected test is significant (or no test
is selected) and a selected effect size reaches its threshold (or none is selected): a single
method decides alone. The defaults, :data:`DEFAULT_METHODS`, pair a test with an effect size,
the same pairs and thresholds as Evidently's defaults for large data. The data set has drifted
(``drifted_overall``) when at least one column drifted and their share is at least
``drift_share`` (0.5, as in Evidently; 0 means "any column").

**Missing values.** Nulls, NaN and ±inf are dropped before every test; their share on each side is
reported as ``null_share``. A side with no value left is a verdict, not an error: drifted when
the other side has values, not drifted when neither has. A column that is numeric on one side
and text on the other is reported as drifted (kind ``mismatch``) with the reason.

**Exactness and speed.** Each numeric side is sorted once. One stable sort of the two sorted
arrays end to end (a single timsort merge) gives the merged order, from which the KS statistic
and the Wasserstein distance come with the same arithmetic as ``scipy.stats.ks_2samp`` and
``scipy.stats.wasserstein_distance``; the sorted reference gives the PSI bins. KS p-values follow
``ks_2samp(method="auto")``: when both samples hold at most 10,000 values, scipy's exact p-value
(scipy is called for it); above that, scipy's asymptotic branch ``kstwo.sf(D, round(n*m/(n+m)))``
(``kstwo``, not ``kstwobign``). For a middling D on a million rows ``kstwo`` sums the exact
one-sided series, about 0.5 s under the GIL; scipy pays the same. Each categorical side is
counted once (``value_counts``) for chi2, JS and PSI; chi2 equals
``scipy.stats.chi2_contingency(correction=False)`` on the table after rare categories are merged
(:func:`chi2_table`), except that a table left with two columns and an expected count under 5
(a binary column with a rare class) gets Fisher's exact p-value (``"test": "fisher"``).
Results are JSON-safe dicts. ``benchmarks/drift_bench.py`` compares all this with scipy column
by column.

pandas, numpy and scipy are imported inside the functions, never at import time.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from conveyor.exceptions import DataError

if TYPE_CHECKING:
    import numpy
    import pandas

NUMERIC_METHODS = ("ks", "wasserstein", "psi")
CATEGORICAL_METHODS = ("chi2", "jensenshannon", "psi")
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "numeric": ("ks", "wasserstein"),
    "categorical": ("chi2", "jensenshannon"),
}
CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")
KINDS = ("numeric", "categorical")
TESTS = ("ks", "chi2")
PSI_EPSILON = 1e-4  # share given to an empty bin or category, so PSI stays finite
MIN_EXPECTED = 5.0  # chi-square needs this many expected rows in every cell (Cochran)
EXACT_KS_MAX_N = 10_000  # ks_2samp(method="auto") is exact up to this sample size
LISTED_CATEGORIES = 10  # new or vanished categories named in a result
_PARALLEL_CELLS = 2_000_000  # below this many values a thread pool costs more than it saves
# ks_2samp may warn and fall back to its asymptotic p-value; warnings.catch_warnings is
# process-wide, so two threads must not interleave inside it.
_SCIPY_WARNINGS = threading.Lock()


class MethodStats(TypedDict):
    """One method's figures for one column; the verdict keys come with ``_decide``."""

    statistic: float
    p_value: NotRequired[float]  # tests (ks, chi2)
    p_method: NotRequired[str]  # ks: "exact" or "asymp"
    p_adjusted: NotRequired[float | None]  # tests, after the correction over columns
    dof: NotRequired[int]  # chi2
    merged: NotRequired[int]  # chi2: categories merged into "other"
    test: NotRequired[str]  # chi2: "fisher" when the small table was tested exactly
    normalised: NotRequired[float]  # wasserstein, in reference standard deviations
    bins: NotRequired[int]  # numeric psi
    threshold: NotRequired[float]
    drifted: NotRequired[bool]


class NullShare(TypedDict):
    reference: float
    current: float


class Categories(TypedDict):
    """Distinct categories on each side, and the most frequent new and vanished ones."""

    reference: int
    current: int
    new: list[str]
    gone: list[str]


class ColumnDrift(TypedDict):
    """What :func:`column_drift` returns, and each column of a :class:`DriftReport`."""

    column: str
    kind: str  # "numeric", "categorical" or "mismatch"
    n_reference: int
    n_current: int
    null_share: NullShare
    stats: dict[str, MethodStats]
    drifted: bool
    method: str | None  # the method that decided the verdict
    reason: str | None  # why a verdict was reached without statistics
    categories: NotRequired[Categories]  # categorical columns with values on both sides


class DriftThresholds(TypedDict):
    psi: float
    wasserstein: float
    jensenshannon: float


class DriftReport(TypedDict):
    """What :func:`drift_report` returns: the monitor, the data gate and the CLI read it."""

    columns: dict[str, ColumnDrift]
    drifted: list[str]
    share_drifted: float
    drifted_overall: bool
    alpha: float
    correction: str
    drift_share: float
    thresholds: DriftThresholds
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class _Thresholds:
    alpha: float
    psi: float
    wasserstein: float
    jensenshannon: float


@dataclass
class _Side:
    """One side of a column, reduced to what the statistics need."""

    rows: int
    missing: int
    values: Any = None  # numeric: sorted finite float64 array
    counts: Any = None  # categorical: pandas Series of counts by category, nulls excluded

    @property
    def valid(self) -> int:
        return self.rows - self.missing


def column_drift(
    reference: Any,
    current: Any,
    *,
    name: str | None = None,
    kind: str | None = None,
    methods: str | Sequence[str] | None = None,
    bins: int = 10,
    alpha: float = 0.05,
    psi_threshold: float = 0.2,
    wasserstein_threshold: float = 0.1,
    js_threshold: float = 0.1,
    categorical_int_max: int | None = None,
) -> ColumnDrift:
    """Drift of one column between a reference sample and a current one.

    Returns ``{"column", "kind", "n_reference", "n_current", "null_share": {"reference",
    "current"}, "stats": {method: {"statistic", "p_value", "p_adjusted" (tests only),
    "threshold", "drifted", ...}}, "drifted", "method", "reason"}``, where ``method`` is the one
    that decided the verdict and ``reason`` explains a verdict reached without statistics (a
    side with no values, a type mismatch), else None. ``kind`` is ``"numeric"``,
    ``"categorical"`` or ``"mismatch"``. One column alone gets no multiple-testing correction.

    For chi2, a category whose smallest expected count would be under 5 is merged into one
    "other" category (and "other", if still too small, into the smallest remaining category);
    ``dof`` and ``merged`` (how many categories were merged) describe the table tested.

    Args:
        reference: The reference values: a pandas Series, a NumPy array or a list.
        current: The current values, in the same form.
        name: The column's name in results and errors (default: the Series' name).
        kind: ``"numeric"`` or ``"categorical"``; by default from the dtype (strings, booleans
            and ``category`` are categorical, numbers and datetimes numeric).
        methods: One method or several, from :data:`NUMERIC_METHODS` or
            :data:`CATEGORICAL_METHODS` (default :data:`DEFAULT_METHODS` for the kind).
        bins: Number of reference-quantile bins for a numeric PSI.
        alpha: Significance level of the tests.
        psi_threshold: PSI at or above which the shift is large.
        wasserstein_threshold: Wasserstein distance, in reference standard deviations, at or
            above which the shift is large.
        js_threshold: Jensen-Shannon distance at or above which the shift is large.
        categorical_int_max: Treat an integer column with at most this many distinct values
            (both sides together) as categorical.

    Raises:
        DataError: A side has no rows, a method or parameter is unknown or out of range, or
            ``kind`` cannot apply to the values; the message names the column.
    """
    import pandas as pd

    ref = reference if isinstance(reference, pd.Series) else pd.Series(reference)
    cur = current if isinstance(current, pd.Series) else pd.Series(current)
    column = str(name if name is not None else (ref.name if ref.name is not None else "value"))
    thresholds = _thresholds(alpha, psi_threshold, wasserstein_threshold, js_threshold)
    _check_bins(bins)
    entry = _measure(column, ref, cur, kind, methods, bins, categorical_int_max)
    p_value = _test_p_value(entry)
    _decide(entry, p_value, thresholds)
    return entry


def drift_report(
    reference: pandas.DataFrame,
    current: pandas.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    kinds: dict[str, str] | None = None,
    methods: dict[str, str | Sequence[str]] | None = None,
    bins: int = 10,
    alpha: float = 0.05,
    correction: str = "holm",
    psi_threshold: float = 0.2,
    wasserstein_threshold: float = 0.1,
    js_threshold: float = 0.1,
    drift_share: float = 0.5,
    categorical_int_max: int | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Drift of every column between two data frames, with one verdict for the data set.

    Returns ``{"columns": {name: column_drift(...)}, "drifted": [names], "share_drifted",
    "drifted_overall", "alpha", "correction", "drift_share", "thresholds", "n_reference",
    "n_current"}``. Test p-values are adjusted over all tested columns before the verdicts
    (``p_adjusted`` in each test's stats); see the module docstring for the rule.

    Args:
        reference: The data the model was trained on.
        current: New data or a window of live requests.
        columns: Columns to compare (default: all; then both frames must have the same ones).
        kinds: Force a column's kind: ``{name: "numeric" | "categorical"}``.
        methods: Methods by column name or by kind (``"numeric"``, ``"categorical"``), one name
            or a list; a column's own entry wins over its kind's.
        bins: Number of reference-quantile bins for a numeric PSI.
        alpha: Family-wise (Holm, Bonferroni) or false-discovery (``fdr_bh``) level.
        correction: ``"holm"``, ``"bonferroni"``, ``"fdr_bh"`` or ``"none"``.
        psi_threshold: PSI at or above which a shift is large.
        wasserstein_threshold: Normalised Wasserstein distance at or above which it is large.
        js_threshold: Jensen-Shannon distance at or above which it is large.
        drift_share: Share of drifted columns (at least one) that makes the data set drifted.
        categorical_int_max: Treat integer columns with at most this many distinct values as
            categorical.
        workers: Threads measuring columns (default: up to 2 on large frames, else 1).

    Raises:
        DataError: A frame has no rows, a column is missing on one side (named), or a method,
            kind or parameter is unknown or out of range.
    """
    import pandas as pd

    for label, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DataError(
                f"The {label} data must be a pandas DataFrame, not {type(frame).__name__!r}."
            )
        if len(frame) == 0:
            raise DataError(
                f"The {label} data has no rows; drift needs at least one row on each side."
            )
    thresholds = _thresholds(alpha, psi_threshold, wasserstein_threshold, js_threshold)
    _check_bins(bins)
    if correction not in CORRECTIONS:
        raise DataError(f"Unknown correction {correction!r}; choose from {', '.join(CORRECTIONS)}.")
    if not 0.0 <= drift_share <= 1.0:
        raise DataError(f"drift_share must be between 0 and 1, not {drift_share!r}.")
    names = _columns(reference, current, columns)
    kinds = dict(kinds or {})
    methods = dict(methods or {})
    for key, chosen in (("kinds", kinds), ("methods", methods)):
        unknown = [k for k in chosen if k not in names and not (key == "methods" and k in KINDS)]
        if unknown:
            raise DataError(
                f"{key} names columns that are not compared: {', '.join(map(repr, unknown))}."
            )

    def measure(column: str) -> ColumnDrift:
        ref, cur = reference[column], current[column]
        if not isinstance(ref, pd.Series) or not isinstance(cur, pd.Series):
            raise DataError(f"Column {column!r} appears more than once; rename the duplicates.")
        by_kind = {k: methods[k] for k in KINDS if k in methods}
        return _measure(
            column,
            ref,
            cur,
            kinds.get(column),
            methods.get(column),
            bins,
            categorical_int_max,
            by_kind=by_kind,
        )

    cells = (len(reference) + len(current)) * len(names)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if cells >= _PARALLEL_CELLS else 1
    if workers < 1:
        raise DataError(f"workers must be at least 1, not {workers!r}.")
    if workers == 1 or len(names) < 2:
        entries = [measure(column) for column in names]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            entries = list(pool.map(measure, names))

    tested = [(i, p) for i, e in enumerate(entries) if (p := _test_p_value(e)) is not None]
    adjusted = _adjust([p for _, p in tested], correction)
    p_by_entry = {i: q for (i, _), q in zip(tested, adjusted, strict=True)}
    for i, entry in enumerate(entries):
        _decide(entry, p_by_entry.get(i), thresholds)
    drifted = [e["column"] for e in entries if e["drifted"]]
    share = len(drifted) / len(names) if names else 0.0
    return {
        "columns": {e["column"]: e for e in entries},
        "drifted": drifted,
        "share_drifted": share,
        "drifted_overall": bool(drifted) and share >= drift_share,
        "alpha": alpha,
        "correction": correction,
        "drift_share": drift_share,
        "thresholds": {
            "psi": psi_threshold,
            "wasserstein": wasserstein_threshold,
            "jensenshannon": js_threshold,
        },
        "n_reference": len(reference),
        "n_current": len(current),
    }


# -- choosing columns, kinds and methods -------------------------------------------------------


def _thresholds(alpha: float, psi: float, wasserstein: float, js: float) -> _Thresholds:
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha must be between 0 and 1 (exclusive), not {alpha!r}.")
    for label, value in (
        ("psi_threshold", psi),
        ("wasserstein_threshold", wasserstein),
        ("js_threshold", js),
    ):
        if not value >= 0.0:
            raise DataError(f"{label} must be 0 or more, not {value!r}.")
    return _Thresholds(alpha, psi, wasserstein, js)


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise DataError(f"bins must be an integer of at least 2, not {bins!r}.")


def _columns(
    reference: pandas.DataFrame, current: pandas.DataFrame, columns: Sequence[str] | None
) -> list[str]:
    ref_names, cur_names = list(reference.columns), list(current.columns)
    if columns is None:
        names = ref_names + [c for c in cur_names if c not in set(ref_names)]
        fix = " Pass columns=[...] to compare only the columns both sides have."
    else:
        names = list(dict.fromkeys(columns))
        fix = ""
    problems = []
    for label, have in (("current", set(cur_names)), ("reference", set(ref_names))):
        missing = [c for c in names if c not in have]
        if missing:
            problems.append(f"the {label} data has no column {', '.join(map(repr, missing))}")
    if problems:
        raise DataError(f"{'; '.join(problems).capitalize()}.{fix}")
    return names


def _side_class(series: pandas.Series) -> str:
    """What a side holds: ``number``, ``datetime``, ``timedelta`` or ``text``."""
    import pandas as pd
    from pandas.api import types

    dtype = series.dtype
    if types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "text"
    if types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if types.is_timedelta64_dtype(dtype):
        return "timedelta"
    if types.is_numeric_dtype(dtype) and not types.is_complex_dtype(dtype):
        return "number"
    return "text"


def _is_integer(series: pandas.Series) -> bool:
    from pandas.api import types

    return types.is_integer_dtype(series.dtype) and not types.is_bool_dtype(series.dtype)


def _resolve_kind(
    column: str,
    ref: pandas.Series,
    cur: pandas.Series,
    kind: str | None,
    categorical_int_max: int | None,
) -> tuple[str, str | None]:
    """The kind to compare with, or ``("mismatch", reason)``."""
    if kind is not None and kind not in KINDS:
        raise DataError(
            f"Unknown kind {kind!r} for column {column!r}; choose 'numeric' or 'categorical'."
        )
    if kind == "categorical":
        return kind, None
    # A side with only nulls has no meaningful dtype (a column of None reads as object).
    sides = [(s, _side_class(s)) for s in (ref, cur)]
    known = [cls for s, cls in sides if s.notna().any()]
    ref_class, cur_class = sides[0][1], sides[1][1]
    if kind == "numeric" and ref_class == "text" and ref.notna().any():
        raise DataError(
            f"Column {column!r} holds {ref.dtype} values in the reference; kind='numeric' needs"
            " numbers or datetimes. Use kind='categorical'."
        )
    if len(set(known)) > 1:
        return "mismatch", (
            f"{_describe(ref_class, ref)} in the reference, {_describe(cur_class, cur)} in current"
        )
    side_class = known[0] if known else ref_class
    if kind == "numeric" or side_class != "text":
        if (
            kind is None
            and categorical_int_max is not None
            and _is_integer(ref)
            and _is_integer(cur)
            and _distinct(ref, cur) <= categorical_int_max
        ):
            return "categorical", None
        return "numeric", None
    return "categorical", None


def _describe(side_class: str, series: pandas.Series) -> str:
    kind = "categorical" if side_class == "text" else "numeric"
    return f"{kind} ({series.dtype})"


def _distinct(ref: pandas.Series, cur: pandas.Series) -> int:
    import pandas as pd

    return int(pd.concat([ref.dropna(), cur.dropna()], ignore_index=True).nunique())


def _methods(column: str, kind: str, methods: str | Sequence[str] | None) -> tuple[str, ...]:
    if methods is None:
        return DEFAULT_METHODS[kind]
    chosen = (methods,) if isinstance(methods, str) else tuple(dict.fromkeys(methods))
    allowed = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
    wrong = [m for m in chosen if m not in allowed]
    if wrong or not chosen:
        raise DataError(
            f"Method {', '.join(map(repr, wrong)) or 'list []'} does not apply to {kind} column"
            f" {column!r}; choose from {', '.join(allowed)}."
        )
    return chosen


# -- measuring one column ----------------------------------------------------------------------


def _measure(
    column: str,
    ref: pandas.Series,
    cur: pandas.Series,
    kind: str | None,
    methods: str | Sequence[str] | None,
    bins: int,
    categorical_int_max: int | None,
    *,
    by_kind: dict[str, Any] | None = None,
) -> ColumnDrift:
    """Statistics for one column; the verdicts wait for the corrected p-values (``_decide``).

    A column decided without statistics (a type mismatch, a side with no values) gets its
    verdict here, with a ``reason``.
    """
    for label, series in (("reference", ref), ("current", cur)):
        if len(series) == 0:
            raise DataError(
                f"Column {column!r} has no rows in {label}; drift needs a row on each side."
            )
    resolved, reason = _resolve_kind(column, ref, cur, kind, categorical_int_max)

    def entry_with(null_share: NullShare) -> ColumnDrift:
        return {
            "column": column,
            "kind": resolved,
            "n_reference": len(ref),
            "n_current": len(cur),
            "null_share": null_share,
            "stats": {},
            "drifted": False,
            "method": None,
            "reason": reason,
        }

    if resolved == "mismatch":
        entry = entry_with(
            {"reference": float(ref.isna().mean()), "current": float(cur.isna().mean())}
        )
        entry["drifted"], entry["method"] = True, "type"
        return entry
    if methods is None and by_kind:
        methods = by_kind.get(resolved)
    chosen = _methods(column, resolved, methods)
    side = _numeric_side if resolved == "numeric" else _categorical_side
    a, b = side(column, ref), side(column, cur)
    entry = entry_with({"reference": a.missing / a.rows, "current": b.missing / b.rows})
    if a.valid == 0 or b.valid == 0:
        drifted = a.valid > 0 or b.valid > 0  # values on one side only: a clear change
        entry["reason"] = _empty_reason(a, b)
        entry["drifted"], entry["method"] = drifted, "null_share" if drifted else None
        return entry
    if resolved == "numeric":
        entry["stats"] = _numeric_stats(a.values, b.values, chosen, bins)
    else:
        entry["stats"], entry["categories"] = _categorical_stats(column, a.counts, b.counts, chosen)
    return entry


def _empty_reason(a: _Side, b: _Side) -> str:
    if a.valid == 0 and b.valid == 0:
        return "every value is missing on both sides"
    if a.valid == 0:
        return f"every reference value is missing; current has {_values(b.valid)}"
    return f"every current value is missing; the reference has {_values(a.valid)}"


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


def _numeric_side(column: str, series: pandas.Series) -> _Side:
    """Sorted finite values as float64; NaN sorts last, ±inf to the ends, so slicing drops them."""
    import numpy as np
    from pandas.api import types

    try:
        if types.is_datetime64_any_dtype(series.dtype) or types.is_timedelta64_dtype(series.dtype):
            if getattr(series.dtype, "tz", None) is not None:
                series = series.dt.tz_convert("UTC").dt.tz_localize(None)
            as_ns = "M8[ns]" if types.is_datetime64_any_dtype(series.dtype) else "m8[ns]"
            values = series.to_numpy(dtype=as_ns).view("int64").astype("float64")
            values[series.isna().to_numpy()] = np.nan
        elif series.dtype == np.float64:
            values = series.to_numpy()  # no copy: np.sort below makes the one copy needed
        else:
            values = series.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"Column {column!r} cannot be read as numbers ({series.dtype}): {exc}."
            " Use kind='categorical'."
        ) from exc
    ordered = np.sort(values)
    finite = ordered[: len(ordered) - int(np.count_nonzero(np.isnan(values)))]
    low = int(np.searchsorted(finite, -np.inf, side="right"))
    high = int(np.searchsorted(finite, np.inf, side="left"))
    finite = finite[low:high]
    return _Side(rows=len(values), missing=len(values) - len(finite), values=finite)


def _categorical_side(column: str, series: pandas.Series) -> _Side:
    import pandas as pd

    try:
        counts = series.value_counts(dropna=True, sort=False)
    except TypeError as exc:
        raise DataError(
            f"Column {column!r} holds values that cannot be counted ({exc});"
            " categories must be hashable."
        ) from exc
    counts = counts[counts > 0]  # a category dtype lists unused categories with 0
    if isinstance(counts.index, pd.CategoricalIndex):
        counts.index = counts.index.astype(object)
    valid = int(counts.sum())
    return _Side(rows=len(series), missing=len(series) - valid, counts=counts)


def _numeric_stats(
    a: numpy.ndarray, b: numpy.ndarray, methods: tuple[str, ...], bins: int
) -> dict[str, MethodStats]:
    import numpy as np

    n1, n2 = len(a), len(b)
    stats: dict[str, MethodStats] = {}
    if "ks" in methods or "wasserstein" in methods:
        merged, cdf_gap = _merge(a, b)
        if "ks" in methods:
            last = np.empty(len(merged), dtype=bool)  # last of each run of equal values
            np.not_equal(merged[1:], merged[:-1], out=last[:-1])
            last[-1] = True
            above = float(np.max(cdf_gap, where=last, initial=-np.inf))
            below = float(min(max(-np.min(cdf_gap, where=last, initial=np.inf), 0.0), 1.0))
            del last
            d = below if below > above else above  # as ks_2samp breaks the tie
            p_value, how = _ks_p_value(a, b, d)
            stats["ks"] = {"statistic": d, "p_value": p_value, "p_method": how}
        if "wasserstein" in methods:
            # scipy: sum(|F_a - F_b| * diff(merged)). Inside a run of equal values the width
            # is 0, so the running counts there need no tie correction.
            widths = np.subtract(merged[1:], merged[:-1])
            distance = float(np.dot(np.abs(cdf_gap[:-1], out=cdf_gap[:-1]), widths))
            del widths
            scale = float(np.std(a))
            if scale == 0.0:  # a constant reference: fall back on both sides' spread
                scale = float(np.std(merged))
            normalised = distance / scale if scale > 0.0 else 0.0
            stats["wasserstein"] = {"statistic": distance, "normalised": normalised}
    if "psi" in methods:
        q = np.arange(1, bins) / bins * (n1 - 1)  # np.quantile's default (linear) positions
        lo = np.floor(q).astype(np.int64)
        hi = np.minimum(lo + 1, n1 - 1)
        edges = np.unique(a[lo] + (q - lo) * (a[hi] - a[lo]))
        ref_counts = np.diff(np.searchsorted(a, edges, side="right"), prepend=0, append=n1)
        cur_counts = np.diff(np.searchsorted(b, edges, side="right"), prepend=0, append=n2)
        stats["psi"] = {
            "statistic": _psi(ref_counts / n1, cur_counts / n2),
            "bins": len(edges) + 1,
        }
    return {m: stats[m] for m in methods}


def _merge(a: numpy.ndarray, b: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Both sorted samples in one sorted array, and ``F_a - F_b`` after each of its elements.

    A stable sort of the two sorted arrays put end to end is one merge (timsort finds the two
    runs) and puts every ``b[j]`` after the ``a`` equal to it, as scipy's
    ``searchsorted(side="right")`` counts it. So at the last element of each run of equal values
    the running counts are the two empirical CDFs there, computed as scipy computes them
    (count / n, in float64).
    """
    import numpy as np

    n1, n2 = len(a), len(b)
    total = n1 + n2
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both
    from_b = order >= n1
    del order
    count_b: numpy.ndarray = np.cumsum(from_b, dtype=np.int32 if total < 2**31 else np.int64)
    del from_b
    cdf_gap = np.arange(1, total + 1, dtype=np.float64)
    cdf_gap -= count_b  # the running count of a, exact in float64
    cdf_gap /= n1
    cdf_gap -= count_b / n2
    return merged, cdf_gap


def _ks_p_value(a: numpy.ndarray, b: numpy.ndarray, d: float) -> tuple[float, str]:
    """The p-value ``ks_2samp(method="auto")`` gives, as ``(p, "exact" | "asymp")``."""
    from scipy import stats

    n1, n2 = len(a), len(b)
    exact = max(n1, n2) <= EXACT_KS_MAX_N
    if d == 0.0:
        return 1.0, "exact" if exact else "asymp"
    if exact:
        # scipy's exact path is its own compiled code; on this size the call is cheap. It
        # warns when it falls back on the asymptotic branch, which we accept silently.
        with _SCIPY_WARNINGS, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.ks_2samp(a, b, method="auto")
        return float(result.pvalue), "exact"
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = float(stats.kstwo.sf(d, round(en)))
    return min(max(p, 0.0), 1.0), "asymp"


def _categorical_stats(
    column: str, ref: pandas.Series, cur: pandas.Series, methods: tuple[str, ...]
) -> tuple[dict[str, MethodStats], Categories]:
    import numpy as np

    try:
        labels = ref.index.union(cur.index, sort=False)
    except TypeError as exc:
        raise DataError(
            f"Column {column!r} holds values that cannot be compared as categories ({exc});"
            " categories must be hashable."
        ) from exc
    r = ref.reindex(labels, fill_value=0).to_numpy(dtype=np.int64)
    c = cur.reindex(labels, fill_value=0).to_numpy(dtype=np.int64)
    n1, n2 = int(r.sum()), int(c.sum())
    stats: dict[str, MethodStats] = {}
    if "chi2" in methods:
        stats["chi2"] = _chi2(r, c)
    if "jensenshannon" in methods:
        stats["jensenshannon"] = {"statistic": _jensenshannon(r / n1, c / n2)}
    if "psi" in methods:
        stats["psi"] = {"statistic": _psi(r / n1, c / n2)}

    def listed(mask: numpy.ndarray, counts: numpy.ndarray) -> list[str]:
        order = np.argsort(-counts[mask], kind="stable")[:LISTED_CATEGORIES]
        return [str(labels[mask][i]) for i in order]

    categories: Categories = {
        "reference": int(np.count_nonzero(r)),
        "current": int(np.count_nonzero(c)),
        "new": listed((r == 0) & (c > 0), c),
        "gone": listed((c == 0) & (r > 0), r),
    }
    return {m: stats[m] for m in methods}, categories


def chi2_table(
    ref_counts: Sequence[int] | numpy.ndarray, cur_counts: Sequence[int] | numpy.ndarray
) -> tuple[Any, int]:
    """The 2 x k table chi2 tests, after merging rare categories, and how many were merged.

    A category whose smaller expected count (smaller row total x its column total / all rows)
    is under 5 goes into one "other" column, the last one; if "other" is still under 5, the
    smallest remaining category joins it. Categories keep their order otherwise. Merging never
    leaves fewer than two columns when the data has two categories or more: a binary column
    with a rare class would otherwise merge into one column, dof 0, and a shift of the rare
    class (8 in 392 rows against 10 in 27) would pass as "no drift". Such a small table is
    tested exactly (Fisher) by :func:`column_drift`.

    Args:
        ref_counts: Reference rows per category.
        cur_counts: Current rows per category, in the same order.
    """
    import numpy as np

    table = np.array([ref_counts, cur_counts], dtype=np.int64)
    totals = table.sum(axis=0)
    smaller_row = table.sum(axis=1).min()
    if smaller_row == 0:
        return table, 0
    need = MIN_EXPECTED * totals.sum() / smaller_row  # column total giving expected count 5
    rare = totals < need
    if not rare.any():
        return table, 0
    if rare.all() and len(totals) >= 2:  # every category rare: the largest stays apart
        rare[int(np.argmax(totals))] = False
    kept = np.flatnonzero(~rare)
    other = table[:, rare].sum(axis=1)
    merged = int(rare.sum())
    if other.sum() < need and len(kept) > 1:
        smallest = kept[np.argmin(totals[kept])]  # first of equal totals: deterministic
        other = other + table[:, smallest]
        kept = kept[kept != smallest]
        merged += 1
    return np.column_stack([table[:, kept], other]), merged


def _chi2(r: numpy.ndarray, c: numpy.ndarray) -> MethodStats:
    import numpy as np
    from scipy import stats

    table, merged = chi2_table(r, c)
    dof = table.shape[1] - 1
    if dof == 0:  # one category left: nothing to compare, as chi2_contingency says
        return {"statistic": 0.0, "p_value": 1.0, "dof": 0, "merged": merged}
    observed = table.astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    if dof == 1 and expected.min() < MIN_EXPECTED:
        # two columns with an expected count under 5: the chi-square approximation is off,
        # and Fisher's exact test is cheap on a 2 x 2 table
        p_value = float(stats.fisher_exact(table).pvalue)
        return {
            "statistic": statistic,
            "p_value": p_value,
            "dof": dof,
            "merged": merged,
            "test": "fisher",
        }
    p_value = float(stats.chi2.sf(statistic, dof))
    return {"statistic": statistic, "p_value": p_value, "dof": dof, "merged": merged}


def _jensenshannon(p: numpy.ndarray, q: numpy.ndarray) -> float:
    """scipy.spatial.distance.jensenshannon(p, q, base=2), clipped at 0 against round-off."""
    import numpy as np
    from scipy.special import rel_entr

    m = (p + q) / 2.0
    divergence = (np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))) / math.log(2.0)
    return float(math.sqrt(min(max(divergence / 2.0, 0.0), 1.0)))


def _psi(expected: numpy.ndarray, actual: numpy.ndarray) -> float:
    import numpy as np

    e = np.maximum(expected, PSI_EPSILON)
    a = np.maximum(actual, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


# -- verdicts ----------------------------------------------------------------------------------


def _test_p_value(entry: ColumnDrift) -> float | None:
    for method in TESTS:
        if method in entry["stats"]:
            return float(entry["stats"][method]["p_value"])
    return None


def _adjust(p_values: list[float], correction: str) -> list[float]:
    """Adjusted p-values: compare each with alpha as if it were the only test."""
    m = len(p_values)
    if m == 0 or correction == "none":
        return list(p_values)
    if correction == "bonferroni":
        return [min(1.0, p * m) for p in p_values]
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    if correction == "holm":  # step-down: running maximum of (m - rank) * p
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p_values[i]))
            adjusted[i] = running
    else:  # fdr_bh, step-up: running minimum of m / rank * p from the largest p down
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i = order[rank]
            running = min(running, p_values[i] * m / (rank + 1))
            adjusted[i] = running
    return adjusted


def _decide(entry: ColumnDrift, p_adjusted: float | None, t: _Thresholds) -> None:
    """Fill in each method's verdict and the column's: significant and large (module doc)."""
    if entry["reason"] is not None:  # decided in _measure
        return
    stats = entry["stats"]
    limits = {"psi": t.psi, "wasserstein": t.wasserstein, "jensenshannon": t.jensenshannon}
    tests, effects = [], []
    for method, s in stats.items():
        if method in TESTS:
            s["p_adjusted"] = p_adjusted
            s["threshold"] = t.alpha
            s["drifted"] = bool(p_adjusted is not None and p_adjusted < t.alpha)
            tests.append(method)
        else:
            size = s["normalised"] if method == "wasserstein" else s["statistic"]
            s["threshold"] = limits[method]
            s["drifted"] = bool(size >= limits[method])
            effects.append(method)
    significant = [m for m in tests if stats[m]["drifted"]]
    large = [m for m in effects if stats[m]["drifted"]]
    real = not tests or bool(significant)
    big = not effects or bool(large)
    entry["drifted"] = real and big
    if entry["drifted"]:
        entry["method"] = (large or significant)[0]
    else:
        entry["method"] = tests[0] if not real else effects[0]
