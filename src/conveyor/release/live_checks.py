"""The live checks of a release, one function each: its test, sample sizes, effect and interval.

Every check returns a dict for the verdict's evidence: ``name``, ``test`` (named), ``n`` (what
was counted), ``value`` and ``bound`` (the practical limit), ``effect`` with its ``interval``,
the always-valid ``p_value`` with the ``alpha`` this check may spend, and ``result``:

- ``fail``: the test rejects at its alpha AND the effect crosses the practical bound;
- ``wait``: too little data to pass, or over the bound but not yet shown (keep collecting);
- ``pass``: enough data and not shown worse; ``info``: reported, not judged.

Where the candidate's own requests were also answered by the stable version (the stable
version mirrored during a canary, the candidate's copies in a shadow), the checks compare the
two answers to the SAME requests: errors and correctness by the sign test on discordant pairs
(McNemar), predictions row by row. Otherwise they compare the two sides' counts, conditioning
on their traffic shares. The p-values come from :mod:`conveyor.evaluate.sequential`, valid at
every look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.evaluate.sequential import (
    binomial_p,
    normal_p,
    normal_radius,
    quantile_interval,
    superiority,
    two_sided_binomial_p,
)

if TYPE_CHECKING:
    from conveyor.release.analysis import Side

__all__ = [
    "accuracy_check",
    "agreement_check",
    "error_check",
    "latency_check",
    "p99_bound_check",
    "p99_ratio_check",
    "Pairs",
    "pair",
    "paired_ids",
    "shift_check",
]

MIN_LATENCIES = 20  # per side, before the rank test's normal approximation is trusted
PAIRED_SHARE = 0.5  # compare paired when at least this share of the candidate's requests paired
_TAU2_RATE = 0.05**2  # mixing variance: the rate differences the intervals are tuned to
_TAU2_AUC = 0.1**2


@dataclass(frozen=True)
class Pairs:
    """The candidate's requests that the other version answered too, found once per verdict."""

    ids: list[str]  # answered by both (any status), in the candidate's order
    mine: list[Any]  # row-aligned predictions of both, on requests both answered with 200
    theirs: list[Any]
    owners: list[str]  # the request of each row


def pair(candidate: Side, other: Side) -> Pairs:
    """Match the candidate's answers with the other version's by request id."""
    ids = [rid for rid in candidate.status if rid in other.status]
    mine, theirs, owners = _rows(candidate, other, ids)
    return Pairs(ids, mine, theirs, owners)


def paired_ids(candidate: Side, other: Side) -> list[str]:
    """Requests both versions answered (any status), in the candidate's order."""
    return [rid for rid in candidate.status if rid in other.status]


def _paired(candidate: Side, ids: list[str]) -> bool:
    return bool(ids) and len(ids) >= PAIRED_SHARE * len(candidate.status)


def _rate_interval(diff: float, variance: float, alpha: float) -> list[float]:
    r = normal_radius(variance, alpha, _TAU2_RATE)
    return [round(diff - r, 5), round(diff + r, 5)]


def _result(shown: bool, over: bool, enough: bool) -> str:
    if shown and over:
        return "fail"
    if over or not enough:
        return "wait"
    return "pass"


