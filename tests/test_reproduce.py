"""Tests for minimoe/reproduce.py, repro_report.py and routes.py: the `reproduce --quick` path.

One tiny reproduction (every cell, one upstream seed, one data seed) must write results.json
with the headline keys, report.md with the endpoint and route tables, and the figures; a second
call recomputes no finished cell. A `--quick` report opens with the banner that its numbers are
meaningless, and `--quick` writes to its own folder; config fields are `--field=value` options
(with `--set field=value` as an alias). The statistics themselves are tested in test_endpoints.py
(paired endpoints, swap null, calibration), test_metrics.py (ARG formula), test_analysis.py
(NMI, AMI) and test_permutation.py (permutation tests).
Run: python -m pytest tests/test_reproduce.py -q -m slow  (a reproduction of every cell: about a minute;
     CI runs it, .ci/run; without -m slow only the command-line parsing is tested)
"""

import json

import numpy as np
import pytest

from minimoe.errors import ConfigError
from minimoe.presets import apply_overrides, get_preset
from minimoe.repro_report import QUICK_BANNER
from minimoe.reproduce import DEFAULT_CELLS, reproduce, run_cell
from minimoe.reproduce_cli import QUICK, build_cli, config_and_out
from minimoe.routes import seed_suites, seen_strata

pytestmark = pytest.mark.exercise  # runs the whole model (see tests/test_model.py)

HEADLINE = ("few_shot_points", "few_shot_points_ci", "zero_shot_points", "zero_shot_points_ci", "few_shot_arg",
            "zero_shot_arg", "per_method", "route_category_nmi", "route_category_ami", "route_category_p",
            "wall_seconds", "command")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    cfg = apply_overrides(get_preset("tiny"), dict(QUICK, steps=8, pretrain_steps=4, fs_steps=2,
                                                   n_upstream=8, n_test=4, k_per_class=2, k_other=2))
    summary = reproduce(cfg, out, seeds=(0,), data_seeds=(100,), quiet=True)
    return cfg, out, summary


@pytest.mark.slow
@pytest.mark.ci
def test_quick_reproduce_writes_every_table_and_figure(quick):
    cfg, out, summary = quick
    saved = json.loads((out / "results.json").read_text())
    for key in HEADLINE:
        assert key in saved, key
    assert set(saved["per_method"]) == {"average", "random", "learned", "two_stage", "two_stage_2x", "token",
                                        "fisher"}
    assert set(saved["per_method_vs_average"]) == {"random", "learned", "two_stage", "two_stage_2x"}
    assert 0 < saved["route_category_p_skill_controlled"] <= 1  # skills shuffled between categories
    assert len(saved["few_shot_points_ci"]) == 2
    for endpoint in ("points", "symmetric_pct", "arg"):
        assert endpoint in saved["per_method"]["two_stage"]["few_shot"]
    assert {"swap_null", "p_swap", "reverse"} <= set(saved["per_method"]["two_stage"]["few_shot"]["arg"])
    report = (out / "report.md").read_text()
    assert "## Few-shot: method vs the dense multi-task model" in report and "## Routes vs categories" in report
    assert "ARG if exchangeable" in report and "per-layer AMI" in report
    assert "| token |" in report  # token routes vs categories (routes.token_routes)
    for name in ("points_few_shot.png", "points_zero_shot.png", "routes_learned_emb.png", "routes_learned.png",
                 "routes_token.png"):
        assert (out / "figures" / name).stat().st_size > 1000, name
    for cell in DEFAULT_CELLS:
        assert (out / "seed0" / f"{cell}.json").is_file(), cell


