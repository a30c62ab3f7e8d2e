"""Tests for minimoe/endpoints.py: the t distribution, the estimators' symmetry, and calibration.

The calibration tests simulate two *exchangeable* methods with realistic noise (upstream seeds ×
unseen tasks; single-run scores of 100 test examples; half the tasks near 0.1 and half near 0.9;
run-to-run noise sized so the per-seed spread of the points difference is about 4.7 points, as
measured between real upstream seeds) and check that each endpoint's interval covers 0 as often
as it claims. The naive ARG interval is shown to fail that check (the trap stays documented),
and a real +3-point effect must be found (power). Vectorised numpy: a few seconds.

Run: python -m pytest tests/test_endpoints.py -q. Tests that compute ARG or its swap null carry
the markers of exercises 7.2 (the ARG formula) and 7.3 (the swap null).
"""

from __future__ import annotations

import numpy as np
import pytest

from minimoe.endpoints import (arg_per_seed, compare, points_per_seed, swap_null, swap_p, symmetric_per_seed,
                               t_cdf, t_interval, t_quantile, verdict)


# ---------------------------------------------------------------------------------------------
# Student's t against table values


@pytest.mark.parametrize("df, q975", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157),
                                      (29, 2.045230), (129, 1.978524)])
def test_t_quantile_matches_tables(df, q975):
    assert t_quantile(0.975, df) == pytest.approx(q975, abs=1e-5)
    assert t_cdf(q975, df) == pytest.approx(0.975, abs=1e-6)
    assert t_cdf(-q975, df) == pytest.approx(0.025, abs=1e-6)


def test_t_interval_by_hand():
    out = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / np.sqrt(3)  # t(0.975, 2) · sd / √n
    assert out["estimate"] == pytest.approx(2.0)
    assert out["ci"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-5)
    assert out["p"] == pytest.approx(2 * (1 - t_cdf(2.0 / (1 / np.sqrt(3)), 2)))
    assert np.isnan(t_interval([4.0])["ci"][0])  # one seed: no spread, no interval
    assert t_interval([0.5, 0.5, 0.5])["p"] == 0.0  # zero spread around a non-zero mean


# ---------------------------------------------------------------------------------------------
# Symmetry: swapping method and base flips points and symmetric_pct exactly, never ARG