def error_check(
    stable: Side,
    candidate: Side,
    other: Side,
    pairs: Pairs,
    bound: float,
    alpha: float,
    min_requests: int,
) -> dict[str, Any]:
    """5xx answers: the candidate's rate against the stable version's."""
    ids = pairs.ids
    n_b, rate_b = candidate.requests, candidate.error_rate
    check: dict[str, Any] = {
        "name": "error rate",
        "value": round(rate_b, 5),
        "bound": f"<= {bound}",
    }
    if _paired(candidate, ids):
        worse = sum(candidate.status[r] >= 500 and other.status[r] < 500 for r in ids)
        better = sum(candidate.status[r] < 500 and other.status[r] >= 500 for r in ids)
        n = len(ids)
        p = binomial_p(worse, worse + better, 0.5)
        diff = (worse - better) / n
        variance = max((worse + better) / n - diff * diff, 0.0) / n
        check |= {
            "test": "exact sign test on discordant pairs (McNemar), always valid",
            "n": {"pairs": n, "candidate_only_errors": worse, "stable_only_errors": better},
            "stable": round(sum(other.status[r] >= 500 for r in ids) / n, 5),
        }
    else:
        n_a, errors_a = stable.requests, stable.errors
        share = n_b / (n_a + n_b) if n_a + n_b else 0.0
        p = binomial_p(candidate.errors, candidate.errors + errors_a, share) if n_a else 1.0
        rate_a = stable.error_rate
        diff = rate_b - rate_a
        variance = rate_b * (1 - rate_b) / max(n_b, 1) + rate_a * (1 - rate_a) / max(n_a, 1)
        check |= {
            "test": "exact binomial test of the errors' split against the traffic split, "
            "always valid",
            "n": {"candidate": n_b, "stable": n_a},
            "stable": round(rate_a, 5),
        }
    check |= {
        "effect": round(diff, 5),
        "interval": _rate_interval(diff, variance, alpha),
        "p_value": p,
        "alpha": alpha,
        "result": _result(p <= alpha, rate_b > bound, n_b >= min_requests),
    }
    return check


def latency_check(
    stable: Side, candidate: Side, tolerance_ms: float, alpha: float
) -> dict[str, Any]:
    """Latency as distributions: is the candidate slower than stable + tolerance, typically?

    The Mann-Whitney probability P(candidate - tolerance > stable) is 1/2 when the candidate is
    exactly ``tolerance_ms`` slower and below when it is faster; a rank statistic, so the
    scheduling-noise outliers of a shared host weigh no more than any slow request.
    """
    a, b = stable.latencies, candidate.latencies
    check: dict[str, Any] = {
        "name": "latency vs stable",
        "test": "Mann-Whitney (probability of superiority, DeLong variance), always valid",
        "bound": f"typical latency <= stable + {tolerance_ms:g} ms",
        "n": {"candidate": len(b), "stable": len(a)},
    }
    if len(a) < MIN_LATENCIES or len(b) < MIN_LATENCIES:
        return check | {"value": None, "result": "wait"}
    theta, variance = superiority(a, b, tolerance_ms)
    p = normal_p(theta - 0.5, variance, _TAU2_AUC)
    r = normal_radius(variance, alpha, _TAU2_AUC)
    median_diff = float(np.median(b) - np.median(a))
    return check | {
        "value": round(median_diff, 3),
        "effect": round(theta, 4),
        "effect_is": f"P(candidate - {tolerance_ms:g} ms > stable)",
        "interval": [round(max(theta - r, 0.0), 4), round(min(theta + r, 1.0), 4)],
        "median_ms": {
            "candidate": round(float(np.median(b)), 3),
            "stable": round(float(np.median(a)), 3),
        },
        "p_value": p,
        "alpha": alpha,
        "result": "fail" if p <= alpha else "pass",
    }


def _p99(values: list[float], alpha: float) -> dict[str, Any] | None:
    found = quantile_interval(values, 0.99, alpha)
    if found is None:
        return None
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in found.items()}


def _exceedances(candidate: Side, threshold: float) -> int:
    return int(np.count_nonzero(np.asarray(candidate.latencies) > threshold))


def p99_bound_check(candidate: Side, bound_ms: float, alpha: float) -> dict[str, Any]:
    """The candidate's p99 under an absolute bound: at most 1% of its requests above it."""
    n = len(candidate.latencies)
    over = _exceedances(candidate, bound_ms) if n else 0
    p = binomial_p(over, n, 0.01)
    p99 = _p99(candidate.latencies, alpha)
    return {
        "name": "p99 latency",
        "test": "exact binomial test of requests over the bound (H0: at most 1%), always valid",
        "value": None if p99 is None else p99["estimate"],
        "bound": f"<= {bound_ms:g} ms",
        "n": {"candidate": n, "over_bound": over},
        "effect": round(over / n, 5) if n else None,
        "effect_is": "share of requests over the bound",
        "interval": None if p99 is None else [p99["low"], p99["high"]],
        "p_value": p,
        "alpha": alpha,
        # 100 requests at least: with fewer, a p99 is the maximum
        "result": "fail" if p <= alpha else ("pass" if p99 is not None else "wait"),
    }


