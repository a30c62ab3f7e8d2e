"""Routing analysis: do the learned routes rediscover the human categories of tasks?

Paper "Routing analysis" (see `PAPER.md`, DESIGN §4.5): the paper draws per-task routes as
heatmaps grouped by category and *says* they cluster; it reports no statistic. Here we measure:

- `route_category_nmi`: normalised mutual information (NMI) between each task's route
  signature (its argmax expert at every layer, as one tuple) and its category. With many layers
  every task may get its own signature, and then NMI is high for any labelling, so we also
  report `per_layer_nmi` (one layer at a time, averaged over layers).
- `expert_selectivity`: how much of each expert's routing mass goes to each category.
- `permutation_test`: how often shuffled category labels score as high — the p-value that
  turns "looks grouped" into a claim; `block_permutation_test` shuffles whole skills instead,
  and `stratified_permutation_test` combines seeds that each saw their own tasks.

Figures use matplotlib's object API (`Figure`, never pyplot), so nothing opens a window and
no global backend is switched. Axes: n tasks, l routed layers, e experts, c categories
(c in sorted order of the category names). Read next: `minimoe/metrics.py` (ARG).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from einops import einsum, rearrange
from matplotlib.figure import Figure


def _check_routes(routes: np.ndarray, categories: Sequence | None = None) -> np.ndarray:
    routes = np.asarray(routes, dtype=float)
    if routes.ndim != 3:
        raise ValueError(f"routes must be [n l e] (tasks, layers, experts); got shape {routes.shape}")
    if categories is not None and len(categories) != routes.shape[0]:
        raise ValueError(f"{routes.shape[0]} tasks in routes but {len(categories)} categories")
    return routes


def route_signatures(routes: np.ndarray) -> np.ndarray:
    """Integer id [n] of each task's argmax-route tuple (one expert per layer): equal tuples, equal ids."""
    chosen = _check_routes(routes).argmax(axis=-1)  # [n l]
    _, ids = np.unique(chosen, axis=0, return_inverse=True)
    return ids.reshape(-1)  # [n]; numpy 2.0 returned the inverse with an extra axis


def normalized_mutual_info(a: Sequence, b: Sequence) -> float:
    """NMI(a, b) = I(a; b) / ((H(a) + H(b)) / 2), natural logs; 1 = same partition, ≈0 = independent.

    Labels are compared as partitions: renaming the labels of either side changes nothing.
    Arithmetic-mean normalisation, like sklearn's default; two constant labelings give 1.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two non-empty 1-D labelings of equal length; got {a.shape} and {b.shape}")
    _, a_ids = np.unique(a, return_inverse=True)
    _, b_ids = np.unique(b, return_inverse=True)
    a_ids, b_ids = a_ids.reshape(-1), b_ids.reshape(-1)
    n_a, n_b = a_ids.max() + 1, b_ids.max() + 1
    # Contingency table of counts [n_a n_b]: how many items have label i in a and j in b.
    counts = np.bincount(a_ids * n_b + b_ids, minlength=n_a * n_b).reshape(n_a, n_b)
    # BEGIN EXERCISE 8.1: normalised mutual information
    # HINT: joint p_ij = counts / counts.sum(); marginals p_i = p.sum(1), p_j = p.sum(0).
    # HINT: I = Σ_ij p_ij · log(p_ij / (p_i · p_j)) over cells with p_ij > 0 (0·log 0 = 0).
    # HINT: H(a) = −Σ_i p_i log p_i; divide I by the mean of H(a) and H(b).
    # HINT: when both entropies are 0 (both labelings constant) the partitions agree: return 1.0.
    p = counts / counts.sum()
    p_a, p_b = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / np.outer(p_a, p_b)[nz])))
    h_a, h_b = -np.sum(p_a * np.log(p_a)), -np.sum(p_b * np.log(p_b))
    if h_a == 0.0 and h_b == 0.0:
        return 1.0
    return max(mi, 0.0) / ((h_a + h_b) / 2.0)  # max: rounding can leave I at −1e-17
    # END EXERCISE 8.1


def route_category_nmi(routes: np.ndarray, categories: Sequence[str]) -> float:
    """NMI between whole-route signatures [n] and categories [n]."""
    return normalized_mutual_info(route_signatures(_check_routes(routes, categories)), categories)


def per_layer_nmi(routes: np.ndarray, categories: Sequence[str]) -> float:
    """Mean over layers of NMI(argmax expert at that layer [n], categories [n]).

    Robust when signatures are all unique (many layers): a layer has at most e groups.
    """
    chosen = _check_routes(routes, categories).argmax(axis=-1)  # [n l]
    return float(np.mean([normalized_mutual_info(layer, categories) for layer in chosen.T]))


def expert_selectivity(routes: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Share of each expert's soft routing mass per category, [n l e] → [l e c], sums to 1 over c.

    Uses the *mean* gate per category (not the sum) so that big categories do not look
    preferred: an expert that every task uses equally gets 1/c everywhere. An expert no task
    uses has no preference and also gets 1/c.
    """
    routes = _check_routes(routes, categories)
    names, cat_ids = np.unique(np.asarray(categories), return_inverse=True)
    one_hot = np.eye(len(names))[cat_ids.reshape(-1)]  # [n c]
    mean_gate = einsum(routes, one_hot, "n l e, n c -> l e c") / one_hot.sum(axis=0)  # [l e c]
    total = mean_gate.sum(axis=-1, keepdims=True)  # [l e 1]
    uniform = np.full_like(mean_gate, 1.0 / len(names))
    return np.divide(mean_gate, total, out=uniform, where=total > 0)


