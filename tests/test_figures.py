"""Tests for minimoe/figures.py (and the curves minimoe/report.py hands it).

What is checked: every figure writes a non-empty PNG, creating parent directories; the loss
figure has its two panels (pre-training; upstream with the held-out points) with labelled axes;
the route heatmap explains its columns (expert below, layer above) and has a colour bar; route
dynamics names the tasks and draws a chance line; the ARG bars carry the paper's value; the
moving average is exact on hand cases; a second training stage follows the first on the step axis.
Looking at a figure is still the real check: `python train_tiny.py --preset=tiny` writes all of a
run's figures in about a minute.

Run: `python -m pytest tests/test_figures.py -q` (seconds). The route-dynamics test computes NMI
(exercise 8.1) and carries `ex8_1`.
"""

import numpy as np
import pytest
from matplotlib.figure import Figure

from minimoe import figures
from minimoe.figures import _smooth, plot_arg_bars, plot_dose_response, plot_loss_curves, plot_route_dynamics, plot_route_heatmap
from minimoe.report import upstream_curves
from route_tables import CATS


def assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """Every Figure a plot function saves, kept for inspection (it is still written to disk)."""
    kept, save = [], figures.save

    def keep(fig: Figure, path):
        kept.append(fig)
        return save(fig, path)
    monkeypatch.setattr(figures, "save", keep)
    return kept


def test_route_heatmap_explains_its_columns(tmp_path, drawn):
    rng = np.random.default_rng(1)
    routes = rng.dirichlet(np.ones(3), size=(len(CATS), 2))  # [n l e] soft routes
    names = [f"task_{i}" for i in range(len(CATS))]
    seen = [i % 4 != 0 for i in range(len(CATS))]  # every fourth task unseen
    assert_png(plot_route_heatmap(routes, names, CATS[::-1], seen, tmp_path / "a" / "b" / "routes.png", "test"))
    ax, colorbar = drawn[0].axes[0], drawn[0].axes[-1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["E0", "E1", "E2"] * 2
    assert "expert" in ax.get_xlabel() and "layer" in ax.get_xlabel()
    top = ax.child_axes[0]  # the secondary axis naming the layers
    assert [t.get_text() for t in top.get_xticklabels()] == ["layer 0", "layer 1"]
    assert "gate" in colorbar.get_ylabel()


@pytest.mark.ex8_1
def test_route_dynamics_names_tasks_and_draws_chance(tmp_path, drawn):
    rng = np.random.default_rng(2)
    history = [rng.dirichlet(np.ones(3), size=(len(CATS), 2)) for _ in range(9)]
    names = [f"t{i}" for i in range(len(CATS))]
    assert_png(plot_route_dynamics(history, CATS, tmp_path / "figs" / "dynamics.png", steps=range(0, 900, 100),
                                   task_names=names))
    axes = drawn[0].get_axes()
    assert sorted(t.get_text() for t in axes[0].get_yticklabels()) == sorted(names)
    curve = next(ax for ax in axes if ax.get_ylabel().startswith("NMI"))
    labels = [line.get_label() for line in curve.get_lines()]
    assert {"per layer", "per layer, chance", "signature", "signature, chance"} <= set(labels)
    assert any(ax.get_ylabel() == "gate" for ax in axes)  # the colour bar


def test_loss_figure_has_two_panels_with_held_out_points(tmp_path, drawn):
    pretrain = [(s, 6.0 / (1 + s)) for s in range(50)]
    upstream = {"learned": [(s, 3.0 / (1 + 0.1 * s)) for s in range(40)]}
    held_out = {"learned": [(20, 1.2), (40, 0.9)]}
    assert_png(plot_loss_curves(pretrain, upstream, tmp_path / "x" / "loss.png", held_out=held_out))
    left, right = drawn[0].axes
    assert "pre-training" in left.get_title() and "seen tasks" in right.get_title()
    assert all(ax.get_xlabel() == "step" and "loss" in ax.get_ylabel() for ax in (left, right))
    assert left.get_yscale() == "log"  # six-fold range: log
    held = next(line for line in right.get_lines() if line.get_label() == "learned (held-out)")
    assert list(held.get_xdata()) == [20, 40]
    assert_png(plot_loss_curves([], {}, tmp_path / "x" / "empty.png"))  # a run with no steps still draws


def test_arg_bars_draw_the_papers_value(tmp_path, drawn):
    table = {"average": (1.0, -3.0, 5.0), "two_stage": (-2.0, -6.5, 2.0), "learned": (2.6, 0.4, 4.9)}
    assert_png(plot_arg_bars(table, tmp_path / "x" / "arg.png", "few-shot ARG", paper=2.6))
    ax = drawn[0].axes[0]
    paper = [c for c in ax.collections if c.get_label().startswith("paper")]
    assert len(paper) == 1  # over the two_stage bar (index 1) only
    (start, end), = [segment[:, 0] for segment in paper[0].get_segments()]
    assert (start, end) == (0.55, 1.45) and paper[0].get_segments()[0][0, 1] == 2.6
    assert "paper" in "".join(t.get_text() for t in ax.get_legend().get_texts())


def test_dose_response_draws_each_method_at_each_level(tmp_path, drawn):
    rows = {"oracle": [(0.0, -1.0, 1.0), (2.0, 0.5, 3.5), (6.0, 3.0, 9.0)], "learned": [(0.0, -1.0, 1.0)] * 3}
    assert_png(plot_dose_response([0, 0.5, 1], {"few-shot": rows, "zero-shot": rows}, tmp_path / "d.png"))
    few, zero = drawn[0].axes
    assert [a.get_title() for a in (few, zero)] == ["few-shot", "zero-shot"]
    assert [t.get_text() for t in few.get_xticklabels()] == ["0", "0.5", "1"]
    assert [c.get_label() for c in few.containers] == ["oracle", "learned"]
    lines = [c.lines[0] for c in few.containers]  # each method's data line (not its caps)
    assert [list(line.get_ydata()) for line in lines] == [[0.0, 2.0, 6.0], [0.0, 0.0, 0.0]]
    assert np.all(np.diff([line.get_xdata() for line in lines], axis=0) > 0)  # side by side
    assert few.get_legend() is not None and zero.get_legend() is None


def test_moving_average_on_hand_cases():
    values = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(_smooth(values, 1), values)
    np.testing.assert_allclose(_smooth(values, 2), [1.0, 2.0, 4.0, 6.0])  # the first point averages itself
    np.testing.assert_allclose(_smooth(np.full(7, 2.5), 3), np.full(7, 2.5))


def test_second_stage_follows_the_first_on_the_step_axis():
    curves = {"pretrain": [(0, 9.0)], "two_stage": [(0, 3.0), (1, 2.0)], "two_stage stage 2": [(0, 2.5), (1, 1.5)]}
    assert upstream_curves(curves, "two_stage") == {"two_stage": [(0, 3.0), (1, 2.0)],
                                                    "two_stage stage 2": [(2, 2.5), (3, 1.5)]}
    assert upstream_curves({"pretrain": [(0, 9.0)]}, "learned") == {}