def p99_ratio_check(
    stable: Side, candidate: Side, ratio: float, slack_ms: float, alpha: float
) -> dict[str, Any]:
    """The candidate's tail against the stable one's: its p99 at most ``ratio`` x stable's p99
    (or within ``slack_ms`` of it), tested as at most 1% of its requests above that line.

    The line is drawn from the upper confidence bound of the stable p99, not its estimate: an
    estimate from a few hundred requests is often low, and a line below the true p99 x ratio
    would count a candidate as good as stable over its 1% (the benchmark rolled back one good
    candidate in 500 that way). The bound needs about 700 stable requests at the alpha of one
    check; before that the check is not judged."""
    stable_p99 = _p99(stable.latencies, alpha)
    cand_p99 = _p99(candidate.latencies, alpha)
    check: dict[str, Any] = {
        "name": "p99 latency vs stable",
        "test": "exact binomial test of requests over max(ratio x stable p99, stable p99 + "
        "slack) (H0: at most 1%), always valid",
        "value": None if cand_p99 is None else cand_p99["estimate"],
        "n": {"candidate": len(candidate.latencies), "stable": len(stable.latencies)},
        "stable": stable_p99,
    }
    if stable_p99 is None or cand_p99 is None:
        # too few requests to tell a p99 from the maximum: this check cannot judge yet
        return check | {
            "bound": f"<= {ratio}x stable p99 or within {slack_ms:g} ms",
            "result": "info",
            "note": "fewer than 100 requests on a side: no p99 to compare",
        }
    if stable_p99["high"] is None:
        return check | {
            "bound": f"<= {ratio}x stable p99 or within {slack_ms:g} ms",
            "result": "info",
            "note": f"{len(stable.latencies)} stable requests bound no p99 from above yet",
        }
    top = stable_p99["high"]  # the stable p99 is below this, but for alpha
    line = max(ratio * top, top + slack_ms)
    n = len(candidate.latencies)
    over = _exceedances(candidate, line)
    p = binomial_p(over, n, 0.01)
    return check | {
        "bound": f"<= {line:.2f} ms ({ratio}x the stable p99's upper bound {top:.2f} ms, or "
        f"within {slack_ms:g} ms)",
        "effect": round(over / n, 5),
        "effect_is": "share of candidate requests over the line",
        "interval": [cand_p99["low"], cand_p99["high"]],
        "p_value": p,
        "alpha": alpha,
        "result": "fail" if p <= alpha else "pass",
    }


def _rows(candidate: Side, other: Side, ids: list[str]) -> tuple[list[Any], list[Any], list[str]]:
    """Row-aligned predictions of both versions on requests both answered with 200."""
    mine: list[Any] = []
    theirs: list[Any] = []
    owners: list[str] = []
    for rid in ids:
        b, a = candidate.by_request.get(rid), other.by_request.get(rid)
        if a is None or b is None or len(a) != len(b):
            continue
        mine.extend(b)
        theirs.extend(a)
        owners.extend([rid] * len(b))
    return mine, theirs, owners


def _psi(reference: list[Any], current: list[Any], classes: bool, bound: float) -> float | None:
    """PSI of the candidate's predictions against the stable ones: of class shares (directly,
    as the judge computes it at every look), or of ten quantile bins through the drift code."""
    from conveyor.data.drift import PSI_EPSILON, column_drift

    if classes:
        ref = np.asarray([str(v) for v in reference], dtype=object)
        cur = np.asarray([str(v) for v in current], dtype=object)
        labels = sorted(set(ref.tolist()) | set(cur.tolist()))
        e = np.maximum([np.count_nonzero(ref == c) / len(ref) for c in labels], PSI_EPSILON)
        a = np.maximum([np.count_nonzero(cur == c) / len(cur) for c in labels], PSI_EPSILON)
        return float(np.sum((a - e) * np.log(a / e)))
    try:
        entry = column_drift(
            np.asarray([str(v) for v in reference], dtype=object)
            if classes
            else np.asarray(reference, dtype=float),
            np.asarray([str(v) for v in current], dtype=object)
            if classes
            else np.asarray(current, dtype=float),
            name="predictions",
            kind="categorical" if classes else "numeric",
            methods=("psi",),
            psi_threshold=bound,
        )
    except Exception:  # values that are neither labels nor numbers: no PSI to show
        return None
    stats = entry.get("stats") or {}
    return float(stats["psi"]["statistic"]) if "psi" in stats else None


