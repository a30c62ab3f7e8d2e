"""Tests for minimoe/metrics.py: task metrics, ARG and its two-level bootstrap CI.

What is checked: exact match / accuracy / macro-F1 on hand-computed cases (several acceptable
outputs, predictions outside the label set, labels without support); `score` dispatch and its
error for an unknown metric; ARG on hand-computed scores (numbers written out below) and the
`min_base` guard; the bootstrap against a naive loop over replicates, its CI containing the
point estimate, narrowing with more tasks, deterministic by seed, excluding 0 for a planted
+20 % effect, and fast enough for 2000 replicates.

Run: `python -m pytest tests/test_metrics.py -q` (about a second). Exercise tests carry
`exercise` and `ex7_1` (macro-F1) or `ex7_2` (the ARG formula).
"""

import math
import time

import numpy as np
import pytest

from minimoe.errors import DataError
from minimoe.metrics import (
    accuracy, arg, arg_from_means, bootstrap_arg_ci, bootstrap_split_arg_ci, exact_match, macro_f1, normalize, relative_gain, score,
)


# --- exact match and accuracy -----------------------------------------------------------------

def test_normalize_lowercases_strips_and_collapses_spaces():
    assert normalize("  The   Cat\tsat \n") == "the cat sat"


def test_exact_match_accepts_any_acceptable_output():
    assert exact_match("Paris", ["london", " paris "]) == 1.0
    assert exact_match("paris france", ["Paris, France"]) == 0.0  # no punctuation stripping
    assert exact_match("Lyon", "lyon") == 1.0  # a bare string is one gold, not its characters
    assert exact_match("l", "lyon") == 0.0


def test_accuracy_hand_computed():
    preds = ["a", "B ", "c", "x"]
    golds = [["a"], ["bee", "b"], ["see", "c"], ["y"]]
    assert accuracy(preds, golds) == 0.75  # 3 of 4 match one of their acceptable outputs
    assert score("em", preds, golds) == score("acc", preds, golds) == 0.75


