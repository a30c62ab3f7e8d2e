"""Task metrics and the average relative gain (ARG), the paper's measure.

Paper "Data and metric" (lessons/paper_facts.md): every CrossFit task is scored on a 0–1 scale (exact
match, accuracy, macro-F1, …); methods are compared by ARG, the official `compute_arg.py`:

    RG(task) = (S_method − S_base) / S_base     scores averaged over the five data seeds first
    ARG      = 100 · mean over tasks of RG      (unweighted, in %)

ARG is a ratio, so a near-zero score makes it explode (a 0.02 → 0.05 change reads +150 %).
`arg` therefore leaves out tasks where either score is below `min_base` (and lists them), and
always reports the absolute difference in points beside it. Even so, ARG of noisy scores is
biased upward — two identical methods "gain" in both directions — so comparisons are judged by
the paired endpoints of `minimoe/endpoints.py`, with ARG beside them and its swap null.

Pure numpy, no model code. Read next: `minimoe/endpoints.py` (comparing two methods over seeds).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np

from minimoe.errors import ConfigError, DataError

METRICS = ("em", "acc", "macro_f1")


def normalize(text: str) -> str:
    """Lowercase, strip and collapse runs of whitespace: '  The  Cat ' → 'the cat'."""
    return " ".join(text.lower().split())


def exact_match(pred: str, golds: Sequence[str] | str) -> float:
    """1.0 if the normalised prediction equals any acceptable output (CrossFit's extra TSV columns)."""
    golds = [golds] if isinstance(golds, str) else golds
    return float(normalize(pred) in {normalize(gold) for gold in golds})


def _check_lengths(preds: Sequence[str], golds_list: Sequence) -> None:
    if len(preds) != len(golds_list):
        raise ValueError(f"{len(preds)} predictions but {len(golds_list)} gold lists; pass one per example")
    if len(preds) == 0:
        raise ValueError("no predictions to score; the test set is empty")


def accuracy(preds: Sequence[str], golds_list: Sequence[Sequence[str]]) -> float:
    """Mean `exact_match` over examples. "em" and "acc" are the same number here (CrossFit's EM
    also strips articles and punctuation; our synthetic outputs have neither).
    """
    _check_lengths(preds, golds_list)
    return float(np.mean([exact_match(p, g) for p, g in zip(preds, golds_list)]))


def _label_ids(preds, golds_list, labels) -> tuple[np.ndarray, np.ndarray, int]:
    """Index the gold [b] and predicted [b] label of every example in the label set (−1: outside)."""
    label_list = list(dict.fromkeys(normalize(label) for label in labels))  # dedupe, keep order
    index = {label: i for i, label in enumerate(label_list)}
    gold_ids, pred_ids = [], []
    for pred, golds in zip(preds, golds_list):
        golds = [normalize(g) for g in ([golds] if isinstance(golds, str) else golds)]
        in_set = [g for g in golds if g in index]
        if not in_set:
            raise DataError(f"gold output {golds!r} is not in the label set {label_list}; fix the task's labels")
        gold_ids.append(index[in_set[0]])
        pred = normalize(pred)
        # Any acceptable output counts as the gold label; other words count as what they name.
        pred_ids.append(index[in_set[0]] if pred in golds else index.get(pred, -1))
    return np.array(gold_ids), np.array(pred_ids), len(label_list)


def macro_f1(preds: Sequence[str], golds_list: Sequence[Sequence[str]], labels: Sequence[str]) -> float:
    """Macro-averaged F1 over the label set: mean over labels of F1 = 2·TP / (2·TP + FP + FN).

    A prediction outside `labels` is a false negative for its gold label and a false positive for
    nobody (so it only lowers recall). A label with zero support *and* zero predictions has an
    undefined F1 (0/0) and is skipped from the average, so a test set that happens to lack a
    class is not punished for it; a label predicted but never gold has F1 0.

    Deviations: sklearn's `f1_score(average="macro")` would add each out-of-set prediction as a
    new class with F1 0; we keep the average over the task's own labels.
    """
    _check_lengths(preds, golds_list)
    gold, pred, n_labels = _label_ids(preds, golds_list, labels)
    # BEGIN EXERCISE 7.1: macro-F1
    # HINT: np.bincount(x, minlength=n_labels) counts how often each label id occurs in x.
    # HINT: TP per label: count the gold ids of the rows where pred == gold.
    # HINT: 2·TP + FP + FN = support (gold count) + predicted count, so F1 = 2·TP / (support + predicted);
    # HINT: drop pred == −1 (outside the label set) before counting predictions.
    # HINT: average only over labels where support + predicted > 0.
    true_pos = np.bincount(gold[pred == gold], minlength=n_labels)
    support = np.bincount(gold, minlength=n_labels)
    predicted = np.bincount(pred[pred >= 0], minlength=n_labels)
    denom = support + predicted
    seen = denom > 0
    return float(np.mean(2 * true_pos[seen] / denom[seen]))
    # END EXERCISE 7.1


def score(metric: str, preds: Sequence[str], golds_list: Sequence[Sequence[str]],
          labels: Sequence[str] | None = None) -> float:
    """Score predictions with a named metric: "em" | "acc" | "macro_f1", on a 0–1 scale.

    For "macro_f1", `labels` defaults to the first gold output of every example; pass the task's
    full label set so that a label missing from the test set still counts when it is predicted.
    """
    if metric in ("em", "acc"):
        return accuracy(preds, golds_list)
    if metric == "macro_f1":
        if labels is None:
            labels = sorted({normalize(g if isinstance(g, str) else g[0]) for g in golds_list})
        return macro_f1(preds, golds_list, labels)
    near = difflib.get_close_matches(metric, METRICS, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ConfigError(f"unknown metric {metric!r}{hint}; valid metrics: {', '.join(METRICS)}")


# ---------------------------------------------------------------------------------------------
# Average relative gain


def relative_gain(s_method, s_base, eps: float = 1e-12):
    """RG = (S_method − S_base) / S_base, elementwise on floats or arrays.

    `eps` only stops a division by exactly zero (|S_base| < eps divides by ±eps instead); the real
    guard against tiny baselines is `min_base` in `arg`.
    """
    s_method, s_base = np.asarray(s_method, dtype=float), np.asarray(s_base, dtype=float)
    denom = np.where(np.abs(s_base) < eps, np.where(s_base < 0, -eps, eps), s_base)
    return (s_method - s_base) / denom


def arg_from_means(s_method: np.ndarray, s_base: np.ndarray, min_base: float) -> tuple[np.ndarray, np.ndarray]:
    """ARG (%) and mean absolute difference (points) from seed-averaged scores [... n] → [...].

    Works on any leading batch axes, so a swap null feeds all its draws [n_swap ... n] at once.
    Tasks with min(S_method, S_base) < min_base are left out of ARG (not of the absolute
    difference): symmetric, so ARG(A, B) and ARG(B, A) leave out the same tasks. Where every task
    is left out ARG is NaN.
    """
    # BEGIN EXERCISE 7.2: the ARG formula
    # HINT: relative_gain(s_method, s_base) gives RG per task [... n].
    # HINT: keep = min(s_method, s_base) >= min_base (np.minimum); average RG over kept tasks only:
    # HINT: sum(where(keep, rg, 0)) / sum(keep). × 100 for %.
    # HINT: the absolute difference is 100 · mean(s_method − s_base) over all tasks.
    keep = np.minimum(s_method, s_base) >= min_base
    rg = np.where(keep, relative_gain(s_method, s_base), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):  # no kept task → 0/0 = NaN, on purpose
        arg_pct = 100.0 * rg.sum(axis=-1) / keep.sum(axis=-1)
    abs_diff = 100.0 * (s_method - s_base).mean(axis=-1)
    return arg_pct, abs_diff
    # END EXERCISE 7.2


def _task_means(scores: Mapping[str, Sequence[float]], tasks: Sequence[str]) -> np.ndarray:
    """Average each task's per-data-seed scores: {task: [seeds]} → [n] in `tasks` order."""
    for task in tasks:
        if len(scores[task]) == 0:
            raise ValueError(f"task {task!r} has no scores; pass one score per data seed")
    return np.array([np.mean(scores[task]) for task in tasks], dtype=float)


def _same_tasks(method: Mapping, base: Mapping) -> list[str]:
    if set(method) != set(base):
        only_m, only_b = sorted(set(method) - set(base)), sorted(set(base) - set(method))
        raise ValueError(f"method and base must score the same tasks; only in method: {only_m}, only in base: {only_b}")
    if not method:
        raise ValueError("no tasks to compare")
    return sorted(method)


def arg(method_scores: Mapping[str, Sequence[float]], base_scores: Mapping[str, Sequence[float]],
        min_base: float = 0.05) -> dict:
    """ARG of a method over a baseline, as the paper's `compute_arg.py` computes it.

    Inputs: {task: [score per data seed]}, 0–1 scale. Returns a dict with `arg` (%, over kept
    tasks), `abs_diff` (mean S_method − S_base in points over *all* tasks: "absolute" as opposed
    to relative, signed), `excluded` (tasks with min(S_method, S_base) < min_base) and `per_task`
    {task: {"method", "base", "rg"}}.

    Deviations: the paper keeps every task. We exclude tasks where either score is below
    `min_base` (default 0.05) because RG divides by S_base: near 0 one task can dominate the mean
    (0.02 → 0.05 reads +150 %), and a negative baseline (Matthews correlation) flips the sign of
    RG. Both scores, not only the base, so that ARG(A, B) and ARG(B, A) drop the same tasks.
    """
    tasks = _same_tasks(method_scores, base_scores)
    s_method, s_base = _task_means(method_scores, tasks), _task_means(base_scores, tasks)
    arg_pct, abs_diff = arg_from_means(s_method, s_base, min_base)
    rg = relative_gain(s_method, s_base)
    return {
        "arg": float(arg_pct),
        "abs_diff": float(abs_diff),
        "excluded": [t for t, m, b in zip(tasks, s_method, s_base) if min(m, b) < min_base],
        "per_task": {t: {"method": float(m), "base": float(b), "rg": float(g)}
                     for t, m, b, g in zip(tasks, s_method, s_base, rg)},
    }