def mean_selectivity(routes: np.ndarray, categories: Sequence[str]) -> float:
    """Scalar summary of `expert_selectivity`: 0 = no expert prefers a category, 1 = each is exclusive.

    Per expert, (max_c share − 1/c) / (1 − 1/c); averaged over experts weighted by how much
    routing mass each receives (an expert nobody uses should not count).
    """
    share = expert_selectivity(routes, categories)  # [l e c]
    n_cat = share.shape[-1]
    if n_cat == 1:
        return 0.0
    peak = (share.max(axis=-1) - 1.0 / n_cat) / (1.0 - 1.0 / n_cat)  # [l e]
    usage = np.asarray(routes, dtype=float).sum(axis=0)  # [l e]
    return float(np.sum(peak * usage) / np.sum(usage))


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
    # BEGIN EXERCISE 8.2: permutation-test p-value
    # HINT: rng.permutation(cats) shuffles the labels; recompute stat_fn on routes with them.
    # HINT: count shuffles whose statistic is ≥ observed − slack, slack = 1e-12·max(1, |observed|):
    # HINT: a shuffle giving the same partition can round differently, and must count as a tie.
    slack = 1e-12 * max(1.0, abs(observed))
    at_least = sum(stat_fn(routes, rng.permutation(cats)) >= observed - slack for _ in range(n_perm))
    return observed, float((1 + at_least) / (1 + n_perm))
    # END EXERCISE 8.2


class DegenerateNull(ValueError):
    """A permutation null with a single possible draw: its p would be 1 by construction."""


def _block_shuffler(categories: Sequence[str], blocks: Sequence[str]) -> Callable[[np.random.Generator], np.ndarray]:
    """One draw of `block_permutation_test`'s null: a function rng → categories [n] in which whole
    blocks have swapped categories with blocks of the same size (each block keeps its tasks)."""
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


def block_permutation_test(stat_fn: Callable[[np.ndarray, np.ndarray], float], routes: np.ndarray,
                           categories: Sequence[str], blocks: Sequence[str], n_perm: int = 1000,
                           seed: int = 0) -> tuple[float, float]:
    """(observed, p) for "routes follow categories *beyond* the blocks nested in them".

    Every block (a skill: copy_first, recall_city, …) lies inside one category. Routes that
    follow skills alone already raise the category statistic, because tasks of one skill share
    a category (lesson 08). Here the null shuffles whole blocks between categories — each
    category keeps its tasks, each block its tasks — so a small p says that skills of the same
    category share routes more than skills of different categories.

    Blocks are swapped only with blocks of the same size, so every category keeps its number of
    tasks: NMI and selectivity depend on the category sizes, and a null that changed them
    would compare unlike things.
    """
    cats = np.asarray(categories)
    draw = _block_shuffler(cats, blocks)
    observed = float(stat_fn(routes, cats))
    rng = np.random.default_rng(seed)
    slack = 1e-12 * max(1.0, abs(observed))  # ties count (see permutation_test)
    at_least = sum(stat_fn(routes, draw(rng)) >= observed - slack for _ in range(n_perm))
    return observed, float((1 + at_least) / (1 + n_perm))


