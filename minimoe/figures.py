"""Figures of a run and of a reproduction: losses, routes per task, route dynamics, ARG bars,
gains against a knob (the interference dose-response).

Each figure is meant to be read without the code: axes carry labels, heatmaps a colour bar,
statistics a chance line, ARG bars the paper's value. Figures use matplotlib's object API
(`Figure`, never pyplot), so nothing opens a window and no global backend is switched.
Axes: n tasks, l routed layers, e experts. The statistics drawn here come from
`minimoe/analysis.py` (NMI) and `minimoe/permutation.py` (chance level).
Read next: `minimoe/report.py` (which figures a run writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from einops import rearrange
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from minimoe.analysis import check_routes, per_layer_nmi, route_category_nmi
from minimoe.permutation import chance_level

Curve = Sequence[tuple[int, float]]  # (step, loss) pairs


def save(fig: Figure, path) -> Path:
    """Write `fig` as a PNG (folders created), with the settings every minimoe figure shares."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _category_order(categories: Sequence[str], names: Sequence[str] | None = None) -> np.ndarray:
    """Task order [n] grouping tasks by category (then by name), for every heatmap."""
    names = names if names is not None else [""] * len(categories)
    return np.array(sorted(range(len(categories)), key=lambda i: (categories[i], names[i])))


def _draw_routes(ax, routes: np.ndarray, categories: Sequence[str]):
    """Draw [n l e] routes (already in category order) as [n (l e)] with layer/category lines;
    the x axis names each layer once (ticks at the layer's middle column)."""
    n, n_layers, n_experts = routes.shape
    im = ax.imshow(rearrange(routes, "n l e -> n (l e)"), vmin=0, vmax=1, cmap="viridis",
                   aspect="auto", interpolation="nearest")
    for layer in range(1, n_layers):
        ax.axvline(layer * n_experts - 0.5, color="white", lw=1.5)
    cats = np.asarray(categories)
    bounds = np.flatnonzero(cats[1:] != cats[:-1]) + 1  # first row of each new category
    for row in bounds:
        ax.axhline(row - 0.5, color="red", lw=1.5)
    ax.set_xticks([(layer + 0.5) * n_experts - 0.5 for layer in range(n_layers)],
                  [f"L{layer}" for layer in range(n_layers)], fontsize=7)
    return im, np.concatenate([[0], bounds, [n]])


def _label_categories(ax, bands: np.ndarray, cats: Sequence[str]) -> None:
    """Write each category's name just right of its band of rows, vertically (it stays narrow)."""
    for start, stop in zip(bands[:-1], bands[1:]):
        ax.text(1.01, 1 - (start + stop) / 2 / bands[-1], cats[start], transform=ax.transAxes,
                rotation=-90, va="center", ha="left", fontsize=8)


