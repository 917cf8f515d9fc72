"""Is the comparison gate right? Error rates and power of the paired tests on synthetic holdouts.

Run: .venv/bin/python benchmarks/gates_significance.py [--seeds 200] [--boot-seeds 50]

Data: a true logit z ~ N(0, 1.5²), labels y ~ Bernoulli(sigmoid(z)); each model scores
sigmoid(z + its own independent noise). Equal models have the same noise level (0.2); a better
challenger has noise 0.2 while the incumbent's noise is set so that the true AUC gap is +delta
(solved on 2 million rows). Gates, judged by the function `conveyor ci` uses
(`conveyor.gates.model_gates.judge`): "not worse" is `roc_auc >= production.roc_auc - 0.005`
(passes when the DeLong interval of b − a lies at or above −0.005), "better" is
`roc_auc > production.roc_auc` (passes when it lies above 0), with α = 0.05 (two-sided 95 %).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from conveyor.evaluate.compare import better, delong, not_worse, paired_bootstrap
from conveyor.gates.model_gates import judge

SIGNAL_SD = 1.5
CHALLENGER_NOISE = 0.2
MARGIN = 0.005
ALPHA = 0.05


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def holdout(
    n: int, noise_a: float, noise_b: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models' scores for the same n rows."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, SIGNAL_SD, n)
    y = (rng.random(n) < _sigmoid(z)).astype(int)
    a = _sigmoid(z + rng.normal(0.0, noise_a, n))
    b = _sigmoid(z + rng.normal(0.0, noise_b, n))
    return y, a, b


def noise_for_gap(delta: float, n: int = 2_000_000) -> float:
    """Incumbent noise level whose true AUC is ``delta`` below the challenger's (bisection on
    ``n`` rows: the true AUC's error is about 1/sqrt(n), 0.0007 at two million)."""
    rng = np.random.default_rng(12345)
    z = rng.normal(0.0, SIGNAL_SD, n)
    y = rng.random(n) < _sigmoid(z)
    e = rng.normal(0.0, 1.0, n)  # common random numbers keep the bisection monotone

    def auc(sd: float) -> float:
        return float(roc_auc_score(y, z + sd * e))

    target = auc(CHALLENGER_NOISE) - delta
    lo, hi = CHALLENGER_NOISE, 5.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if auc(mid) > target else (lo, mid)
    return (lo + hi) / 2


def rates(n: int, noise_a: float, seeds: int) -> tuple[float, float, float, float]:
    """Shares of seeds where the gate 'not worse' passes, where it says inconclusive, where
    'better' passes, and the mean observed gap."""
    nw = inc = bt = 0
    gaps = []
    for seed in range(seeds):
        y, a, b = holdout(n, noise_a, CHALLENGER_NOISE, seed)
        cmp = delong(y, a, b, alpha=ALPHA)
        verdict = judge(cmp, ">=", -MARGIN)
        nw += verdict == "pass"
        inc += verdict == "inconclusive"
        bt += judge(cmp, ">", 0.0) == "pass"
        gaps.append(cmp.diff)
    return nw / seeds, inc / seeds, bt / seeds, float(np.mean(gaps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--boot-seeds", type=int, default=50)
    parser.add_argument(
        "--calibration-rows",
        type=int,
        default=2_000_000,
        help="rows that set each true gap (2,000,000; fewer only for a smoke run)",
    )
    args = parser.parse_args()

    rows = []
    for delta in (0.0, 0.01, 0.03):
        noise_a = CHALLENGER_NOISE if delta == 0 else noise_for_gap(delta, args.calibration_rows)
        for n in (2_000, 10_000):
            t0 = time.perf_counter()
            nw, inc, bt, gap = rates(n, noise_a, args.seeds)
            rows.append((delta, n, gap, nw, inc, bt, time.perf_counter() - t0))

    print(f"DeLong gates, alpha={ALPHA}, margin={MARGIN} AUC, {args.seeds} seeds per row")
    print(
        f"{'true gap':>8} {'n':>7} {'mean diff':>10} {'not worse':>10} {'inconcl.':>9} "
        f"{'better':>8} {'secs':>6}"
    )
    for delta, n, gap, nw, inc, bt, secs in rows:
        print(
            f"{delta:>+8.3f} {n:>7} {gap:>+10.4f} {nw:>10.1%} {inc:>9.1%} {bt:>8.1%} {secs:>6.2f}"
        )
    print("(true gap 0: 'not worse' should pass and 'better' should refuse in >= 95% of seeds;")
    print(" true gap > 0: the 'better' column is the power.)")

    # The bootstrap must tell the same story as DeLong on the same holdouts.
    agree_nw = agree_bt = 0
    bound_gap = []
    t_boot = []
    for seed in range(args.boot_seeds):
        y, a, b = holdout(10_000, CHALLENGER_NOISE, CHALLENGER_NOISE, seed)
        d = delong(y, a, b, alpha=ALPHA)
        t0 = time.perf_counter()
        bs = paired_bootstrap(y, a, b, "roc_auc", n_boot=2000, alpha=ALPHA, seed=seed)
        t_boot.append(time.perf_counter() - t0)
        agree_nw += not_worse(d, MARGIN) == not_worse(bs, MARGIN)
        agree_bt += better(d) == better(bs)
        bound_gap.append(abs(d.ci_low - bs.ci_low))
    k = args.boot_seeds
    print()
    print(f"Bootstrap (2000 resamples) vs DeLong, n=10,000, equal models, {k} seeds:")
    print(f"  'not worse' verdicts agree {agree_nw / k:.0%}, 'better' agree {agree_bt / k:.0%}")
    print(f"  mean |lower bound difference| {np.mean(bound_gap):.5f} AUC")

    y, a, b = holdout(10_000, 0.3, CHALLENGER_NOISE, 0)
    print()
    print("Time of one paired bootstrap, 2000 resamples x 10,000 rows (median of 3):")
    print(f"  roc_auc: {np.median(t_boot):.3f} s (over the {k} runs above)")
    for metric in ("accuracy", "log_loss", "brier"):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            paired_bootstrap(y, a, b, metric, n_boot=2000)
            times.append(time.perf_counter() - t0)
        print(f"  {metric}: {np.median(times):.3f} s")
    t0 = time.perf_counter()
    delong(y, a, b)
    print(f"  delong (for reference): {time.perf_counter() - t0:.4f} s")


if __name__ == "__main__":
    main()
