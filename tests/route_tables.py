"""Small hand-made route tables shared by tests/test_analysis.py and tests/test_permutation.py.

Routes are [n l e] (tasks, layers, experts), as in minimoe/analysis.py.
"""

import numpy as np

CATS = ["cls"] * 4 + ["ext"] * 4 + ["kno"] * 4  # 12 tasks, 3 categories


def one_hot_routes(choices, n_experts):
    """[n l] expert ids → one-hot routes [n l e]."""
    return np.eye(n_experts)[np.asarray(choices)]


def planted_routes(categories, n_layers=3, n_experts=3):
    """Every task of category k takes expert k at every layer (plus nothing else)."""
    ids = {c: i for i, c in enumerate(sorted(set(categories)))}
    return one_hot_routes([[ids[c] % n_experts] * n_layers for c in categories], n_experts)