def stratified_permutation_test(stat_fn: Callable[[np.ndarray, np.ndarray], float],
                                strata: Sequence[tuple[np.ndarray, Sequence[str], Sequence[str] | None]],
                                n_perm: int = 1000, seed: int = 0, blocked: bool = False,
                                tasks: Sequence[Sequence[str]] | None = None) -> tuple[float, float]:
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
    routes = [_check_routes(r, c) for r, c, _ in strata]
    cats = [np.asarray(c) for _, c, _ in strata]
    if tasks is None:
        draws = [_stratum_draw(c, b, blocked) for c, (_, _, b) in zip(cats, strata)]
        if blocked and all(d is None for d in draws):
            raise DegenerateNull("in no stratum do two blocks of one size lie in different categories: "
                                 "the blocked null has one draw and no power.")
        draws = [d or (lambda rng, c=c: c) for d, c in zip(draws, cats)]  # a frozen stratum keeps its labels
        labellings = lambda rng: [d(rng) for d in draws]  # noqa: E731
    else:
        labellings = _shared_labellings(strata, tasks, blocked)
    observed = float(np.mean([stat_fn(r, c) for r, c in zip(routes, cats)]))
    rng = np.random.default_rng(seed)
    slack = 1e-12 * max(1.0, abs(observed))  # ties count (see permutation_test)
    at_least = sum(np.mean([stat_fn(r, c) for r, c in zip(routes, labellings(rng))]) >= observed - slack
                   for _ in range(n_perm))
    return observed, float((1 + at_least) / (1 + n_perm))


def _stratum_draw(cats: np.ndarray, blocks, blocked: bool):
    """One stratum's null draw (rng → labels), or None when its blocks can never change category."""
    if not blocked:
        return lambda rng: rng.permutation(cats)
    try:
        return _block_shuffler(cats, blocks)
    except DegenerateNull:
        return None


def _shared_labellings(strata, tasks, blocked: bool) -> Callable[[np.random.Generator], list[np.ndarray]]:
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
    draw = _block_shuffler(every, [block[t] for t in names]) if blocked else (lambda rng: rng.permutation(every))
    index = {t: i for i, t in enumerate(names)}
    rows = [np.array([index[t] for t in names_s]) for names_s in tasks]

    def labellings(rng: np.random.Generator) -> list[np.ndarray]:
        new = draw(rng)  # one label per task, read by every stratum
        return [new[r] for r in rows]

    return labellings


# ---------------------------------------------------------------------------------------------
# Figures


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _category_order(categories: Sequence[str], names: Sequence[str] | None = None) -> np.ndarray:
    """Task order [n] grouping tasks by category (then by name), for every heatmap."""
    names = names if names is not None else [""] * len(categories)
    return np.array(sorted(range(len(categories)), key=lambda i: (categories[i], names[i])))


def _draw_routes(ax, routes: np.ndarray, categories: Sequence[str]):
    """Draw [n l e] routes (already in category order) as [n (l e)] with layer/category lines."""
    n, n_layers, n_experts = routes.shape
    im = ax.imshow(rearrange(routes, "n l e -> n (l e)"), vmin=0, vmax=1, cmap="viridis",
                   aspect="auto", interpolation="nearest")
    for layer in range(1, n_layers):
        ax.axvline(layer * n_experts - 0.5, color="white", lw=1.5)
    cats = np.asarray(categories)
    bounds = np.flatnonzero(cats[1:] != cats[:-1]) + 1  # first row of each new category
    for row in bounds:
        ax.axhline(row - 0.5, color="red", lw=1.5)
    return im, np.concatenate([[0], bounds, [n]])


