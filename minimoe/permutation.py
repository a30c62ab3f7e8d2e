"""Permutation tests: is an association between routes and labels more than chance?

A statistic of routes and category labels (`minimoe/analysis.py`: NMI, selectivity) is above 0
for any finite sample, so alone it cannot say "the routes rediscover the categories". The
p-value asks how often labels that carry no information score as high: under the null
hypothesis the labels are exchangeable between tasks, so shuffling them draws from the null.
Three nulls, each a question:

- `permutation_test`: labels exchangeable between all tasks — are routes associated with the
  categories at all?
- `block_permutation_test`: whole blocks (skills, which nest in categories) exchanged between
  categories — do skills of one category share routes *beyond* the skills themselves?
- `stratified_permutation_test`: seeds that each saw their own tasks (`reproduce --resplit`)
  as strata — labels shuffled within each seed, or (`tasks=`) once for all seeds.

p = (1 + #{draws ≥ observed}) / (1 + n_perm) in every test, `p_value` (exercise 8.2): exact
(P(p ≤ α) ≤ α), never 0.
Paper: it shows heatmaps and reports no test (lessons/paper_facts.md, "Routing analysis"); these are ours.
Axes: n tasks, l routed layers, e experts. Read next: `minimoe/report.py::route_stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from minimoe.analysis import check_routes


def permutation_test(stat_fn: Callable[[np.ndarray, np.ndarray], float], routes: np.ndarray,
                     categories: Sequence[str], n_perm: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(observed statistic, p-value) for "routes are associated with categories".

    Under the null hypothesis categories are exchangeable between tasks, so shuffling them gives
    draws of the statistic under no association. p = (1 + #{perm ≥ observed}) / (1 + n_perm):
    the +1s count the observed labelling as one of the permutations, so p is never 0 and the
    test is exact (P(p ≤ α) ≤ α).
    """
    cats = np.asarray(categories)
    observed = float(stat_fn(routes, cats))
    rng = np.random.default_rng(seed)
    return observed, p_value(observed, lambda: stat_fn(routes, rng.permutation(cats)), n_perm)


def p_value(observed: float, draw: Callable[[], float], n_perm: int) -> float:
    """p = (1 + #{draws ≥ observed}) / (1 + n_perm) over `n_perm` calls of `draw()`, each one
    statistic under the null (labels shuffled). Every test in this module ends here.

    The +1s count the observed labelling as one draw, so p is never 0 and P(p ≤ α) ≤ α. A draw
    that gives the same partition as the observed labels can round differently in the last
    bit, so "≥" allows a slack of 1e-12·max(1, |observed|): such a draw counts as a tie.
    """
    # BEGIN EXERCISE 8.2: permutation-test p-value
    # HINT: each draw() is one statistic under the null; you need n_perm of them.
    # HINT: count the ties as well (see the docstring), with a slack relative to |observed|
    # HINT: but never below 1e-12; then apply the formula in the first docstring line.
    slack = 1e-12 * max(1.0, abs(observed))
    at_least = sum(draw() >= observed - slack for _ in range(n_perm))
    return float((1 + at_least) / (1 + n_perm))
    # END EXERCISE 8.2


def chance_level(stat_fn: Callable[[np.ndarray, np.ndarray], float], routes: np.ndarray,
                 categories: Sequence[str], n_perm: int = 200, seed: int = 0) -> float:
    """Mean of the statistic over `n_perm` shuffles of the categories: what it gives when routes
    and categories are not associated (not 0 for NMI on few tasks). Figures draw it as the chance line."""
    cats, rng = np.asarray(categories), np.random.default_rng(seed)
    return float(np.mean([stat_fn(routes, rng.permutation(cats)) for _ in range(n_perm)]))


class DegenerateNull(ValueError):
    """A permutation null with a single possible draw: its p would be 1 by construction."""


