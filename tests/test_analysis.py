"""Tests for minimoe/analysis.py: route/category statistics (p-values: test_permutation.py; figures: test_figures.py).

What is checked: route signatures on a hand-made table; NMI oracles (identical and relabelled
labelings give 1, independent ones ≈ 0, a 4-element case computed by hand, constant labelings);
signature NMI vs per-layer NMI on a table where they differ by construction; expert selectivity
against a hand computation and its invariances; AMI's expected mutual information against the
mean over every permutation of a small labelling (exact enumeration), AMI 1 / ≈0 / chance-free.

Run: `python -m pytest tests/test_analysis.py -q` (a few seconds). Exercise
tests carry `exercise` and `ex8_1` (NMI).
"""

import itertools
import math

import numpy as np
import pytest

from minimoe.analysis import (
    adjusted_mutual_info, expected_mutual_info, expert_selectivity, mean_selectivity, normalized_mutual_info,
    per_layer_ami, per_layer_nmi, route_category_nmi, route_signatures,
)
from route_tables import CATS, one_hot_routes, planted_routes


def test_route_signatures_group_equal_argmax_tuples():
    routes = np.array([[[0.9, 0.1], [0.2, 0.8]],    # (0, 1)
                       [[0.6, 0.4], [0.4, 0.6]],    # (0, 1): soft, same argmax
                       [[0.1, 0.9], [0.7, 0.3]]])   # (1, 0)
    ids = route_signatures(routes)
    assert ids.shape == (3,)
    assert ids[0] == ids[1] != ids[2]


# --- NMI --------------------------------------------------------------------------------------