def shift_check(
    stable: Side,
    candidate: Side,
    pairs: Pairs,
    classes: bool,
    bound: float,
    alpha: float,
    min_requests: int,
) -> dict[str, Any]:
    """The distribution of predictions: a shift that is both real (tested) and large (PSI).

    Classifiers are compared on predicted labels, not probabilities (two sound models calibrate
    differently). Paired, per class: among rows where exactly one version predicted the class,
    a sign test on which one (McNemar); regression values by the sign of each row's difference.
    Unpaired, per class: the class's predictions split against the rows' split.
    """
    mine, theirs = pairs.mine, pairs.theirs
    paired = _paired(candidate, pairs.ids) and bool(mine)
    if paired:
        b_values, a_values = mine, theirs
    else:
        b_values, a_values = candidate.scores, stable.scores
    check: dict[str, Any] = {
        "name": "prediction shift",
        "bound": f"PSI < {bound} (or not shown)",
        "n": {"candidate": len(b_values), "stable": len(a_values), "paired": paired},
    }
    if not b_values or not a_values:
        return check | {"value": None, "result": "wait"}
    psi = _psi(a_values, b_values, classes, bound)
    if classes:
        b_arr = np.asarray([str(v) for v in b_values], dtype=object)
        a_arr = np.asarray([str(v) for v in a_values], dtype=object)
        labels = sorted(set(b_arr.tolist()) | set(a_arr.tolist()))
        tests = labels if len(labels) > 2 else labels[:1]  # two classes: one test says it all
        ps = []
        effects = {}
        for label in tests:
            in_b, in_a = b_arr == label, a_arr == label
            if paired:
                up = int(np.count_nonzero(in_b & ~in_a))
                down = int(np.count_nonzero(in_a & ~in_b))
                ps.append(two_sided_binomial_p(up, down))
            else:
                k_b, k_a = int(in_b.sum()), int(in_a.sum())
                share = len(b_arr) / (len(b_arr) + len(a_arr))
                ps.append(_split_two_sided(k_b, k_a, share))
            effects[label] = round(float(in_b.mean() - in_a.mean()), 4)
        p = min(1.0, min(ps) * len(tests)) if ps else 1.0  # Bonferroni over the classes
        check["test"] = (
            "exact sign test per class on rows predicted differently (McNemar), always valid"
            if paired
            else "exact binomial test per class of its predictions' split, always valid"
        )
        check["effect"] = effects
        check["effect_is"] = "candidate share - stable share, per class"
    else:
        b_num = np.asarray(b_values, dtype=float)
        a_num = np.asarray(a_values, dtype=float)
        if paired:
            d = b_num - a_num
            p = two_sided_binomial_p(int((d > 0).sum()), int((d < 0).sum()))
            check["test"] = "exact sign test on paired differences, always valid"
            check["effect"] = round(float(np.median(d)), 6)
            check["effect_is"] = "median of candidate - stable, per row"
        else:
            theta, variance = superiority(a_num, b_num)
            p = normal_p(theta - 0.5, variance, _TAU2_AUC, one_sided=False)
            check["test"] = "Mann-Whitney, two-sided, always valid"
            check["effect"] = round(theta, 4)
            check["effect_is"] = "P(candidate > stable)"
    large = psi is not None and psi >= bound
    return check | {
        "value": None if psi is None else round(psi, 4),
        "p_value": p,
        "alpha": alpha,
        "result": _result(p <= alpha, large, len(b_values) >= min_requests),
    }


def _split_two_sided(k_b: int, k_a: int, share: float) -> float:
    return min(
        1.0, 2.0 * min(binomial_p(k_b, k_b + k_a, share), binomial_p(k_a, k_b + k_a, 1 - share))
    )


