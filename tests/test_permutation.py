"""Tests for minimoe/permutation.py: is a route statistic more than chance?

What is checked: the permutation test's p-values are roughly uniform on random data (200
datasets, 99 permutations each), minimal on planted structure, seeded, and count ties; the
skill-level (block) test separates skill structure from category structure and refuses a null
with one draw; the stratified test (seeds with their own tasks) equals the plain and block tests
on one stratum, is roughly uniform under its null, finds a weak association spread over many
strata that no single stratum shows, and with shared shuffles equals the plain test on identical
strata and does not count a task's chance alignment once per seed; `report.stratified_route_stats`
with one stratum is `report.route_stats`; bad strata get errors that name the problem; the
chance level (figures' chance line) is the mean statistic under shuffled categories.

Run: `python -m pytest tests/test_permutation.py -q` (seconds). Exercise tests carry `exercise`
and `ex8_2` (permutation p-value; some also use `per_layer_nmi`, exercise 8.1), or `ex8_3` (one
draw of the skill-controlled null: skills move whole, within their size class, uniformly).
"""

import numpy as np
import pytest

from minimoe.analysis import mean_selectivity, per_layer_ami, per_layer_nmi
from minimoe.permutation import (DegenerateNull, _block_shuffler, block_permutation_test, chance_level,
                                 permutation_test, stratified_permutation_test)
from route_tables import CATS, one_hot_routes, planted_routes


# --- permutation test -------------------------------------------------------------------------

def gap_stat(routes, cats):
    """A cheap continuous statistic: |mean gate of expert 0 at layer 0, category a − category b|."""
    gate = routes[:, 0, 0]
    return abs(gate[cats == "a"].mean() - gate[cats == "b"].mean())


@pytest.mark.exercise
@pytest.mark.ex8_2
def test_permutation_p_values_roughly_uniform_on_random_data():
    rng = np.random.default_rng(0)
    cats = np.array(["a"] * 6 + ["b"] * 6)
    p_values = [permutation_test(gap_stat, rng.random((12, 1, 2)), cats, n_perm=99, seed=i)[1]
                for i in range(200)]
    # Exact test: P(p < 0.1) = P(at most 8 of 99 shuffles ≥ observed) = 9/100; ±3 sd over 200 datasets.
    assert 0.03 <= np.mean(np.array(p_values) < 0.1) <= 0.2
    assert min(p_values) >= 1 / 100  # never 0: the observed labelling counts as one permutation


@pytest.mark.exercise
@pytest.mark.ex8_2
def test_permutation_p_value_minimal_on_planted_structure_and_seeded():
    routes = planted_routes(CATS)
    observed, p = permutation_test(mean_selectivity, routes, CATS, n_perm=199, seed=0)
    assert observed == pytest.approx(1.0)
    assert p == pytest.approx(1 / 200) and p < 0.01  # no shuffle of 12 labels reaches 1 in 199 tries
    assert permutation_test(mean_selectivity, routes, CATS, n_perm=199, seed=0) == (observed, p)


@pytest.mark.exercise
@pytest.mark.ex8_2
def test_permutation_ties_count_as_at_least_observed():
    # The sum of all gates does not depend on the labels, but summing in label order rounds
    # differently per shuffle (about 2/3 of shuffles land 1 ulp below): ties, so p must be 1.
    routes = np.zeros((12, 1, 2))
    routes[:, 0, 0] = [0.1, 0.2, 0.3, 0.7, 1.1, 3.3, 0.01, 0.6, 2.2, 0.9, 5.5, 0.45]
    label_order_sum = lambda r, c: sum(r[np.argsort(c, kind="stable"), 0, 0].tolist())  # noqa: E731
    assert permutation_test(label_order_sum, routes, CATS, n_perm=49)[1] == 1.0
    big = np.random.default_rng(1).random((12, 1, 2)) * 1e6  # rounding errors ≈ 1e-10 ≫ 1e-12
    assert permutation_test(label_order_sum, big, CATS, n_perm=49)[1] == 1.0  # so the slack is relative


@pytest.mark.ex8_1  # per_layer_nmi
def test_chance_level_is_the_statistic_under_shuffled_categories():
    """The chance line of the route figures: above 0 for NMI on 12 tasks, far below planted routes' 1."""
    routes = planted_routes(CATS)
    chance = chance_level(per_layer_nmi, routes, CATS, n_perm=200)
    assert 0.0 < chance < 0.5 and per_layer_nmi(routes, CATS) == pytest.approx(1.0)
    assert chance_level(per_layer_nmi, routes, CATS, n_perm=200) == chance  # seeded
    assert chance_level(lambda r, c: 0.25, routes, CATS) == 0.25  # labels ignored: its own value


