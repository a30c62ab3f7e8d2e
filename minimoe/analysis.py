"""Routing analysis: do the learned routes rediscover the human categories of tasks?

Paper "Routing analysis" (see `PAPER.md`, DESIGN §4.5): the paper draws per-task routes as
heatmaps grouped by category and *says* they cluster; it reports no statistic. Here we measure:

- `route_category_nmi`: normalised mutual information (NMI) between each task's route
  signature (its argmax expert at every layer, as one tuple) and its category. With many layers
  every task may get its own signature, and then NMI is high for any labelling, so we also
  report `per_layer_nmi` (one layer at a time, averaged over layers).
- `per_layer_ami`: the same, adjusted for chance. NMI of unrelated labelings is above 0 (with
  tens of tasks and 3 experts, about 0.05–0.1), so NMI alone cannot say how strong an
  association is; AMI is 0 at chance and 1 for identical partitions.
- `expert_selectivity`: how much of each expert's routing mass goes to each category.

Whether a statistic is more than chance is `minimoe/permutation.py`'s question (the p-values).

Figures use matplotlib's object API (`Figure`, never pyplot), so nothing opens a window and
no global backend is switched. Axes: n tasks, l routed layers, e experts, c categories
(c in sorted order of the category names). Read next: `minimoe/permutation.py` (p-values),
`minimoe/metrics.py` (ARG).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from einops import einsum, rearrange
from matplotlib.figure import Figure


def check_routes(routes: np.ndarray, categories: Sequence | None = None) -> np.ndarray:
    """routes as a float array [n l e]; a ValueError naming the shape, or the count, when they do
    not fit (3 axes; one category per task)."""
    routes = np.asarray(routes, dtype=float)
    if routes.ndim != 3:
        raise ValueError(f"routes must be [n l e] (tasks, layers, experts); got shape {routes.shape}")
    if categories is not None and len(categories) != routes.shape[0]:
        raise ValueError(f"{routes.shape[0]} tasks in routes but {len(categories)} categories")
    return routes


def route_signatures(routes: np.ndarray) -> np.ndarray:
    """Integer id [n] of each task's argmax-route tuple (one expert per layer): equal tuples, equal ids."""
    chosen = check_routes(routes).argmax(axis=-1)  # [n l]
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
    return normalized_mutual_info(route_signatures(check_routes(routes, categories)), categories)


def per_layer_nmi(routes: np.ndarray, categories: Sequence[str]) -> float:
    """Mean over layers of NMI(argmax expert at that layer [n], categories [n]).

    Robust when signatures are all unique (many layers): a layer has at most e groups.
    """
    chosen = check_routes(routes, categories).argmax(axis=-1)  # [n l]
    return float(np.mean([normalized_mutual_info(layer, categories) for layer in chosen.T]))


def _entropy(labels: Sequence) -> float:
    """H (nats) of a labelling's group sizes."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


@functools.lru_cache(maxsize=4096)  # permutations keep the group sizes: the same sums recur
def expected_mutual_info(a_sizes: tuple[int, ...], b_sizes: tuple[int, ...]) -> float:
    """E[I(a; b)] (nats) over all labelings with these group sizes, paired at random.

    The hypergeometric model of Vinh, Epps & Bailey (JMLR 2010): for groups of sizes a_i and b_j
    among N items, the overlap n_ij is hypergeometric, so E[I] = Σ_ij Σ_n P(n_ij = n) ·
    (n / N) · log(N n / (a_i b_j)). Exact, no sampling.
    """
    n_items, lg = sum(a_sizes), math.lgamma
    total = 0.0
    for a in a_sizes:
        for b in b_sizes:
            for n in range(max(1, a + b - n_items), min(a, b) + 1):
                log_p = (lg(a + 1) + lg(b + 1) + lg(n_items - a + 1) + lg(n_items - b + 1) - lg(n_items + 1)
                         - lg(n + 1) - lg(a - n + 1) - lg(b - n + 1) - lg(n_items - a - b + n + 1))
                total += n / n_items * math.log(n_items * n / (a * b)) * math.exp(log_p)
    return total


def adjusted_mutual_info(a: Sequence, b: Sequence) -> float:
    """AMI(a, b) = (I − E[I]) / ((H(a) + H(b)) / 2 − E[I]): NMI corrected for chance.

    NMI of two *unrelated* labelings is above 0 (more so with few items and many groups); AMI
    subtracts what chance gives, so 0 = no more agreement than chance, 1 = same partition (as
    sklearn's `adjusted_mutual_info_score` with arithmetic normalisation).
    """
    h_mean = (_entropy(a) + _entropy(b)) / 2.0
    if h_mean == 0.0:  # both constant: the same partition
        return 1.0
    mi = normalized_mutual_info(a, b) * h_mean
    sizes = [tuple(sorted(np.unique(np.asarray(x), return_counts=True)[1].tolist())) for x in (a, b)]
    emi = expected_mutual_info(*sizes)
    # Every item its own group on both sides: I = E[I], nothing beyond chance is possible.
    return float((mi - emi) / (h_mean - emi)) if h_mean - emi > 1e-12 else 0.0


def per_layer_ami(routes: np.ndarray, categories: Sequence[str]) -> float:
    """Mean over layers of AMI(argmax expert at that layer [n], categories [n]): `per_layer_nmi`
    corrected for chance, so 0 means "no more than shuffled labels give"."""
    chosen = check_routes(routes, categories).argmax(axis=-1)  # [n l]
    return float(np.mean([adjusted_mutual_info(layer, categories) for layer in chosen.T]))


def expert_selectivity(routes: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Share of each expert's soft routing mass per category, [n l e] → [l e c], sums to 1 over c.

    Uses the *mean* gate per category (not the sum) so that big categories do not look
    preferred: an expert that every task uses equally gets 1/c everywhere. An expert no task
    uses has no preference and also gets 1/c.
    """
    routes = check_routes(routes, categories)
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
    routes = check_routes(routes, categories)
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
        _draw_routes(ax, check_routes(route_history[k], categories)[order], cats)
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


def plot_arg_bars(table: Mapping[str, tuple[float, float, float]], path, title: str = "ARG vs dense",
                  ylabel: str = "ARG (%)") -> Path:
    """Bars per method with their (lo, hi) interval as error bars: {method: (value, lo, hi)}
    (ARG in %, or a difference in points with `ylabel`); a NaN interval draws no error bar."""
    names = list(table)
    args = np.array([table[m][0] for m in names], dtype=float)
    lo = np.array([table[m][1] for m in names], dtype=float)
    hi = np.array([table[m][2] for m in names], dtype=float)
    fig = Figure(figsize=(1.5 + 1.1 * len(names), 4))
    ax = fig.add_subplot()
    # Error bars are distances from the bar top; clip at 0 in case a CI does not contain it.
    yerr = np.nan_to_num(np.clip(np.stack([args - lo, hi - args]), 0, None))  # [2 methods]
    ax.bar(range(len(names)), args, yerr=yerr, capsize=4, color="tab:blue")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)
