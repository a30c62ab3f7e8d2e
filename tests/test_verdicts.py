"""Tests for minimoe/verdicts.py: pooling reproduce folders and the verdict rows.

Fast tests build small fake reproduce folders (a config.json and per-seed cell files with
scores, no routes): two folders pooled give exactly the rows of one folder holding both seeds;
folders of other settings, or sharing a seed, are refused with one line; rows carry every field
the verdict table promises. The slow test rebuilds lessons/results/verdicts.json from the
committed cells and compares it with the committed file.

Run: python -m pytest tests/test_verdicts.py -q   (the rebuild: -m slow, a few minutes)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minimoe.cli import main
from minimoe.errors import ConfigError
from minimoe.presets import apply_overrides, get_preset
from minimoe.repro_report import QUICK, QUICK_BANNER
from minimoe.verdicts import RESULTS, build, load_cells, table

# Every row goes through endpoints.compare: the ARG formula (7.2) and the swap null (7.3), so a
# test that builds rows needs both exercises: the umbrella marker `exercise` only.

FIELDS = {"comparison", "setting", "endpoint", "study", "seeds", "estimate", "ci", "p", "verdict"}


def fake_folder(root: Path, seeds, d_model: int = 32, steps: int | None = None, threads: int = 1,
                quick: bool = False) -> Path:
    """A reproduce folder with dense / average / two_stage cells of made-up scores."""
    root.mkdir(parents=True)
    cfg = apply_overrides(get_preset("tiny"), QUICK if quick else {}).to_dict()
    cfg["model"]["d_model"] = d_model
    cfg["train"]["steps"] = steps or cfg["train"]["steps"]
    cfg["train"]["threads"] = threads
    (root / "config.json").write_text(json.dumps(cfg))
    for seed in seeds:
        rng = np.random.default_rng(seed)
        (root / f"seed{seed}").mkdir()
        for shift, cell in ((0.0, "dense"), (0.03, "average"), (0.01, "two_stage")):
            scores = {f"t{j}": rng.uniform(0.2, 0.8) + shift for j in range(6)}
            cell_json = {"name": cell, "seed": seed, "routes": [], "seen": {"s": 0.9},
                         "few_shot": {t: [v, v] for t, v in scores.items()}, "zero_shot": scores}
            (root / f"seed{seed}" / f"{cell}.json").write_text(json.dumps(cell_json))
    return root


@pytest.mark.exercise  # needs 7.2 and 7.3
def test_two_folders_pooled_equal_one_folder_with_both(tmp_path):
    fake_folder(tmp_path / "a", [0, 1])
    fake_folder(tmp_path / "b", [2, 3])
    fake_folder(tmp_path / "both", [0, 1, 2, 3])
    pooled = build({"class": ("a", "b")}, root=tmp_path)
    single = build({"class": ("both",)}, root=tmp_path)
    assert pooled == single and pooled
    for row in pooled:
        assert FIELDS <= set(row)
        assert row["seeds"] == 4
    arg_rows = [r for r in pooled if r["endpoint"] == "arg"]
    assert arg_rows and all({"swap_null", "reverse"} <= set(r) for r in arg_rows)
    assert {r["comparison"] for r in pooled} == {"average vs dense", "two_stage vs dense", "two_stage vs average"}
    assert "| class | average vs dense | few_shot | points | 4 |" in table(pooled)


def test_pooling_refuses_other_settings_and_shared_seeds(tmp_path):
    fake_folder(tmp_path / "a", [0, 1])
    fake_folder(tmp_path / "wide", [2, 3], d_model=64)
    fake_folder(tmp_path / "again", [1, 2])
    with pytest.raises(ConfigError, match="other settings.*model.d_model"):
        load_cells([tmp_path / "a", tmp_path / "wide"])
    fake_folder(tmp_path / "longer", [4], steps=9999)  # another budget is another experiment
    with pytest.raises(ConfigError, match="train.steps"):
        load_cells([tmp_path / "a", tmp_path / "longer"])
    fake_folder(tmp_path / "threads", [5], threads=2)  # how fast it ran is not
    assert set(load_cells([tmp_path / "a", tmp_path / "threads"])[0]["dense"]) == {0, 1, 5}
    with pytest.raises(ConfigError, match="seed 1 of cell"):
        load_cells([tmp_path / "a", tmp_path / "again"])
    with pytest.raises(ConfigError, match="no config.json"):
        load_cells([tmp_path / "nothing"])


@pytest.mark.exercise  # needs 7.2 and 7.3
def test_pool_command_prints_the_table_and_one_line_errors(tmp_path, monkeypatch, capsys):
    fake_folder(tmp_path / "a", [0, 1])
    fake_folder(tmp_path / "b", [2, 3])
    monkeypatch.chdir(tmp_path)
    assert main(["verdicts", "--pool", "a", "b", "--out", "rows.json"]) == 0
    out = capsys.readouterr().out
    assert "| 2 folders pooled | two_stage vs dense | zero_shot | points | 4 |" in out
    assert QUICK_BANNER not in out
    assert len(json.loads((tmp_path / "rows.json").read_text())) == 18  # 3 comparisons × 2 settings × 3
    fake_folder(tmp_path / "wide", [4], d_model=64)
    assert main(["verdicts", "--pool", "a", "wide"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "other settings" in err[0]


@pytest.mark.exercise  # needs 7.2 and 7.3
def test_pooled_quick_folders_print_the_quick_banner(tmp_path, monkeypatch, capsys):
    fake_folder(tmp_path / "q", [0, 1, 2], quick=True)
    monkeypatch.chdir(tmp_path)
    assert main(["verdicts", "--pool", "q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == lines[-1] == QUICK_BANNER  # first and last: verdicts of a smoke test mean nothing


@pytest.mark.slow  # a few minutes: every study, permutation tests on the routes
@pytest.mark.exercise  # needs 7.2 and 7.3
def test_committed_verdicts_rebuild_from_the_committed_cells():
    committed = json.loads((RESULTS / "verdicts.json").read_text())
    rebuilt = json.loads(json.dumps(build(), default=float))
    assert len(rebuilt) == len(committed)
    for new, old in zip(rebuilt, committed):
        assert new.keys() == old.keys()
        for key, value in old.items():
            if isinstance(value, float):
                assert new[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (old["study"], key)
            elif isinstance(value, list):
                assert new[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (old["study"], key)
            else:
                assert new[key] == value, (old["study"], key)