def plot_route_heatmap(routes: np.ndarray, task_names: Sequence[str], categories: Sequence[str],
                       seen_mask: Sequence[bool], path, title: str = "task routes") -> Path:
    """Heatmap of routes [n l e]: rows = tasks grouped by category, columns = expert E of routed
    layer L (bottom: E, top: L).

    Unseen tasks (seen_mask False) get a '*' and a red tick label; white lines separate layers,
    red lines separate categories, whose names are written at the right of their band.
    """
    routes = check_routes(routes, categories)
    order = _category_order(categories, task_names)
    cats = [categories[i] for i in order]
    n, n_layers, n_experts = routes.shape
    fig = Figure(figsize=(2.5 + 0.45 * n_layers * n_experts, 1.8 + 0.25 * n))
    ax = fig.add_subplot()
    im, bands = _draw_routes(ax, routes[order], cats)
    top = ax.secondary_xaxis("top")
    top.set_xticks(ax.get_xticks(), [f"layer {layer}" for layer in range(n_layers)], fontsize=8)
    ax.set_xticks(range(n_layers * n_experts), [f"E{e}" for _ in range(n_layers) for e in range(n_experts)],
                  fontsize=7)
    ax.set_xlabel("expert E of each routed layer L (encoder layers first, then decoder)")
    ax.set_yticks(range(n), [task_names[i] + ("" if seen_mask[i] else " *") for i in order], fontsize=7)
    for tick, i in zip(ax.get_yticklabels(), order):
        tick.set_color("black" if seen_mask[i] else "tab:red")
    _label_categories(ax, bands, cats)
    ax.set_title(f"{title}  (* = unseen task)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.08, label="gate (weight of the expert for the task)")
    return save(fig, path)


def plot_route_dynamics(route_history: Sequence[np.ndarray], categories: Sequence[str], path,
                        steps: Sequence[int] | None = None, max_panels: int = 6,
                        task_names: Sequence[str] | None = None) -> Path:
    """Routes over training: up to `max_panels` evenly spaced snapshots [n l e] (rows = tasks
    grouped by category, named in the first panel), a colour bar, and NMI vs category per
    snapshot with its chance level (dashed: the mean NMI over shuffled categories)."""
    if not route_history:
        raise ValueError("route_history is empty; save routes at every evaluation")
    steps = list(steps) if steps is not None else list(range(len(route_history)))
    picks = np.unique(np.linspace(0, len(route_history) - 1, min(max_panels, len(route_history))).astype(int))
    names = list(task_names) if task_names is not None else [f"task {i}" for i in range(len(categories))]
    order = _category_order(categories, names)
    cats = [categories[i] for i in order]
    n = len(order)
    fig = Figure(figsize=(2.4 + 1.7 * len(picks) + 4.2, 1.8 + 0.16 * n), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[2.4 + 1.7 * len(picks), 4.2])
    axes = left.subplots(1, len(picks), squeeze=False)[0]
    for ax, k in zip(axes, picks):
        im, bands = _draw_routes(ax, check_routes(route_history[k], categories)[order], cats)
        ax.set_title(f"step {steps[k]}", fontsize=8)
        ax.set_xlabel("routed layer", fontsize=7)
        ax.set_yticks([])
    axes[0].set_yticks(range(n), [names[i] for i in order], fontsize=5)
    _label_categories(axes[-1], bands, cats)
    left.colorbar(im, ax=list(axes), fraction=0.015, pad=0.03, aspect=40, label="gate")
    left.suptitle("routes of the seen tasks during training (rows: tasks by category)", fontsize=9)
    curve = right.subplots()
    for stat, label, colour in ((per_layer_nmi, "per layer", "tab:blue"), (route_category_nmi, "signature", "tab:orange")):
        curve.plot(steps, [stat(r, categories) for r in route_history], color=colour, marker=".", label=label)
        curve.plot(steps, [chance_level(stat, r, categories, n_perm=50) for r in route_history], color=colour,
                   ls="--", lw=1, label=f"{label}, chance")
    curve.set_ylim(-0.02, 1.02)
    curve.set_xlabel("step")
    curve.set_ylabel("NMI (routes vs category)")
    curve.set_title("do routes follow categories?", fontsize=8)
    curve.legend(fontsize=6)
    return save(fig, path)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first window−1 points average what came so far)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    return (sums[idx] - sums[np.maximum(0, idx - window)]) / np.minimum(idx, window)