def test_accuracy_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        accuracy(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


# --- macro-F1 ---------------------------------------------------------------------------------

@pytest.mark.exercise
@pytest.mark.ex7_1
def test_macro_f1_hand_computed():
    labels = ["pos", "neg", "neutral"]
    preds = ["pos", "pos", "neg", "maybe", "neg", "POS"]
    golds = [["pos"], ["neg"], ["neg"], ["pos"], ["neg"], ["pos"]]
    # pos: support 3 (rows 0 3 5), predicted 3 (0 1 5), TP 2 → F1 = 2·2/(3+3) = 2/3
    # neg: support 3 (1 2 4), predicted 2 (2 4), TP 2 → F1 = 2·2/(3+2) = 4/5
    # neutral: support 0, predicted 0 → skipped; "maybe" is a miss for pos, a hit for nobody
    assert macro_f1(preds, golds, labels) == pytest.approx((2 / 3 + 4 / 5) / 2, abs=1e-12)


@pytest.mark.exercise
@pytest.mark.ex7_1
def test_macro_f1_label_predicted_but_never_gold_scores_zero():
    # a: support 2, predicted 1, TP 1 → 2/3; b: skipped; c: support 0, predicted 1 → 0
    assert macro_f1(["a", "c"], [["a"], ["a"]], ["a", "b", "c"]) == pytest.approx(1 / 3, abs=1e-12)


@pytest.mark.exercise
@pytest.mark.ex7_1
def test_macro_f1_several_acceptable_outputs_and_perfect_score():
    golds = [["yes", "true"], ["no"], ["no", "false"]]
    assert macro_f1(["true", "no", "false"], golds, ["yes", "no"]) == 1.0
    assert score("macro_f1", ["true", "no", "false"], golds, labels=["yes", "no"]) == 1.0


@pytest.mark.exercise
@pytest.mark.ex7_1
def test_score_macro_f1_infers_labels_from_golds():
    # inferred labels {a, b}: a F1 = 2·1/(1+2) = 2/3, b F1 = 2·1/(2+1) = 2/3
    preds, golds = ["a", "a", "b"], [["a"], ["b"], ["b"]]
    assert score("macro_f1", preds, golds) == pytest.approx(2 / 3, abs=1e-12)


def test_macro_f1_rejects_gold_outside_label_set():
    with pytest.raises(DataError, match="not in the label set"):
        macro_f1(["a"], [["zebra"]], ["a", "b"])


def test_score_unknown_metric_names_the_valid_ones():
    with pytest.raises(ValueError, match="did you mean 'macro_f1'.*em, acc, macro_f1"):
        score("macro_f2", ["a"], [["a"]])


# --- ARG --------------------------------------------------------------------------------------

# Per data seed scores. Seed-averaged: method t1 .7 t2 .5 t3 .3 | base t1 .5 t2 .5 t3 .2
METHOD = {"t1": [0.6, 0.8], "t2": [0.5], "t3": [0.25, 0.35]}
BASE = {"t1": [0.5, 0.5], "t2": [0.4, 0.6], "t3": [0.2, 0.2]}


def test_relative_gain_formula_and_zero_guard():
    assert relative_gain(0.6, 0.5) == pytest.approx(0.2)
    assert relative_gain(0.3, 0.6) == pytest.approx(-0.5)
    assert np.isfinite(relative_gain(0.1, 0.0))  # eps stops a division by exactly 0


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_arg_hand_computed():
    result = arg(METHOD, BASE)
    # RG on seed-averaged scores: t1 (.7−.5)/.5 = .4, t2 (.5−.5)/.5 = 0, t3 (.3−.2)/.2 = .5
    # ARG = 100·(.4 + 0 + .5)/3 = 30 %; abs_diff = 100·(.2 + 0 + .1)/3 = 10 points
    assert result["arg"] == pytest.approx(30.0, abs=1e-9)
    assert result["abs_diff"] == pytest.approx(10.0, abs=1e-9)
    assert result["excluded"] == []
    assert result["per_task"]["t1"] == pytest.approx({"method": 0.7, "base": 0.5, "rg": 0.4})
    # Averaging RG per seed instead would give t2 ((.5−.4)/.4 + (.5−.6)/.6)/2 ≠ 0: not the paper's rule.
    assert result["per_task"]["t2"]["rg"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_arg_min_base_excludes_and_reports_tiny_baselines():
    method, base = {**METHOD, "t4": [0.1]}, {**BASE, "t4": [0.02, 0.0]}  # t4 base .01
    result = arg(method, base)
    assert result["excluded"] == ["t4"]
    assert result["arg"] == pytest.approx(30.0, abs=1e-9)  # unchanged: t4 left out
    assert result["abs_diff"] == pytest.approx(100 * (0.2 + 0 + 0.1 + 0.09) / 4, abs=1e-9)  # t4 kept here
    # Without the guard t4's RG (.1−.01)/.01 = 9 dominates: 100·(.4 + 0 + .5 + 9)/4 = 247.5 %
    assert arg(method, base, min_base=0.0)["arg"] == pytest.approx(247.5, abs=1e-9)
    assert math.isnan(arg({"t": [0.1]}, {"t": [0.01]})["arg"])  # nothing left to average


def test_arg_rejects_mismatched_tasks():
    with pytest.raises(ValueError, match="only in method: \\['t9'\\]"):
        arg({**METHOD, "t9": [0.5]}, BASE)


# --- bootstrap --------------------------------------------------------------------------------

def make_results(n_tasks, n_seeds, gain, spread, seed, n_data=3):
    """{upstream seed: {task: [data-seed scores]}} for method and base; method ≈ base·(1 + gain_task)."""
    rng = np.random.default_rng(seed)
    task_base = rng.uniform(0.3, 0.8, n_tasks)
    task_gain = gain + spread * rng.standard_normal(n_tasks)
    method, base = {}, {}
    for s in range(n_seeds):
        b = task_base[:, None] + 0.03 * rng.standard_normal((n_tasks, n_data))
        m = b * (1 + task_gain[:, None]) + 0.01 * rng.standard_normal((n_tasks, n_data))
        base[s] = {f"task{i}": list(b[i]) for i in range(n_tasks)}
        method[s] = {f"task{i}": list(m[i]) for i in range(n_tasks)}
    return method, base


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_bootstrap_matches_a_naive_loop_over_replicates():
    method, base = make_results(n_tasks=6, n_seeds=3, gain=0.1, spread=0.2, seed=1)
    result = bootstrap_arg_ci(method, base, n_boot=200, seed=7)
    # Same draws as the implementation: seeds [n_boot n_seeds] first, then tasks [n_boot n].
    rng = np.random.default_rng(7)
    seed_draw, task_draw = rng.integers(0, 3, (200, 3)), rng.integers(0, 6, (200, 6))
    tasks = sorted(method[0])
    reps = []
    for seeds, picks in zip(seed_draw, task_draw):
        avg = lambda res, t: np.mean([np.mean(res[s][t]) for s in seeds])  # noqa: E731
        reps.append(arg({f"{j}": [avg(method, tasks[i])] for j, i in enumerate(picks)},
                        {f"{j}": [avg(base, tasks[i])] for j, i in enumerate(picks)})["arg"])
    assert [result["lo"], result["hi"]] == pytest.approx(np.percentile(reps, [2.5, 97.5]), abs=1e-9)
    for s in range(3):
        assert result["per_seed"][s] == pytest.approx(arg(method[s], base[s])["arg"], abs=1e-9)


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_split_bootstrap_averages_per_seed_args_over_each_seeds_own_tasks():
    """A split per seed (`reproduce --resplit`): ARG_s over seed s's tasks, the mean over seeds,
    and a one-level bootstrap over seeds — checked against a hand computation and a naive loop."""
    method = {0: {"a": [0.6], "b": [0.5]}, 1: {"c": [0.9, 0.7]}, 2: {"a": [0.4], "d": [0.2]}}
    base = {0: {"a": [0.5], "b": [0.5]}, 1: {"c": [1.0, 0.6]}, 2: {"a": [0.5], "d": [0.25]}}
    per_seed = {0: 100 * (0.2 + 0.0) / 2, 1: 0.0, 2: 100 * (-0.2 - 0.2) / 2}  # RG (m − b) / b per task
    result = bootstrap_split_arg_ci(method, base, n_boot=300, seed=5)
    assert result["per_seed"] == pytest.approx(per_seed)
    assert result["arg"] == pytest.approx(np.mean(list(per_seed.values())))
    assert result["abs_diff"] == pytest.approx(100 * np.mean([0.05, 0.0, -0.075]))
    draws = np.random.default_rng(5).integers(0, 3, (300, 3))
    reps = [np.mean([per_seed[i] for i in row]) for row in draws]
    assert [result["lo"], result["hi"]] == pytest.approx(np.percentile(reps, [2.5, 97.5]))
    same = {s: {"a": [0.6], "b": [0.5]} for s in range(4)}
    flat = bootstrap_split_arg_ci(same, {s: {"a": [0.5], "b": [0.5]} for s in range(4)})
    assert flat["lo"] == pytest.approx(flat["hi"]) == pytest.approx(10.0)  # no spread between seeds
    with pytest.raises(ValueError, match="same tasks"):
        bootstrap_split_arg_ci({0: {"a": [0.5]}}, {0: {"b": [0.5]}})


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_bootstrap_ci_contains_point_and_is_deterministic():
    method, base = make_results(n_tasks=12, n_seeds=4, gain=0.05, spread=0.2, seed=2)
    first = bootstrap_arg_ci(method, base, n_boot=500, seed=3)
    assert first["lo"] <= first["arg"] <= first["hi"]
    assert first["abs_lo"] <= first["abs_diff"] <= first["abs_hi"]
    assert bootstrap_arg_ci(method, base, n_boot=500, seed=3) == first
    assert bootstrap_arg_ci(method, base, n_boot=500, seed=4)["lo"] != first["lo"]


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_bootstrap_ci_shrinks_with_more_tasks():
    widths = []
    for n_tasks in (5, 80):
        result = bootstrap_arg_ci(*make_results(n_tasks, 3, gain=0.05, spread=0.3, seed=5), n_boot=500)
        widths.append(result["hi"] - result["lo"])
    assert widths[1] < 0.6 * widths[0]  # ≈ sqrt(5/80) = 0.25 in expectation


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_bootstrap_planted_effect_excludes_zero_single_and_many_seeds():
    for n_seeds in (1, 5):
        result = bootstrap_arg_ci(*make_results(20, n_seeds, gain=0.2, spread=0.0, seed=6))
        assert result["arg"] == pytest.approx(20.0, abs=3.0)
        assert 0 < result["lo"] <= result["arg"] <= result["hi"]
        assert list(result["per_seed"]) == list(range(n_seeds))


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_bootstrap_is_fast_for_2000_replicates_20_tasks_5_seeds():
    method, base = make_results(20, 5, gain=0.1, spread=0.2, seed=8)
    start = time.perf_counter()
    bootstrap_arg_ci(method, base, n_boot=2000)
    assert time.perf_counter() - start < 1.0  # vectorised: a few ms; a Python loop would take ~1 s


def test_bootstrap_rejects_unpaired_seeds():
    method, base = make_results(4, 2, gain=0.1, spread=0.1, seed=9)
    with pytest.raises(ValueError, match="same non-empty upstream seeds"):
        bootstrap_arg_ci(method, {0: base[0]})


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_arg_from_means_batches_over_leading_axes():
    m, b = np.array([[0.6, 0.3], [0.5, 0.5]]), np.array([[0.5, 0.3], [0.5, 0.01]])
    arg_pct, abs_diff = arg_from_means(m, b, min_base=0.05)
    assert arg_pct == pytest.approx([10.0, 0.0])  # row 2: the .01 baseline is left out
    assert abs_diff == pytest.approx([5.0, 24.5])