@pytest.mark.slow
@pytest.mark.ci
def test_fisher_cell_scores_few_shot_only(quick):
    """The fisher cell routes unseen tasks from their few-shot train sets' Fisher vectors: it
    has few-shot scores and a few-shot row, no zero-shot score (labels were used) and no zero-shot row."""
    cfg, out, summary = quick
    cell = json.loads((out / "seed0" / "fisher.json").read_text())
    assert cell["config"]["router"]["task_repr"] == "fisher"
    assert cell["zero_shot"] == {} and len(cell["few_shot"]) == len(json.loads((out / "seed0" / "dense.json")
                                                                               .read_text())["few_shot"])
    assert summary["per_method"]["fisher"]["few_shot"] is not None
    assert summary["per_method"]["fisher"]["zero_shot"] is None
    report = (out / "report.md").read_text()
    few, zero = report.split("## Zero-shot: method vs the dense")[0], report.split("## Zero-shot: method vs the dense")[1]
    assert "| fisher |" in few.split("## Few-shot: method vs the dense")[1]
    assert "| fisher |" not in zero.split("##")[0]


@pytest.mark.slow
@pytest.mark.ci
def test_finished_cells_are_not_recomputed(quick):
    cfg, out, _ = quick
    path = out / "seed0" / "dense.json"
    before = path.stat().st_mtime_ns
    cell = run_cell(cfg, "dense", 0, (100,), out)
    assert path.stat().st_mtime_ns == before and cell["name"] == "dense"


@pytest.mark.slow
@pytest.mark.ci
def test_parallel_cells_equal_the_sequential_ones(quick, tmp_path):
    """jobs > 1 (pre-train per seed, then cells longest-first in a process pool) computes the
    same cells as the sequential run."""
    cfg, out, _ = quick
    reproduce(cfg, tmp_path, seeds=(0,), data_seeds=(100,), cells=("dense", "learned"), quiet=True, jobs=2)
    for name in ("dense", "learned"):
        a, b = (json.loads((d / "seed0" / f"{name}.json").read_text()) for d in (out, tmp_path))
        for timing in ("seconds", "phase_seconds"):
            a.pop(timing), b.pop(timing)
        assert a == b, name


@pytest.mark.slow
@pytest.mark.ci
def test_parallel_rebuild_of_finished_cells_trains_nothing(quick, tmp_path):
    """With every cell on disk, `reproduce --jobs 2` only rebuilds the tables: no process pool
    work, so no dense base is pre-trained (no pretrain.pt appears)."""
    cfg, out, _ = quick
    (tmp_path / "seed0").mkdir()
    for name in ("dense", "learned"):
        (tmp_path / "seed0" / f"{name}.json").write_text((out / "seed0" / f"{name}.json").read_text())
    reproduce(cfg, tmp_path, seeds=(0,), data_seeds=(100,), cells=("dense", "learned"), quiet=True, jobs=2)
    assert not (tmp_path / "seed0" / "pretrain.pt").exists()
    assert (tmp_path / "results.json").is_file()


@pytest.mark.slow
@pytest.mark.ci
def test_route_cells_alone_make_a_report(quick, tmp_path):
    """A run of only `learned_emb` (routes for finding 2, no transfer baseline) writes its tables:
    no comparison rows, the route statistics, no per-task transfer table (this crashed once)."""
    cfg, out, _ = quick
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "learned_emb.json").write_text((out / "seed0" / "learned_emb.json").read_text())
    summary = reproduce(cfg, tmp_path, seeds=(0,), data_seeds=(100,), cells=("learned_emb",), quiet=True)
    assert summary["few_shot_points"] is None and "learned_emb" in summary["route_stats"]
    report = (tmp_path / "report.md").read_text()
    assert "| learned_emb |" in report and "## Unseen tasks" not in report