# --- exercise 8.3: one draw of the skill-controlled null (`_block_shuffler`) ----------------------
# Six skills in two categories, listed out of order and interleaved, so that a draw must map
# every task to its own skill by name: sizes 3, 2, 2 (category a) and 3, 2, 1 (category b).
SKILLS = np.array(["s3", "s0", "s1", "s0", "s4", "s3", "s2", "s0", "s1", "s5", "s4", "s2", "s3"])
SKILL_CAT = {"s0": "a", "s1": "a", "s2": "a", "s3": "b", "s4": "b", "s5": "b"}
SKILL_CATS = np.array([SKILL_CAT[s] for s in SKILLS])


def block_draws(same_size, n=600, seed=0):
    """n draws of the null, each as the skill → category table it implies (and checked to be one)."""
    draw, rng, tables = _block_shuffler(list(SKILL_CATS), list(SKILLS), same_size), np.random.default_rng(seed), []
    for _ in range(n):
        new = draw(rng)
        assert isinstance(new, np.ndarray) and new.shape == SKILLS.shape
        table = {s: set(new[SKILLS == s].tolist()) for s in SKILL_CAT}
        assert all(len(c) == 1 for c in table.values()), f"a skill's tasks were split: {table}"
        tables.append(tuple(sorted((s, c.pop()) for s, c in table.items())))
    return tables


def assert_roughly_uniform(tables, n_outcomes):
    counts = np.array(list({t: tables.count(t) for t in set(tables)}.values()))
    assert len(counts) == n_outcomes, f"{len(counts)} distinct draws, expected {n_outcomes}"
    assert counts.min() > 0.4 * len(tables) / n_outcomes  # loose: 600 draws, at most 20 outcomes


@pytest.mark.ex8_3
def test_block_draws_swap_whole_skills_of_one_size():
    """same_size=True: a skill moves as a whole and only trades places with a skill of its size,
    so each category keeps its number of tasks; every such assignment is equally likely."""
    tables = block_draws(same_size=True)
    for table in tables:
        cats = dict(table)
        assert sorted(cats[s] for s in ("s0", "s3")) == ["a", "b"]  # the two of size 3
        assert cats["s5"] == "b"  # the only skill of size 1 cannot move
        assert sorted(cats[s] for s in ("s1", "s2", "s4")) == ["a", "a", "b"]  # size 2: two in a, one in b
    assert_roughly_uniform(tables, 2 * 3)  # size 3: 2 ways; size 2: 3 ways


@pytest.mark.ex8_3
def test_block_draws_of_any_size_keep_each_categorys_number_of_skills():
    """same_size=False: any two skills may trade places; each category keeps 3 skills, not its task
    count; all C(6, 3) = 20 assignments are equally likely."""
    tables = block_draws(same_size=False)
    assert all(sum(c == "a" for _, c in table) == 3 for table in tables)
    assert_roughly_uniform(tables, 20)
    sizes = {sum((SKILLS == s).sum() for s, c in table if c == "a") for table in tables}
    assert len(sizes) > 2  # category a's task count changes from draw to draw


@pytest.mark.ex8_3
def test_block_draws_are_seeded_and_fresh_on_every_call():
    draw = _block_shuffler(SKILL_CATS, SKILLS, same_size=False)
    first = [draw(np.random.default_rng(7)).tolist() for _ in range(2)]
    assert first[0] == first[1]  # the same generator state, the same draw
    rng = np.random.default_rng(7)
    assert len({tuple(draw(rng).tolist()) for _ in range(20)}) > 1  # one generator: new draws


@pytest.mark.ex8_3
def test_block_shuffler_refuses_split_skills_and_a_null_with_one_draw():
    """A skill in two categories is a ValueError; when no size class holds skills of two categories
    (or there is one category), every draw is the observed labelling: DegenerateNull."""
    with pytest.raises(ValueError) as split:
        _block_shuffler(["a", "a", "b", "b"], ["s0", "s0", "s0", "s1"])
    assert not isinstance(split.value, DegenerateNull)
    lone = ["s0"] * 2 + ["s1"] * 2 + ["s2"] * 3 + ["s3"] * 3
    with pytest.raises(DegenerateNull):
        _block_shuffler(["a"] * 4 + ["b"] * 6, lone)  # sizes 2, 2 in a; 3, 3 in b
    with pytest.raises(DegenerateNull):
        _block_shuffler(["a"] * 5, ["s0", "s0", "s1", "s2", "s2"], same_size=False)  # one category
    _block_shuffler(["a"] * 4 + ["b"] * 6, lone, same_size=False)  # any size: a real null


