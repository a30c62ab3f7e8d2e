"""Tests for minimoe/metrics.py: task metrics and ARG (comparisons over seeds: test_endpoints.py).

What is checked: exact match / accuracy / macro-F1 on hand-computed cases (several acceptable
outputs, predictions outside the label set, labels without support); `score` dispatch and its
error for an unknown metric; ARG on hand-computed scores (numbers written out below) and the
symmetric `min_base` guard (the same tasks left out in both directions); batching over leading
axes.

Run: `python -m pytest tests/test_metrics.py -q` (about a second). Exercise tests carry
`exercise` and `ex7_1` (macro-F1) or `ex7_2` (the ARG formula).
"""

import math

import numpy as np
import pytest

from minimoe.errors import DataError
from minimoe.metrics import (
    accuracy, arg, arg_from_means, exact_match, macro_f1, normalize, relative_gain, score,
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


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_arg_from_means_batches_over_leading_axes():
    m, b = np.array([[0.6, 0.3], [0.5, 0.5]]), np.array([[0.5, 0.3], [0.5, 0.01]])
    arg_pct, abs_diff = arg_from_means(m, b, min_base=0.05)
    assert arg_pct == pytest.approx([10.0, 0.0])  # row 2: the .01 baseline is left out
    assert abs_diff == pytest.approx([5.0, 24.5])


@pytest.mark.exercise
@pytest.mark.ex7_2
def test_arg_min_base_is_symmetric():
    """A task is left out when *either* score is below min_base, so both directions drop it."""
    m, b = np.array([0.6, 0.02, 0.5]), np.array([0.5, 0.4, 0.03])
    assert arg_from_means(m, b, 0.05)[0] == pytest.approx(20.0)
    assert arg_from_means(b, m, 0.05)[0] == pytest.approx(100 * (0.5 - 0.6) / 0.6)
    assert arg({"a": [0.02]}, {"a": [0.4]})["excluded"] == arg({"a": [0.4]}, {"a": [0.02]})["excluded"] == ["a"]