@pytest.mark.slow
@pytest.mark.ci
def test_resplit_gives_each_seed_its_own_unseen_tasks(quick, tmp_path):
    """`reproduce --resplit`: seed s's cells use split_seed s, so the seeds score different
    unseen tasks; the endpoints are still paired per seed, and a rerun without --resplit is refused
    (its cells would hold the catalogue's split) instead of mixing the two."""
    cfg, _, _ = quick
    summary = reproduce(cfg, tmp_path, seeds=(0, 1), data_seeds=(100,), cells=("dense", "two_stage"),
                        quiet=True, resplit=True)
    cells = {s: json.loads((tmp_path / f"seed{s}" / "two_stage.json").read_text()) for s in (0, 1)}
    assert [cells[s]["config"]["data"]["split_seed"] for s in (0, 1)] == [0, 1]
    assert set(cells[0]["few_shot"]) != set(cells[1]["few_shot"])
    per_seed = summary["per_method"]["two_stage"]["few_shot"]["points"]["per_seed"]
    assert summary["split_per_seed"] is True and set(per_seed) == {0, 1}
    assert "each seed's own unseen tasks" in (tmp_path / "report.md").read_text()
    # Routes: each seed's own seen tasks, the mean statistic over seeds, a stratified permutation p.
    stats = summary["route_stats"]["two_stage"]
    assert stats["strata"] == 2 and 0 < stats["per_layer_nmi_p"] <= 1 and 0 < stats["per_layer_nmi_p_blocks"] <= 1
    assert "stratified permutations" in (tmp_path / "report.md").read_text()
    suites = seed_suites(cfg, {"two_stage": cells})
    strata, names = seen_strata({"two_stage": cells}, "two_stage", suites)
    assert 0 < stats["per_layer_nmi_p_shared"] <= 1 and 0 < stats["per_layer_nmi_p_blocks_shared"] <= 1
    for seed, (routes, cats, skills), names_s in zip((0, 1), strata, names):
        seen = [t for t in suites[seed].tasks if t.seen]
        assert cats == [t.category for t in seen] and skills == [t.skill for t in seen]
        assert names_s == [t.name for t in seen]
        rows = [i for i, t in enumerate(suites[seed].tasks) if t.seen]
        assert np.array_equal(routes, np.asarray(cells[seed]["routes"])[rows])
    with pytest.raises(ConfigError, match="--resplit"):
        reproduce(cfg, tmp_path, seeds=(0, 1), data_seeds=(100,), cells=("dense", "two_stage"), quiet=True)
    with pytest.raises(ConfigError, match="split_seed"):
        reproduce(apply_overrides(cfg, {"split_seed": 3}), tmp_path / "x", seeds=(0,), data_seeds=(100,),
                  cells=("dense",), quiet=True, resplit=True)


@pytest.mark.slow
@pytest.mark.ci
def test_quick_report_opens_with_the_banner(quick, tmp_path):
    """A rebuild of the same cells with quick=True (what `--quick` passes): banner at the top of
    report.md and "quick" in results.json; a run without it has neither."""
    cfg, out, _ = quick
    (tmp_path / "seed0").mkdir()
    for name in ("dense", "two_stage"):
        (tmp_path / "seed0" / f"{name}.json").write_text((out / "seed0" / f"{name}.json").read_text())
    summary = reproduce(cfg, tmp_path, seeds=(0,), data_seeds=(100,), cells=("dense", "two_stage"), quiet=True,
                        quick=True)
    assert summary["quick"] is True and "quick" not in json.loads((out / "results.json").read_text())
    report = (tmp_path / "report.md").read_text().splitlines()
    assert QUICK_BANNER in report[2] and "meaningless" in QUICK_BANNER
    assert QUICK_BANNER not in (out / "report.md").read_text()


def test_one_override_syntax_and_a_folder_of_its_own_for_quick():
    parser = build_cli("reproduce")
    cfg, out = config_and_out(parser.parse_args([]))
    assert str(out) == "runs/reproduce" and cfg.train.steps == get_preset("repro").train.steps
    cfg, out = config_and_out(parser.parse_args(["--quick"]))
    assert str(out) == "runs/reproduce-quick" and cfg.train.steps == QUICK["steps"]
    cfg, out = config_and_out(parser.parse_args(["--quick", "--steps=40", "--lr=0.01", "--out", "x"]))
    assert (str(out), cfg.train.steps, cfg.train.lr, cfg.train.pretrain_steps) == ("x", 40, 0.01, QUICK["pretrain_steps"])
    alias, _ = config_and_out(parser.parse_args(["--set", "steps=40", "lr=0.01"]))
    flags, _ = config_and_out(parser.parse_args(["--steps=40", "--lr=0.01"]))
    assert alias == flags
    with pytest.raises(SystemExit):
        parser.parse_args(["--stepz=3"])  # argparse's error names the nearest option (tests/test_bad_inputs.py)