def _block_shuffler(categories: Sequence[str], blocks: Sequence[str],
                    same_size: bool = True) -> Callable[[np.random.Generator], np.ndarray]:
    """One draw of `block_permutation_test`'s null: a function rng → categories [n] in which whole
    blocks have swapped categories (each block keeps its tasks) with blocks of the same size, or
    with any block (same_size=False: each category keeps its number of blocks, not of tasks)."""
    # BEGIN EXERCISE 8.3: the skill-controlled null
    # HINT: first, per block (in sorted order of the names): its one category and its number of tasks;
    # HINT: a block that spans two categories is a ValueError (blocks must nest in categories).
    # HINT: same_size=False puts every block in one size class.
    # HINT: no size class holding blocks of two categories: raise DegenerateNull (one possible draw).
    # HINT: return draw(rng): permute the block categories within each size class (rng.permutation),
    # HINT: then give every task its block's new category, as an array [n].
    cats, blocks = np.asarray(categories), np.asarray(blocks)
    names = sorted(set(blocks.tolist()))
    block_cat, size = [], []
    for name in names:
        inside = set(cats[blocks == name].tolist())
        if len(inside) != 1:
            raise ValueError(f"block {name!r} spans categories {sorted(inside)}: blocks must nest in categories.")
        block_cat.append(inside.pop())
        size.append(int((blocks == name).sum()))
    block_cat, size = np.asarray(block_cat), np.asarray(size)
    if not same_size:
        size = np.zeros_like(size)  # one size class: every block may trade places with every other
    if not any(len(set(block_cat[size == n].tolist())) > 1 for n in np.unique(size)):
        raise DegenerateNull("no two blocks of one size lie in different categories, so shuffling whole "
                             "blocks (within a size) never changes a category: this null has one draw and "
                             "no power. Test on a task set whose block sizes overlap between categories.")
    index = np.array([names.index(b) for b in blocks.tolist()])  # task → its block

    def draw(rng: np.random.Generator) -> np.ndarray:  # block categories permuted within each block size
        new = block_cat.copy()
        for n in np.unique(size):
            new[size == n] = rng.permutation(block_cat[size == n])
        return new[index]

    return draw
    # END EXERCISE 8.3


def block_permutation_test(stat_fn: Callable[[np.ndarray, np.ndarray], float], routes: np.ndarray,
                           categories: Sequence[str], blocks: Sequence[str], n_perm: int = 1000,
                           seed: int = 0, same_size: bool = True) -> tuple[float, float]:
    """(observed, p) for "routes follow categories *beyond* the blocks nested in them".

    Every block (a skill: copy_first, recall_city, …) lies inside one category. Routes that
    follow skills alone already raise the category statistic, because tasks of one skill share
    a category (lesson 08). Here the null shuffles whole blocks between categories — each
    category keeps its tasks, each block its tasks — so a small p says that skills of the same
    category share routes more than skills of different categories.

    Blocks are swapped only with blocks of the same size, so every category keeps its number of
    tasks: NMI and selectivity depend on the category sizes, and a null that changed them
    would compare unlike things. When no two blocks of one size lie in different categories that
    null has a single draw (`DegenerateNull`); then same_size=False swaps blocks of any size —
    the skills are the unit — and the statistic should be one adjusted for chance
    (`analysis.per_layer_ami`), which does not reward a category for merely growing.
    """
    cats = np.asarray(categories)
    draw = _block_shuffler(cats, blocks, same_size)
    observed = float(stat_fn(routes, cats))
    rng = np.random.default_rng(seed)
    return observed, p_value(observed, lambda: stat_fn(routes, draw(rng)), n_perm)


