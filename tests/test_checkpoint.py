"""Tests for minimoe/checkpoint.py: exact round trip, atomic writes, safe loads, config checks.

Run: python -m pytest tests/test_checkpoint.py -q
"""

import os

import pytest
import torch

from minimoe.checkpoint import check_config, load_checkpoint, load_model_state, save_checkpoint
from minimoe.errors import CheckpointError
from minimoe.presets import PRESETS, apply_overrides

CFG = PRESETS["tiny"]


def test_round_trip_is_exact(tmp_path):
    model = torch.nn.Linear(4, 3)
    path = save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "step": 7}, CFG)
    got = load_checkpoint(path)
    assert got["step"] == 7 and got["config"] == CFG
    for k, v in model.state_dict().items():
        assert torch.equal(got["model"][k], v)


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1}, CFG)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2}, CFG)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_disk_full_is_a_clear_error_and_keeps_old(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1}, CFG)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError, match="previous checkpoint.*intact"):
        save_checkpoint(path, {"step": 2}, CFG)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"config_json": CFG.to_json(), "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_missing_and_corrupt_and_foreign(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"w": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a minimoe checkpoint"):
        load_checkpoint(foreign)


def test_config_mismatch_names_the_field():
    other = apply_overrides(CFG, ["--d_model=48", "--n_heads=2"])
    with pytest.raises(CheckpointError, match="model.d_model: checkpoint 32 vs now 48"):
        check_config(CFG, other)
    check_config(CFG, apply_overrides(CFG, ["--steps=99"]))  # train section may differ


def test_state_that_does_not_fit_the_model_is_named():
    model = torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model_state(model, torch.nn.Linear(5, 3).state_dict())
    with pytest.raises(CheckpointError, match="missing"):
        load_model_state(model, {"weight": model.weight})