@pytest.mark.exercise  # per_layer_nmi is exercise 8.1
def test_block_permutation_separates_skill_from_category_structure():
    """Skills nested in categories: routes that follow skills alone are significant under task
    shuffles but not under skill shuffles; routes that follow categories are significant under
    both (the smallest p of 199 shuffles would be 1/200, but 9 skills in 3 categories of 3 have
    only 9!/(3!)^3 / 3! = 280 distinct groupings, so ties keep p a little above it)."""
    cats = np.repeat(["cls", "ext", "kno"], 6)  # 18 tasks
    skills = np.repeat([f"s{k}" for k in range(9)], 2)  # 3 skills per category, 2 tasks each
    rng = np.random.default_rng(0)
    p_skill_only = []
    for seed in range(20):
        by_skill = one_hot_routes(rng.integers(0, 3, (9, 4))[np.repeat(np.arange(9), 2)], 3)
        p_skill_only.append(block_permutation_test(per_layer_nmi, by_skill, cats, skills, n_perm=99, seed=seed)[1])
    assert np.median(p_skill_only) > 0.1  # skill structure alone: no category effect
    by_cat = one_hot_routes(np.array([[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]])[np.repeat(np.arange(3), 6)], 3)
    assert block_permutation_test(per_layer_nmi, by_cat, cats, skills, n_perm=199)[1] < 0.02
    assert permutation_test(per_layer_nmi, by_cat, cats, n_perm=199)[1] < 0.01
    # Blocks of unequal size are swapped only with equal-size blocks: category sizes never change.
    uneven = np.array(["s0"] * 3 + ["s1"] * 2 + ["s2"] * 2 + ["s3"] * 3 + ["s4"] * 2 + ["s5"] * 1)
    uneven_cats = np.array(["a"] * 7 + ["b"] * 6)
    seen_counts = set()
    record = lambda r, c: seen_counts.add(tuple(sorted(np.unique(c, return_counts=True)[1]))) or 0.0  # noqa: E731
    block_permutation_test(record, np.zeros((13, 1, 2)), uneven_cats, uneven, n_perm=50)
    assert seen_counts == {(6, 7)}
    with pytest.raises(ValueError, match="spans categories"):
        block_permutation_test(per_layer_nmi, by_cat, cats, np.repeat(["a", "b"], 9), n_perm=9)
    # Every category's skills of a size of their own: no swap can change a category, no test.
    lone = np.array(["s0"] * 2 + ["s1"] * 2 + ["s2"] * 3 + ["s3"] * 3 + ["s4"] * 4)
    lone_cats = np.array(["a"] * 4 + ["b"] * 6 + ["c"] * 4)
    with pytest.raises(DegenerateNull, match="no two blocks of one size lie in different categories"):
        block_permutation_test(per_layer_nmi, np.zeros((14, 1, 2)), lone_cats, lone, n_perm=9)


@pytest.mark.exercise  # per_layer_ami is built on exercise 8.1
def test_skill_shuffles_of_any_size_when_sizes_never_match():
    """Skills of a size of their own in each category (like TinyCrossFit's 6/6/5, 4×4, 3×6):
    same-size swaps have no draw, same_size=False swaps skills of any size (each category keeps
    its number of skills) and, with AMI, still separates skill structure from category structure."""
    sizes = {"a": [3, 3, 3], "b": [2, 2, 2, 2], "c": [1, 1, 1, 1, 1, 1]}
    skills = np.array([f"{c}{i}" for c, ns in sizes.items() for i, n in enumerate(ns) for _ in range(n)])
    cats = np.array([s[0] for s in skills])
    with pytest.raises(DegenerateNull):
        block_permutation_test(per_layer_ami, np.zeros((len(cats), 1, 2)), cats, skills, n_perm=9)
    rng = np.random.default_rng(0)
    index = np.unique(skills, return_inverse=True)[1].reshape(-1)
    p_skill_only = [block_permutation_test(per_layer_ami, one_hot_routes(rng.integers(0, 3, (13, 4))[index], 3),
                                           cats, skills, n_perm=99, seed=seed, same_size=False)[1]
                    for seed in range(20)]
    assert np.median(p_skill_only) > 0.1
    cat_index = np.unique(cats, return_inverse=True)[1].reshape(-1)
    by_cat = one_hot_routes(np.array([[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]])[cat_index], 3)
    assert block_permutation_test(per_layer_ami, by_cat, cats, skills, n_perm=199, same_size=False)[1] < 0.02