def stratified_permutation_test(stat_fn: Callable[[np.ndarray, np.ndarray], float],
                                strata: Sequence[tuple[np.ndarray, Sequence[str], Sequence[str] | None]],
                                n_perm: int = 1000, seed: int = 0, blocked: bool = False,
                                tasks: Sequence[Sequence[str]] | None = None,
                                same_size: bool = True) -> tuple[float, float]:
    """(mean statistic over strata, p) for "routes follow categories", over independent replicates.

    strata: one (routes [n_s l e], categories [n_s], blocks [n_s] or None) per replicate — an
    upstream seed that saw its own tasks (`reproduce --resplit`), so the seeds' routes cannot be
    pooled task by task. The statistic is the mean of stat_fn over the strata. Under the null,
    labels are exchangeable between the tasks *of one stratum* and the strata are independent:
    every draw shuffles each stratum's labels on its own (with blocked=True, whole blocks between
    categories, as `block_permutation_test`). The observed labelling is one draw of that null,
    so p = (1 + #{draw ≥ observed}) / (1 + n_perm) is exact, as in `permutation_test`; and
    because the null mean is an average over the strata, it tightens as strata are added: a
    small per-seed association that no single seed could show becomes testable.

    tasks: the task names [n_s] of every stratum, when strata share tasks (seeds of one task
    catalogue). Then each draw shuffles the labels of all tasks *once* (or whole blocks once) and
    every stratum reads its tasks' labels from that one draw: a task keeps one shuffled label in
    every seed. Independent shuffles treat a task's route, repeated in every seed, as new
    evidence each time; a shared shuffle asks whether the association would hold for *other
    tasks* — the stricter question, since routes follow task identity (its skill) in every seed.
    """
    if not strata:
        raise ValueError("stratified_permutation_test needs at least one stratum (routes, categories, blocks).")
    if blocked and any(b is None for _, _, b in strata):
        raise ValueError("blocked=True needs the blocks (e.g. skills) of every stratum; got None.")
    routes = [check_routes(r, c) for r, c, _ in strata]
    cats = [np.asarray(c) for _, c, _ in strata]
    if tasks is None:
        draws = [_stratum_draw(c, b, blocked, same_size) for c, (_, _, b) in zip(cats, strata)]
        if blocked and all(d is None for d in draws):
            raise DegenerateNull("in no stratum do two blocks of one size lie in different categories: "
                                 "the blocked null has one draw and no power.")
        draws = [d or (lambda rng, c=c: c) for d, c in zip(draws, cats)]  # a frozen stratum keeps its labels
        labellings = lambda rng: [d(rng) for d in draws]  # noqa: E731
    else:
        labellings = _shared_labellings(strata, tasks, blocked, same_size)
    observed = float(np.mean([stat_fn(r, c) for r, c in zip(routes, cats)]))
    rng = np.random.default_rng(seed)
    return observed, p_value(observed, lambda: np.mean([stat_fn(r, c) for r, c in zip(routes, labellings(rng))]),
                             n_perm)


def _stratum_draw(cats: np.ndarray, blocks, blocked: bool, same_size: bool = True):
    """One stratum's null draw (rng → labels), or None when its blocks can never change category."""
    if not blocked:
        return lambda rng: rng.permutation(cats)
    try:
        return _block_shuffler(cats, blocks, same_size)
    except DegenerateNull:
        return None


def _shared_labellings(strata, tasks, blocked: bool, same_size: bool = True) -> Callable[[np.random.Generator], list[np.ndarray]]:
    """rng → labels per stratum, from one shuffle of every task's label (tasks in order of first
    appearance, so strata that all hold the same tasks draw what `permutation_test` draws)."""
    if len(tasks) != len(strata):
        raise ValueError(f"{len(strata)} strata but task names for {len(tasks)}")
    names, label, block = [], {}, {}
    for (routes, cats, blocks), names_s in zip(strata, tasks):
        if len(names_s) != len(cats):
            raise ValueError(f"a stratum has {len(cats)} categories but {len(names_s)} task names")
        for i, t in enumerate(names_s):
            if t not in label:
                names.append(t)
                label[t], block[t] = cats[i], None if blocks is None else blocks[i]
            elif label[t] != cats[i] or (blocks is not None and block[t] != blocks[i]):
                raise ValueError(f"task {t!r} has another category or block in another stratum; "
                                 f"shared shuffles need one label per task.")
    every = np.array([label[t] for t in names])
    draw = _block_shuffler(every, [block[t] for t in names], same_size) if blocked else (lambda rng: rng.permutation(every))
    index = {t: i for i, t in enumerate(names)}
    rows = [np.array([index[t] for t in names_s]) for names_s in tasks]

    def labellings(rng: np.random.Generator) -> list[np.ndarray]:
        new = draw(rng)  # one label per task, read by every stratum
        return [new[r] for r in rows]

    return labellings