@pytest.mark.exercise
@pytest.mark.ex8_1
def test_nmi_identical_and_relabelled_labelings_give_one():
    a = ["x", "x", "y", "z", "z", "z"]
    assert normalized_mutual_info(a, a) == pytest.approx(1.0, abs=1e-12)
    assert normalized_mutual_info(a, [7, 7, 0, 3, 3, 3]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.exercise
@pytest.mark.ex8_1
def test_nmi_hand_computed_four_elements():
    # a = 0 0 1 1, b = 0 0 0 1: joint p(0,0) = 1/2, p(1,0) = 1/4, p(1,1) = 1/4; p_a = (1/2, 1/2), p_b = (3/4, 1/4)
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.25))
    h_a, h_b = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = mi / ((h_a + h_b) / 2)  # = 0.215762 / ((0.693147 + 0.562335) / 2) = 0.343711
    assert expected == pytest.approx(0.343711, abs=1e-6)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected, abs=1e-12)
    assert normalized_mutual_info([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(expected, abs=1e-12)  # symmetric


@pytest.mark.exercise
@pytest.mark.ex8_1
def test_nmi_independent_labelings_near_zero_and_constant_cases():
    rng = np.random.default_rng(0)
    assert normalized_mutual_info(rng.integers(0, 3, 20000), rng.integers(0, 4, 20000)) < 0.005
    assert normalized_mutual_info([1, 1, 1], ["a", "a", "a"]) == 1.0  # one group each: same partition
    assert normalized_mutual_info([1, 1, 1], ["a", "b", "b"]) == 0.0  # a constant tells nothing


def test_nmi_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        normalized_mutual_info([0, 1], [0, 1, 2])


@pytest.mark.exercise
@pytest.mark.ex8_1
def test_route_nmi_planted_routes_give_one():
    routes = planted_routes(CATS)
    assert route_category_nmi(routes, CATS) == pytest.approx(1.0, abs=1e-12)
    assert per_layer_nmi(routes, CATS) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.exercise
@pytest.mark.ex8_1
def test_signature_nmi_vs_per_layer_nmi_when_every_signature_is_unique():
    # 27 tasks take all 27 routes (i, j, k) over 3 layers × 3 experts; category = (i + j + k) mod 3.
    choices = list(itertools.product(range(3), repeat=3))
    cats = [str(sum(c) % 3) for c in choices]
    routes = one_hot_routes(choices, 3)
    # Signatures are unique, so I = H(category) = log 3 and NMI = log 3 / ((log 27 + log 3)/2) = 0.5;
    # one layer alone says nothing about (i + j + k) mod 3, so per-layer NMI = 0.
    assert route_category_nmi(routes, cats) == pytest.approx(0.5, abs=1e-12)
    assert per_layer_nmi(routes, cats) == pytest.approx(0.0, abs=1e-12)


# --- expert selectivity -----------------------------------------------------------------------

# --- AMI: NMI adjusted for chance ------------------------------------------------------------

def _mi(a, b) -> float:
    """I(a; b) in nats, straight from the definition (the oracle)."""
    a, b = np.asarray(a), np.asarray(b)
    total = 0.0
    for x in set(a.tolist()):
        for y in set(b.tolist()):
            p_xy = np.mean((a == x) & (b == y))
            if p_xy > 0:
                total += p_xy * math.log(p_xy / (np.mean(a == x) * np.mean(b == y)))
    return total


@pytest.mark.exercise
@pytest.mark.ex8_1  # AMI is built on normalized_mutual_info
@pytest.mark.parametrize("a, b", [([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1]), ([0, 0, 0, 0, 1, 2], [0, 1, 1, 2, 2, 2])])
def test_expected_mutual_info_equals_the_mean_over_every_permutation(a, b):
    exact = np.mean([_mi(a, [b[i] for i in perm]) for perm in itertools.permutations(range(len(b)))])
    sizes = [tuple(sorted(np.unique(x, return_counts=True)[1].tolist())) for x in (a, b)]
    assert expected_mutual_info(*sizes) == pytest.approx(exact, abs=1e-12)
    # AMI of every permutation averages to 0: chance gives nothing.
    amis = [adjusted_mutual_info(a, [b[i] for i in perm]) for perm in itertools.permutations(range(len(b)))]
    assert np.mean(amis) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.exercise
@pytest.mark.ex8_1
def test_ami_identical_relabelled_and_chance():
    a = ["x", "x", "y", "z", "z", "z"]
    assert adjusted_mutual_info(a, [7, 7, 0, 3, 3, 3]) == pytest.approx(1.0, abs=1e-12)
    assert adjusted_mutual_info([1, 1, 1], ["a", "a", "a"]) == 1.0
    assert adjusted_mutual_info([1, 1, 1], ["a", "b", "b"]) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    # Unrelated labelings of 30 items: NMI well above 0, AMI near 0 on average.
    pairs = [(rng.integers(0, 3, 30), rng.integers(0, 3, 30)) for _ in range(300)]
    assert np.mean([normalized_mutual_info(x, y) for x, y in pairs]) > 0.03
    assert abs(np.mean([adjusted_mutual_info(x, y) for x, y in pairs])) < 0.01


@pytest.mark.exercise
@pytest.mark.ex8_1
def test_per_layer_ami_planted_routes_give_one():
    assert per_layer_ami(planted_routes(CATS), CATS) == pytest.approx(1.0, abs=1e-12)


def test_expert_selectivity_hand_computed():
    routes = one_hot_routes([[0], [1], [0]], 2)  # [3 1 2]; categories a a b
    share = expert_selectivity(routes, ["a", "a", "b"])
    # mean gate per category: a (.5, .5), b (1, 0) → expert 0 (.5, 1)/1.5, expert 1 (.5, 0)/.5
    assert share.shape == (1, 2, 2)
    np.testing.assert_allclose(share[0], [[1 / 3, 2 / 3], [1.0, 0.0]], atol=1e-12)
    # peaks rescaled: e0 (2/3 − 1/2)/(1/2) = 1/3, e1 1; weighted by usage 2 and 1 → 5/9
    assert mean_selectivity(routes, ["a", "a", "b"]) == pytest.approx(5 / 9, abs=1e-12)


def test_expert_selectivity_invariances():
    cats = ["a"] * 5 + ["b"] * 2 + ["c"]  # unequal category sizes
    uniform = np.full((8, 2, 4), 0.25)
    np.testing.assert_allclose(expert_selectivity(uniform, cats), 1 / 3, atol=1e-12)
    assert mean_selectivity(uniform, cats) == pytest.approx(0.0, abs=1e-12)
    unused = one_hot_routes([[0, 0]] * 8, 3)  # experts 1 and 2 never chosen
    np.testing.assert_allclose(expert_selectivity(unused, cats)[:, 1:], 1 / 3, atol=1e-12)
    share = expert_selectivity(planted_routes(CATS), CATS)
    np.testing.assert_allclose(share.sum(axis=-1), 1.0, atol=1e-12)
    assert mean_selectivity(planted_routes(CATS), CATS) == pytest.approx(1.0, abs=1e-12)
