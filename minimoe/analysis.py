"""Routing analysis: do the learned routes rediscover the human categories of tasks?

Paper "Routing analysis" (lessons/paper_facts.md): the paper draws per-task routes as
heatmaps grouped by category and *says* they cluster; it reports no statistic. Here we measure:

- `route_category_nmi`: normalised mutual information (NMI) between each task's route
  signature (its argmax expert at every layer, as one tuple) and its category. With many layers
  every task may get its own signature, and then NMI is high for any labelling, so we also
  report `per_layer_nmi` (one layer at a time, averaged over layers).
- `per_layer_ami`: the same, adjusted for chance. NMI of unrelated labelings is above 0 (with
  tens of tasks and 3 experts, about 0.05–0.1), so NMI alone cannot say how strong an
  association is; AMI is 0 at chance and 1 for identical partitions.
- `expert_selectivity`: how much of each expert's routing mass goes to each category.

Whether a statistic is more than chance is `minimoe/permutation.py`'s question (the p-values);
`minimoe/figures.py` draws routes and these statistics.
Axes: n tasks, l routed layers, e experts, c categories (c in sorted order of the category
names). Read next: `minimoe/permutation.py` (p-values), `minimoe/metrics.py` (ARG).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from einops import einsum


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