def _draw_losses(ax, curves: Mapping[str, Curve], held_out: Mapping[str, Curve]) -> None:
    """Per-step losses (faint) with their moving average, and held-out points at checkpoints."""
    for i, (name, points) in enumerate(curves.items()):
        if not points:
            continue
        steps, losses = (np.asarray(v, dtype=float) for v in zip(*points))
        colour = f"C{i}"
        ax.plot(steps, losses, color=colour, alpha=0.25, lw=0.7)
        ax.plot(steps, _smooth(losses, max(1, len(losses) // 25)), color=colour, label=f"{name} (train)")
        if held_out.get(name):
            h_steps, h_losses = zip(*held_out[name])
            ax.plot(h_steps, h_losses, color=colour, marker="o", ms=4, ls="--", label=f"{name} (held-out)")
    values = [v for points in curves.values() for _, v in points]
    if values and min(values) > 0 and max(values) > 5 * min(values):  # spans a decade or so: log
        ax.set_yscale("log")
        for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_format(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (label-smoothed cross-entropy)")
    if values:
        ax.legend(fontsize=7)


def plot_loss_curves(pretrain: Curve, upstream: Mapping[str, Curve], path,
                     held_out: Mapping[str, Curve] | None = None) -> Path:
    """Two panels: denoising pre-training, then training on the seen tasks ({stage: [(step,
    loss)]}, steps counted from the start of upstream training) with the held-out loss of the
    seen tasks at every checkpoint ({stage: [(step, loss)]}) where given."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    _draw_losses(left, {"pre-train": pretrain} if pretrain else {}, {})
    left.set_title("1. pre-training: denoising the corpus (dense model)", fontsize=9)
    _draw_losses(right, upstream, held_out or {})
    right.set_title("2. upstream: the seen tasks (held-out = examples never trained on)", fontsize=9)
    return save(fig, path)


def plot_arg_bars(table: Mapping[str, tuple[float, float, float]], path, title: str = "ARG vs dense",
                  paper: float | None = None, paper_methods: Sequence[str] = ("two_stage", "two_stage_2x"),
                  ylabel: str = "ARG vs dense multi-task (%)") -> Path:
    """Bars per method with their (lo, hi) interval as error bars: {method: (value, lo, hi)} — ARG
    in %, or (with `ylabel`) the paired difference in points; a NaN interval draws no error bar.
    `paper` (the paper's ARG of its final recipe, so only on ARG bars) is drawn as a dashed line
    over the bars of `paper_methods`, the runs of that recipe (over every bar when none is drawn)."""
    names = list(table)
    args = np.array([table[m][0] for m in names], dtype=float)
    lo = np.array([table[m][1] for m in names], dtype=float)
    hi = np.array([table[m][2] for m in names], dtype=float)
    fig = Figure(figsize=(2.5 + 1.1 * len(names), 4))
    ax = fig.add_subplot()
    # Error bars are distances from the bar top; clip at 0 in case a CI does not contain it.
    yerr = np.nan_to_num(np.clip(np.stack([args - lo, hi - args]), 0, None))  # [2 methods]
    ax.bar(range(len(names)), args, yerr=yerr, capsize=4, color="tab:blue", label="minimoe (95 % CI)")
    ax.axhline(0.0, color="black", lw=0.8)
    if paper is not None:
        at = [i for i, m in enumerate(names) if m in paper_methods] or range(len(names))
        for k, i in enumerate(at):
            ax.hlines(paper, i - 0.45, i + 0.45, color="tab:red", ls="--", lw=1.5,
                      label=None if k else f"paper, two-stage: {paper:+.1f} %")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_dose_response(levels: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
                       path, ylabel: str = "gain over average routing (points)", xlabel: str = "interference") -> Path:
    """One panel per setting ({title: {method: [(estimate, lo, hi) per level]}}): each method's
    paired gain with its 95 % interval against the knob, methods side by side at every level."""
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    x = np.arange(len(levels), dtype=float)
    for k, (title, methods) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), k + 1, sharey=fig.axes[0] if k else None)
        for i, (method, rows) in enumerate(methods.items()):
            est, lo, hi = np.asarray(rows, dtype=float).T  # [levels] each
            shift = x + 0.08 * (i - (len(methods) - 1) / 2)  # side by side, not on top of each other
            ax.errorbar(shift, est, yerr=np.nan_to_num(np.clip(np.stack([est - lo, hi - est]), 0, None)),
                        marker="o", capsize=3, label=method)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(x, [f"{v:g}" for v in levels])
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        if k == 0:
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
    return save(fig, path)