def agreement_check(
    pairs: Pairs, bound: float | None, alpha: float, min_requests: int
) -> dict[str, Any] | None:
    """Share of rows where both versions predicted the same, on the requests both answered."""
    mine, theirs, owners = pairs.mine, pairs.theirs, pairs.owners
    if not mine:
        return None
    same = int(sum(x == y for x, y in zip(mine, theirs, strict=True)))
    rows = len(mine)
    share = same / rows
    requests = len(set(owners))
    check: dict[str, Any] = {
        "name": "agreement",
        "value": round(share, 4),
        "pairs": requests,
        "n": {"pairs": requests, "rows": rows, "disagreeing_rows": rows - same},
    }
    if bound is None:
        return check | {"result": "info"}
    p = binomial_p(rows - same, rows, 1.0 - bound)
    variance = share * (1 - share) / rows
    return check | {
        "test": "exact binomial test of disagreeing rows (H0: at most 1 - bound), always valid",
        "bound": f">= {bound}",
        "effect": round(share - bound, 4),
        "effect_is": "agreement - bound",
        "interval": _rate_interval(share - bound, variance, alpha),
        "p_value": p,
        "alpha": alpha,
        "result": _result(p <= alpha, share < bound, requests >= min_requests),
    }


def accuracy_check(
    stable: Side,
    candidate: Side,
    other: Side,
    max_drop: float | None,
    alpha: float,
    min_labels: int,
) -> dict[str, Any] | None:
    """Correctness against the labels that arrived: paired on the same requests where the
    stable version answered them too, else the two sides' wrong answers against their split."""
    ids = [
        rid
        for rid, truth in candidate.truth.items()
        if rid in other.status and len(truth) == len(candidate.by_request.get(rid) or ())
    ]
    mine, theirs, owners = _rows(candidate, other, ids)
    truth = [y for rid in dict.fromkeys(owners) for y in candidate.truth[rid]]
    paired = _paired_labels(candidate, mine, truth)
    check: dict[str, Any] = {"name": "accuracy from labels"}
    if paired:
        b_right = np.asarray([p == y for p, y in zip(mine, truth, strict=True)])
        a_right = np.asarray([p == y for p, y in zip(theirs, truth, strict=True)])
        n = len(b_right)
        worse = int(np.count_nonzero(a_right & ~b_right))
        better = int(np.count_nonzero(b_right & ~a_right))
        acc_b, acc_a = float(b_right.mean()), float(a_right.mean())
        p = binomial_p(worse, worse + better, 0.5)
        diff = acc_b - acc_a
        variance = max((worse + better) / n - diff * diff, 0.0) / n
        check |= {
            "test": "exact sign test on discordant labelled pairs (McNemar), always valid",
            "n": {"labelled_rows": n, "candidate_only_wrong": worse, "stable_only_wrong": better},
        }
    else:
        b_rows, a_rows = candidate.labelled(), stable.labelled()
        if not b_rows or not a_rows:
            return None
        n = min(len(b_rows), len(a_rows))
        wrong_b = sum(p != y for p, y in b_rows)
        wrong_a = sum(p != y for p, y in a_rows)
        acc_b, acc_a = 1 - wrong_b / len(b_rows), 1 - wrong_a / len(a_rows)
        share = len(b_rows) / (len(b_rows) + len(a_rows))
        p = binomial_p(wrong_b, wrong_b + wrong_a, share)
        diff = acc_b - acc_a
        variance = acc_b * (1 - acc_b) / len(b_rows) + acc_a * (1 - acc_a) / len(a_rows)
        check |= {
            "test": "exact binomial test of the wrong answers' split against the labelled "
            "rows' split, always valid",
            "n": {"candidate_labelled": len(b_rows), "stable_labelled": len(a_rows)},
        }
    check |= {
        "value": round(acc_b, 4),
        "stable": round(acc_a, 4),
        "labelled_rows": n,
        "effect": round(diff, 4),
        "effect_is": "candidate accuracy - stable accuracy",
        "interval": _rate_interval(diff, variance, alpha),
    }
    if max_drop is None:
        return check | {"result": "info"}
    return check | {
        "bound": f">= stable - {max_drop} (or not shown worse)",
        "p_value": p,
        "alpha": alpha,
        "result": _result(p <= alpha, diff < -max_drop, n >= min_labels),
    }


def _paired_labels(candidate: Side, mine: list[Any], truth: list[Any]) -> bool:
    return (
        bool(mine)
        and len(mine) == len(truth)
        and len(mine) >= PAIRED_SHARE * len(candidate.labelled())
    )