def plot_route_heatmap(routes: np.ndarray, task_names: Sequence[str], categories: Sequence[str],
                       seen_mask: Sequence[bool], path, title: str = "task routes") -> Path:
    """Heatmap of routes [n l e]: rows = tasks grouped by category, columns = layer·expert.

    Unseen tasks (seen_mask False) get a '*' and a red tick label; white lines separate layers,
    red lines separate categories, whose names are written at the right of their band.
    """
    routes = _check_routes(routes, categories)
    order = _category_order(categories, task_names)
    cats = [categories[i] for i in order]
    n, n_layers, n_experts = routes.shape
    fig = Figure(figsize=(2 + 0.45 * n_layers * n_experts, 1.5 + 0.25 * n))
    ax = fig.add_subplot()
    im, bands = _draw_routes(ax, routes[order], cats)
    ax.set_yticks(range(n), [task_names[i] + ("" if seen_mask[i] else " *") for i in order], fontsize=7)
    for tick, i in zip(ax.get_yticklabels(), order):
        tick.set_color("black" if seen_mask[i] else "tab:red")
    ax.set_xticks(range(n_layers * n_experts),
                  [f"L{l}E{e}" for l in range(n_layers) for e in range(n_experts)], fontsize=6, rotation=90)
    for start, stop in zip(bands[:-1], bands[1:]):
        ax.text(n_layers * n_experts - 0.3, (start + stop - 1) / 2, cats[start], va="center", fontsize=8)
    ax.set_title(f"{title}  (* = unseen task)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.15, label="gate")
    return _save(fig, path)


def plot_route_dynamics(route_history: Sequence[np.ndarray], categories: Sequence[str], path,
                        steps: Sequence[int] | None = None, max_panels: int = 6) -> Path:
    """Routes over training: up to `max_panels` evenly spaced snapshots [n l e], plus NMI per snapshot."""
    if not route_history:
        raise ValueError("route_history is empty; save routes at every evaluation")
    steps = list(steps) if steps is not None else list(range(len(route_history)))
    picks = np.unique(np.linspace(0, len(route_history) - 1, min(max_panels, len(route_history))).astype(int))
    order = _category_order(categories)
    cats = [categories[i] for i in order]
    fig = Figure(figsize=(2.2 * (len(picks) + 1), 3))
    axes = fig.subplots(1, len(picks) + 1)
    for ax, k in zip(axes, picks):
        _draw_routes(ax, _check_routes(route_history[k], categories)[order], cats)
        ax.set_title(f"step {steps[k]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    curve = axes[-1]
    curve.plot(steps, [route_category_nmi(r, categories) for r in route_history], label="signature")
    curve.plot(steps, [per_layer_nmi(r, categories) for r in route_history], label="per layer")
    curve.set_ylim(-0.02, 1.02)
    curve.set_xlabel("step")
    curve.set_title("NMI vs category", fontsize=8)
    curve.legend(fontsize=7)
    return _save(fig, path)


def plot_loss_curves(history: Mapping[str, Sequence[tuple[int, float]]], path, title: str = "loss") -> Path:
    """One line per run: {name: [(step, loss), ...]}; log scale when every loss is positive."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    positive = True
    for name, points in history.items():
        steps, losses = zip(*points) if points else ((), ())
        ax.plot(steps, losses, label=name)
        positive = positive and all(v > 0 for v in losses)
    if positive and any(history.values()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_arg_bars(table: Mapping[str, tuple[float, float, float]], path, title: str = "ARG vs dense") -> Path:
    """Bars of ARG (%) per method with their (lo, hi) CI as error bars: {method: (arg, lo, hi)}."""
    names = list(table)
    args = np.array([table[m][0] for m in names], dtype=float)
    lo = np.array([table[m][1] for m in names], dtype=float)
    hi = np.array([table[m][2] for m in names], dtype=float)
    fig = Figure(figsize=(1.5 + 1.1 * len(names), 4))
    ax = fig.add_subplot()
    # Error bars are distances from the bar top; clip at 0 in case a CI does not contain it.
    yerr = np.clip(np.stack([args - lo, hi - args]), 0, None)  # [2 methods]
    ax.bar(range(len(names)), args, yerr=yerr, capsize=4, color="tab:blue")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("ARG (%)")
    ax.set_title(title)
    return _save(fig, path)