def _scores(seed: int, n_seeds: int = 4, n_tasks: int = 6, resplit: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        out.append({s: {f"task{(j + s * n_tasks) if resplit else j}": list(rng.uniform(0.02, 1.0, 5))
                        for j in range(n_tasks)} for s in range(n_seeds)})
    return out[0], out[1]


@pytest.mark.exercise
@pytest.mark.ex7_2  # reaches 7.2 before 7.3
@pytest.mark.parametrize("resplit", [False, True])
def test_points_and_symmetric_are_antisymmetric_arg_is_not(resplit):
    m, b = _scores(3, resplit=resplit)
    ab, ba = compare(m, b, n_swap=200), compare(b, m, n_swap=200)
    for name in ("points", "symmetric_pct"):
        assert ab[name]["estimate"] == pytest.approx(-ba[name]["estimate"])
        assert ab[name]["ci"] == pytest.approx([-ba[name]["ci"][1], -ba[name]["ci"][0]])
    assert ab["arg"]["reverse"] == pytest.approx(ba["arg"]["estimate"])
    assert ab["arg"]["estimate"] + ab["arg"]["reverse"] > 0  # the bias: both directions "gain"
    assert ab["arg"]["excluded"] == ba["arg"]["excluded"]  # min_base is symmetric


@pytest.mark.exercise
@pytest.mark.ex7_2  # reaches 7.2 before 7.3
def test_points_by_hand():
    m = {0: {"a": [0.5, 0.7], "b": 0.2}, 1: {"a": 0.8, "b": 0.4}}
    b = {0: {"a": 0.5, "b": 0.1}, 1: {"a": 0.6, "b": 0.4}}
    out = compare(m, b, n_swap=50)
    assert list(out["points"]["per_seed"].values()) == pytest.approx([100 * (0.1 + 0.1) / 2, 100 * 0.2 / 2])
    assert out["symmetric_pct"]["per_seed"][1] == pytest.approx(100 * (2 * 0.2 / 1.4) / 2)
    assert out["arg"]["per_seed"][0] == pytest.approx(100 * (0.2 + 1.0) / 2)


@pytest.mark.exercise
@pytest.mark.ex7_2  # reaches 7.2 before 7.3
def test_min_base_drops_the_same_pairs_both_ways():
    m = {0: {"a": 0.02, "b": 0.5}, 1: {"a": 0.4, "b": 0.03}}
    b = {0: {"a": 0.3, "b": 0.4}, 1: {"a": 0.2, "b": 0.6}}
    assert compare(m, b)["arg"]["excluded"] == compare(b, m)["arg"]["excluded"] == 2
    assert compare(m, b)["arg"]["per_seed"] == pytest.approx({0: 25.0, 1: 100.0})


def test_mismatched_inputs_are_named():
    with pytest.raises(ValueError, match="same non-empty upstream seeds"):
        compare({0: {"a": 0.5}}, {1: {"a": 0.5}})
    with pytest.raises(ValueError, match="only in method: \\['b'\\]"):
        compare({0: {"a": 0.5, "b": 0.1}}, {0: {"a": 0.5}})


@pytest.mark.exercise
@pytest.mark.ex7_2  # reaches 7.2 before 7.3
def test_swap_null_and_p_are_seeded_and_exact_for_identical_methods():
    m, b = _scores(5)
    assert compare(m, b, seed=1)["arg"] == compare(m, b, seed=1)["arg"]
    same = compare(m, m, n_swap=100)
    assert same["points"]["estimate"] == 0.0 and same["arg"]["p_swap"] == 1.0


# ---------------------------------------------------------------------------------------------
# Calibration on simulated exchangeable methods


def simulate(rng, n_sims: int, n_seeds: int, n_tasks: int = 20, effect: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Single-run scores [n_sims n_seeds n_tasks] of a method (+effect on the 0–1 scale) and a base."""
    centre = np.where(np.arange(n_tasks) % 2 == 0, -2.2, 2.2)  # tasks near 0.1 and near 0.9
    logit = centre + rng.normal(0.0, 0.7, (n_sims, n_seeds, n_tasks))  # each seed's draw of tasks

    def run(shift: float) -> np.ndarray:  # one training run (logit noise 1.2) scored on 100 examples
        p = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, 1.2, logit.shape))))
        return rng.binomial(100, np.clip(p + shift, 0.0, 1.0)) / 100.0

    return run(effect), run(0.0)


def _t_covers_zero(per_seed: np.ndarray) -> np.ndarray:
    """Whether the 95 % t interval of each row's mean covers 0: [n_sims n_seeds] → [n_sims]."""
    n = per_seed.shape[-1]
    mean, se = per_seed.mean(-1), per_seed.std(-1, ddof=1) / np.sqrt(n)
    return np.abs(mean) <= t_quantile(0.975, n - 1) * se


@pytest.mark.parametrize("n_seeds", [20, 40])
def test_primary_endpoints_cover_zero_95_percent_under_the_null(n_seeds):
    m, b = simulate(np.random.default_rng(n_seeds), 2000, n_seeds)
    spread = points_per_seed(m, b).std(-1, ddof=1).mean()
    assert 3.5 < spread < 6.0  # the simulation's noise is the real one (≈ 4.7 points per seed)
    assert 0.93 <= _t_covers_zero(points_per_seed(m, b)).mean() <= 0.97
    assert 0.93 <= _t_covers_zero(symmetric_per_seed(m, b)).mean() <= 0.97
    # The same through t_interval itself, on the first 200 simulations.
    covered = [t_interval(points_per_seed(m[i], b[i]))["ci"][0] <= 0 <= t_interval(points_per_seed(m[i], b[i]))["ci"][1]
               for i in range(200)]
    assert np.mean(covered) == pytest.approx(_t_covers_zero(points_per_seed(m[:200], b[:200])).mean())


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_naive_arg_interval_rejects_identical_methods_far_too_often():
    # The trap, kept documented: ARG's t interval over seeds "excludes 0" for exchangeable methods.
    m, b = simulate(np.random.default_rng(7), 2000, 30)
    arg = arg_per_seed(m, b, 0.05)  # [n_sims n_seeds]
    assert arg.mean() > 5.0  # biased upward, in both directions
    assert arg_per_seed(b, m, 0.05).mean() > 5.0
    assert 1.0 - _t_covers_zero(arg).mean() > 0.5  # vs the 5 % it claims


@pytest.mark.exercise
@pytest.mark.ex7_2  # reaches 7.2 before 7.3
def test_swap_null_p_is_uniform_under_the_null():
    rng = np.random.default_rng(11)
    m, b = simulate(rng, 400, 20)

    def arg_estimate(mm, bb):
        return np.nanmean(arg_per_seed(mm, bb, 0.05), axis=-1)

    ps = np.array([swap_p(float(arg_estimate(m[i], b[i])), swap_null(m[i], b[i], arg_estimate, 199, seed=i))
                   for i in range(len(m))])
    assert 0.02 <= np.mean(ps < 0.05) <= 0.08
    assert 0.4 <= np.mean(ps) <= 0.6  # roughly uniform, not piled up at 0 or 1


def test_a_real_three_point_effect_is_found():
    m, b = simulate(np.random.default_rng(13), 1000, 30, effect=0.03)
    d = points_per_seed(m, b)
    lower = d.mean(-1) - t_quantile(0.975, 29) * d.std(-1, ddof=1) / np.sqrt(30)
    assert np.mean(lower > 0) >= 0.8


# ---------------------------------------------------------------------------------------------
# Verdicts


def test_verdicts():
    assert verdict({"ci": [0.5, 2.0]}) == "established"
    assert verdict({"ci": [-3.0, -0.1]}) == "established"
    assert verdict({"ci": [-0.5, 2.0]}) == "not established"
    arg = {"ci": [2.0, 20.0], "estimate": 11.0, "swap_null": 10.0, "p_swap": 0.43, "points_ci": [-3.0, -1.0]}
    assert verdict(arg) == "artifact"
    assert verdict({**arg, "p_swap": 0.001, "points_ci": [0.2, 1.0]}) == "established"
    assert verdict({**arg, "ci": [-2.0, 20.0]}) == "not established"
    # symmetric %: established only beside points on the same side
    assert verdict({"ci": [0.1, 3.4], "estimate": 1.8, "points_ci": [-1.7, -0.1]}) == "artifact"
    assert verdict({"ci": [0.1, 3.4], "estimate": 1.8, "points_ci": [0.2, 1.0]}) == "established"
    assert verdict({"ci": [-0.1, 3.4], "estimate": 1.8, "points_ci": [0.2, 1.0]}) == "not established"


@pytest.mark.ex7_3
def test_swap_null_swaps_each_pair_with_probability_one_half():
    """swap_null alone (no ARG): method 1 and baseline 0 everywhere, so each swapped pair's
    difference is −1 and each kept pair's +1; the mean over 12 pairs has sd 1/√12 under the null."""
    def mean_diff(m, b):
        return (m - b).mean(axis=(-2, -1))
    m, b = np.ones((3, 4)), np.zeros((3, 4))
    null = swap_null(m, b, mean_diff, n_swap=2000, seed=0)
    assert null.shape == (2000,)
    assert abs(null.mean()) < 0.05 and null.std() == pytest.approx(12 ** -0.5, rel=0.1)
    assert np.array_equal(null, swap_null(m, b, mean_diff, n_swap=2000, seed=0))  # seeded
    assert (swap_null(b, b, mean_diff, n_swap=10) == 0).all()  # identical methods: every draw is 0