@pytest.mark.exercise  # permutation_test is exercise 8.2, per_layer_nmi 8.1
def test_stratified_test_with_one_stratum_is_the_plain_and_the_block_test():
    """One stratum, same seed: the same draws as permutation_test / block_permutation_test."""
    rng = np.random.default_rng(3)
    cats = np.repeat(["cls", "ext", "kno"], 6)
    skills = np.repeat([f"s{k}" for k in range(9)], 2)
    routes = rng.random((18, 2, 3))
    for seed in (0, 7):
        assert stratified_permutation_test(per_layer_nmi, [(routes, cats, None)], n_perm=99, seed=seed) == \
            permutation_test(per_layer_nmi, routes, cats, n_perm=99, seed=seed)
        assert stratified_permutation_test(per_layer_nmi, [(routes, cats, skills)], n_perm=99, seed=seed,
                                           blocked=True) == \
            block_permutation_test(per_layer_nmi, routes, cats, skills, n_perm=99, seed=seed)


@pytest.mark.ex8_2  # every test ends in permutation.p_value (exercise 8.2)
def test_stratified_p_values_roughly_uniform_under_the_null():
    """Independent random routes in each of 3 strata of different sizes and labels: an exact test."""
    rng = np.random.default_rng(1)
    sizes = (8, 12, 10)
    labels = [np.array(["a", "b"] * (n // 2)) for n in sizes]
    p_values = [stratified_permutation_test(gap_stat, [(rng.random((n, 1, 2)), c, None) for n, c in zip(sizes, labels)],
                                            n_perm=99, seed=i)[1] for i in range(200)]
    assert 0.03 <= np.mean(np.array(p_values) < 0.1) <= 0.2  # P(p < 0.1) = 9/100; ±3 sd over 200
    assert min(p_values) >= 1 / 100


@pytest.mark.ex8_2  # every test ends in permutation.p_value (exercise 8.2)
def test_stratified_test_pools_a_weak_association_over_many_strata():
    """Each stratum: 12 tasks whose expert-0 gate is shifted by 0.35 sd in category a. One stratum
    alone rarely reaches p < 0.05; forty together give the smallest p 199 draws allow."""
    rng = np.random.default_rng(2)
    cats = np.array(["a"] * 6 + ["b"] * 6)

    def stratum():
        routes = rng.normal(size=(12, 1, 2))
        routes[:6, 0, 0] += 0.35
        return routes, cats, None

    signed_gap = lambda r, c: r[c == "a", 0, 0].mean() - r[c == "b", 0, 0].mean()  # noqa: E731
    alone = [stratified_permutation_test(signed_gap, [stratum()], n_perm=99, seed=i)[1] for i in range(40)]
    assert np.mean(np.array(alone) < 0.05) < 0.5
    observed, p = stratified_permutation_test(signed_gap, [stratum() for _ in range(40)], n_perm=199)
    assert observed > 0 and p == pytest.approx(1 / 200)


@pytest.mark.exercise  # permutation_test is exercise 8.2, per_layer_nmi 8.1
def test_shared_shuffles_of_identical_strata_are_the_plain_and_the_block_test():
    """tasks given and every stratum the same tasks and routes: one shared shuffle per draw is
    the single-stratum test's draw, and the mean of equal statistics is the statistic."""
    rng = np.random.default_rng(6)
    cats = np.repeat(["cls", "ext", "kno"], 6)
    skills = np.repeat([f"s{k}" for k in range(9)], 2)
    names = [f"task{i}" for i in range(18)]
    routes = rng.random((18, 2, 3))
    strata = [(routes, cats, skills)] * 3
    assert stratified_permutation_test(per_layer_nmi, strata, n_perm=99, tasks=[names] * 3) == \
        pytest.approx(permutation_test(per_layer_nmi, routes, cats, n_perm=99))
    assert stratified_permutation_test(per_layer_nmi, strata, n_perm=99, blocked=True, tasks=[names] * 3) == \
        pytest.approx(block_permutation_test(per_layer_nmi, routes, cats, skills, n_perm=99))


@pytest.mark.ex8_2  # every test ends in permutation.p_value (exercise 8.2)
def test_shared_shuffles_do_not_count_a_task_again_in_every_seed():
    """Seeds drawing 16 of 24 tasks; each task's route is its own (random, unrelated to the
    category) in every seed. Shuffling each seed on its own counts a task's chance alignment
    with its category once per seed, and rejects far too often; one shared shuffle per draw
    keeps the level (40 catalogues, 20 seeds each, rejection at p < 0.05)."""
    rng = np.random.default_rng(0)
    names, cats = np.array([f"t{i}" for i in range(24)]), np.array(["a", "b"] * 12)
    independent, shared = [], []
    for rep in range(40):
        identity = rng.random(24)  # a route feature fixed per task
        strata, tasks = [], []
        for _ in range(20):
            pick = np.sort(rng.choice(24, 16, replace=False))
            routes = np.zeros((16, 1, 2))
            routes[:, 0, 0] = identity[pick] + 0.05 * rng.normal(size=16)
            strata.append((routes, cats[pick], None))
            tasks.append(list(names[pick]))
        independent.append(stratified_permutation_test(gap_stat, strata, n_perm=99, seed=rep)[1])
        shared.append(stratified_permutation_test(gap_stat, strata, n_perm=99, seed=rep, tasks=tasks)[1])
    assert np.mean(np.array(independent) < 0.05) > 0.15
    assert np.mean(np.array(shared) < 0.05) <= 0.15


@pytest.mark.exercise
def test_stratified_route_stats_with_one_stratum_are_route_stats():
    """report.stratified_route_stats reports what route_stats does, with the mean over strata."""
    from minimoe.report import route_stats, stratified_route_stats

    rng = np.random.default_rng(4)
    cats = np.repeat(["cls", "ext", "kno"], 6)
    skills = np.repeat([f"s{k}" for k in range(9)], 2)
    routes = rng.random((18, 2, 3))
    one = stratified_route_stats([(routes, cats, skills)], n_perm=49)
    assert one.pop("strata") == 1 and one == route_stats(routes, cats, n_perm=49, blocks=skills)
    two = stratified_route_stats([(routes, cats, skills), (routes[::-1], cats, None)], n_perm=49)
    assert "per_layer_nmi_p_blocks" not in two  # a stratum without blocks: no block test
    assert two["per_layer_nmi"] == pytest.approx((per_layer_nmi(routes, cats) + per_layer_nmi(routes[::-1], cats)) / 2)
    # Shared skill shuffles over tasks whose skill sizes never overlap between categories: no test
    # (None), while each stratum alone, missing different tasks, still has swaps to draw.
    lone = np.array(["s0"] * 2 + ["s1"] * 2 + ["s2"] * 3 + ["s3"] * 3 + ["s4"] * 4)
    lone_cats = np.array(["a"] * 4 + ["b"] * 6 + ["c"] * 4)
    names = [f"t{i}" for i in range(14)]
    keep = [np.r_[0:3, 4:14], np.r_[0:6, 7:14]]  # stratum 0 lacks a task of s1, stratum 1 one of s2
    strata = [(rng.random((13, 1, 3)), lone_cats[k], lone[k]) for k in keep]
    shared = stratified_route_stats(strata, n_perm=19, tasks=[[names[i] for i in k] for k in keep])
    assert shared["per_layer_nmi_p_blocks_shared"] is None and 0 < shared["per_layer_nmi_p_blocks"] <= 1


def test_stratified_test_rejects_bad_strata():
    cats = np.array(["a", "b"] * 3)
    with pytest.raises(ValueError, match="at least one stratum"):
        stratified_permutation_test(gap_stat, [], n_perm=9)
    with pytest.raises(ValueError, match="blocked=True needs the blocks"):
        stratified_permutation_test(gap_stat, [(np.zeros((6, 1, 2)), cats, None)], n_perm=9, blocked=True)
    with pytest.raises(ValueError, match="6 tasks in routes but 4 categories"):
        stratified_permutation_test(gap_stat, [(np.zeros((6, 1, 2)), cats[:4], None)], n_perm=9)
    names = [f"t{i}" for i in range(6)]
    with pytest.raises(ValueError, match="another category or block in another stratum"):
        stratified_permutation_test(gap_stat, [(np.zeros((6, 1, 2)), cats, None), (np.zeros((6, 1, 2)), cats[::-1], None)],
                                    n_perm=9, tasks=[names, names])
    with pytest.raises(ValueError, match="but task names for 1"):
        stratified_permutation_test(gap_stat, [(np.zeros((6, 1, 2)), cats, None)] * 2, n_perm=9, tasks=[names])
