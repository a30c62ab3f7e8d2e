"""Comparing two methods over upstream seeds: paired, symmetric endpoints, and ARG with its swap null.

A comparison of a method with a baseline has one unit of replication, the upstream seed: both
were trained from the same seed and scored on that seed's unseen tasks, so they form a pair.
Whatever the design (one task split for all seeds, or a new split per seed), `compare` computes
every endpoint the same way, per seed first and then over seeds:

- **points** (the primary endpoint): d_s = 100 · mean over the seed's tasks of (S_method − S_base);
  its mean over seeds with a Student-t interval and p-value (seeds are independent runs).
- **symmetric %**: 100 · mean over tasks of 2 (S_method − S_base) / (S_method + S_base), per seed,
  then the same t interval. A relative measure that cannot explode (it lies in [−200, +200]).
- **ARG** (the paper's measure, for comparison only): per seed, the mean over tasks of
  (S_method − S_base) / S_base, then the mean over seeds.

Why points and the symmetric measure, not ARG: both are *antisymmetric* — swapping method and
baseline flips their sign exactly — so when the two methods are exchangeable (no real
difference) their expected value is 0 and the interval is centred where it should be. ARG is not:
(m − b) / b and (b − m) / m do not cancel (a noisy small b inflates the ratio), so two identical
methods score a positive ARG, in both directions. That is why every ARG here travels with

- its **swap null**: the ARG expected when the methods are exchangeable, from `n_swap` draws
  that swap method and baseline at random in each (seed, task) pair; `p_swap` is the two-sided
  randomisation p-value of the observed ARG under it (exact: the observed data is one of the
  draws when the methods are exchangeable);
- its **reverse**: the ARG of the baseline over the method, by the same estimator.

The guard against tiny scores is symmetric too: a (seed, task) pair is left out of ARG when
min(S_method, S_base) < `min_base`, so the same pairs are left out in both directions and in
every swap.

Scores: {upstream_seed: {task: score or [score per data seed]}}, on a 0–1 scale; data seeds
are averaged first, as the paper's `compute_arg.py` does. Pure numpy and the standard library.
Calibrated in tests/test_endpoints.py on simulated exchangeable methods. Read next:
`minimoe/verdicts.py` (every committed study through these endpoints).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from minimoe.metrics import arg_from_means

ENDPOINTS = ("points", "symmetric_pct", "arg")


# ---------------------------------------------------------------------------------------------
# Student's t distribution (no scipy): the CDF by Simpson's rule, the quantile by bisection.
# Accurate to ~1e-9, far below what a confidence interval needs.


def t_cdf(x: float, df: int) -> float:
    """P(T ≤ x) for Student's t with `df` degrees of freedom.

    Substituting t = √df · tan θ turns the density into c · cos^(df−1) θ on [0, π/2): smooth and
    bounded, so Simpson's rule on 2,000 intervals is accurate for any x.
    """
    if not math.isfinite(x):
        return 0.0 if x < 0 else 1.0
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(math.pi)
    theta = np.linspace(0.0, math.atan(abs(x) / math.sqrt(df)), 2001)  # even number of intervals
    dens = math.exp(log_c) * np.cos(theta) ** (df - 1)
    weights = np.ones_like(theta)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    half = float(dens @ weights) * (theta[1] - theta[0]) / 3.0  # P(0 ≤ T ≤ |x|)
    return 0.5 + half if x >= 0 else 0.5 - half


@functools.lru_cache(maxsize=None)  # intervals ask again and again for the same (q, df)
def t_quantile(q: float, df: int) -> float:
    """x with P(T ≤ x) = q (0 < q < 1), by bisection on `t_cdf`."""
    lo, hi = -1e3, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean of per-seed values [n_seeds] with its Student-t interval and two-sided p (H0: mean 0).

    With fewer than 2 finite values there is no spread to measure: `ci` and `p` are NaN. Values
    all equal (zero spread) give a zero-width interval and p 0 or 1.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    if n < 2:
        return {"estimate": mean, "ci": [float("nan"), float("nan")], "p": float("nan"), "seeds": n}
    se = float(x.std(ddof=1)) / math.sqrt(n)
    half = t_quantile(0.5 + level / 2, n - 1) * se
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = 2.0 * (1.0 - t_cdf(abs(mean) / se, n - 1))
    return {"estimate": mean, "ci": [mean - half, mean + half], "p": min(max(p, 0.0), 1.0), "seeds": n}


# ---------------------------------------------------------------------------------------------
# The per-seed estimators. Input of each: method and base scores, [s n] arrays (seeds × tasks,
# NaN where a seed has no such task: with a split per seed every seed has its own tasks).


def points_per_seed(m: np.ndarray, b: np.ndarray) -> np.ndarray:
    """100 · mean over tasks of (m − b): [s n], [s n] → [s]."""
    return 100.0 * np.nanmean(m - b, axis=-1)


def symmetric_per_seed(m: np.ndarray, b: np.ndarray) -> np.ndarray:
    """100 · mean over tasks of 2 (m − b) / (m + b), 0 where both are 0: [s n], [s n] → [s]."""
    total = m + b
    rel = np.divide(2.0 * (m - b), total, out=np.zeros_like(total), where=total > 0)
    return 100.0 * np.nanmean(np.where(np.isnan(total), np.nan, rel), axis=-1)


def arg_per_seed(m: np.ndarray, b: np.ndarray, min_base: float) -> np.ndarray:
    """The paper's ARG of each seed (`metrics.arg_from_means`): [... s n], [... s n] → [... s].

    Tasks with min(m, b) < min_base are left out (symmetric: the same tasks in both directions);
    a missing task (NaN) is never kept, and a seed with no kept task has no ARG (NaN). Works on
    leading batch axes (the swap null's draws).
    """
    with np.errstate(invalid="ignore"):  # NaN (missing tasks) in the unused absolute difference
        return arg_from_means(m, b, min_base)[0]


def _mean_over_seeds(per_seed: np.ndarray) -> np.ndarray:
    """Mean over the last axis, ignoring seeds without a value (NaN where no seed has one)."""
    finite = np.isfinite(per_seed)
    with np.errstate(invalid="ignore"):
        return np.where(finite, per_seed, 0.0).sum(-1) / finite.sum(-1)


def swap_null(m: np.ndarray, b: np.ndarray, estimator, n_swap: int = 1000, seed: int = 0) -> np.ndarray:
    """`n_swap` draws [n_swap] of estimator(m', b') where each (seed, task) pair of m and b
    [s n] is swapped with probability 1/2: the estimator's distribution when the methods are
    exchangeable. `estimator` maps [... s n], [... s n] → [...]."""
    rng = np.random.default_rng(seed)
    # BEGIN EXERCISE 7.3: the swap null
    # HINT: one coin per draw and (seed, task) pair: flip = rng.random((n_swap,) + m.shape) < 0.5, [n_swap s n].
    # HINT: where a coin is True, the method's score plays the baseline and the other way round
    # HINT: (np.where); pass both swapped arrays to estimator, which handles the leading n_swap axis.
    flip = rng.random((n_swap,) + m.shape) < 0.5  # [n_swap s n]
    return estimator(np.where(flip, b, m), np.where(flip, m, b))
    # END EXERCISE 7.3


def swap_p(observed: float, null: np.ndarray) -> float:
    """Two-sided randomisation p: 2 · min(P(null ≥ obs), P(null ≤ obs)), counting the observed
    data as one draw (so p > 0 and P(p ≤ α) ≤ α), capped at 1."""
    null = null[np.isfinite(null)]
    if not (math.isfinite(observed) and len(null)):
        return float("nan")  # no pair above min_base: no ARG to test
    slack = 1e-12 * max(1.0, abs(observed))  # ties that differ only by rounding count as ties
    upper = (1 + np.sum(null >= observed - slack)) / (1 + len(null))
    lower = (1 + np.sum(null <= observed + slack)) / (1 + len(null))
    return float(min(1.0, 2.0 * min(upper, lower)))


# ---------------------------------------------------------------------------------------------
# The comparison


def score_matrix(scores: Mapping[object, Mapping[str, object]], seeds: Sequence, tasks: Sequence[str]) -> np.ndarray:
    """{seed: {task: score or [scores]}} → [s n] of data-seed means, NaN where a seed lacks a task."""
    out = np.full((len(seeds), len(tasks)), np.nan)
    col = {t: j for j, t in enumerate(tasks)}
    for i, s in enumerate(seeds):
        for task, v in scores[s].items():
            out[i, col[task]] = float(np.mean(v))
    return out


def paired_matrices(method: Mapping, base: Mapping) -> tuple[list, np.ndarray, np.ndarray]:
    """(seeds, m [s n], b [s n]) over the union of tasks; a ValueError naming what does not pair."""
    if set(method) != set(base) or not method:
        raise ValueError(f"method and base need the same non-empty upstream seeds; got "
                         f"{sorted(method, key=str)} and {sorted(base, key=str)}")
    seeds = sorted(method, key=lambda s: (str(type(s)), s))
    for s in seeds:
        if set(method[s]) != set(base[s]) or not method[s]:
            only_m, only_b = sorted(set(method[s]) - set(base[s])), sorted(set(base[s]) - set(method[s]))
            raise ValueError(f"seed {s!r}: method and base must score the same non-empty tasks; "
                             f"only in method: {only_m}, only in base: {only_b}")
    tasks = sorted({t for s in seeds for t in method[s]})
    return seeds, score_matrix(method, seeds, tasks), score_matrix(base, seeds, tasks)


def compare(method: Mapping, base: Mapping, n_swap: int = 1000, seed: int = 0, level: float = 0.95,
            min_base: float = 0.05) -> dict:
    """Every endpoint of method vs base. Inputs {seed: {task: score or [scores]}}.

    Returns {"seeds": n, "points": {...}, "symmetric_pct": {...}, "arg": {...}} where points and
    symmetric_pct hold `estimate`, `ci` [lo, hi], `p` (Student t over seeds) and `per_seed`
    {seed: value};
    arg holds `estimate`, `ci` (the same t interval: descriptive only, it is biased),
    `swap_null` (mean of the null), `p_swap`, `reverse` (ARG of base over method) and
    `excluded` (pairs left out by min_base). Only points and symmetric_pct judge a claim.

    Deviations: the paper reports one ARG, from one upstream run, with no interval or null.
    """
    seeds, m, b = paired_matrices(method, base)
    out = {"seeds": len(seeds)}
    for name, fn in (("points", points_per_seed), ("symmetric_pct", symmetric_per_seed)):
        per_seed = fn(m, b)
        out[name] = {**t_interval(per_seed, level), "per_seed": dict(zip(seeds, map(float, per_seed)))}

    def arg_estimate(mm, bb):
        return _mean_over_seeds(arg_per_seed(mm, bb, min_base))

    per_seed = arg_per_seed(m, b, min_base)
    observed = float(_mean_over_seeds(per_seed))
    null = swap_null(m, b, arg_estimate, n_swap, seed)
    out["arg"] = {**t_interval(per_seed, level), "per_seed": dict(zip(seeds, map(float, per_seed))),
                  "swap_null": float(_mean_over_seeds(null)), "p_swap": swap_p(observed, null),
                  "reverse": float(arg_estimate(b, m)),
                  "excluded": int(np.sum(np.isfinite(m) & ~(np.minimum(m, b) >= min_base)))}
    return out


def verdict(row: dict, alpha: float = 0.05) -> str:
    """"established" / "not established" / "artifact" for one endpoint of `compare`.

    points (the primary endpoint): established when its interval excludes 0. Any other endpoint
    carries the points interval in row["points_ci"] and is established only where the points
    are, on the same side: symmetric % when its own interval also excludes 0 (it weights hard
    tasks more, so it can disagree); ARG when its swap-null p < alpha (it is compared with its
    null, not with 0). An ARG or symmetric % interval that excludes 0 without that is an "artifact".
    """
    lo, hi = row["ci"]
    excludes = bool(np.isfinite(lo) and (lo > 0 or hi < 0))
    if "points_ci" not in row:
        return "established" if excludes else "not established"
    p_lo, p_hi = row["points_ci"]
    centre = row.get("swap_null", 0.0)  # ARG is read against its null, the others against 0
    same_side = (p_lo > 0 and row["estimate"] > centre) or (p_hi < 0 and row["estimate"] < centre)
    significant = row["p_swap"] < alpha if "p_swap" in row else excludes
    if significant and same_side:
        return "established"
    return "artifact" if excludes else "not established"
