"""Determinism on CPU: the same seed in two processes gives bitwise-identical runs.

Three `python train_tiny.py --preset=tiny` processes run side by side: two with seed 0, one with
seed 1 (same data seed). The two seed-0 runs must agree exactly — summary.json (all but the wall
time), every loss in metrics.jsonl, routes.npy, every route snapshot, and every tensor of every
checkpoint (model, optimizer state, RNG states); the seed-1 run must differ in its weights and
losses (a test that cannot fail is a defect). What is and is not reproducible on CUDA is in the
lessons/troubleshooting.md ("Reproducibility").

Run: python -m pytest tests/test_determinism.py -q -m slow  (three tiny runs in parallel; CI runs it, .ci/run)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minimoe.checkpoint import load_checkpoint

pytestmark = [pytest.mark.exercise,  # runs the whole model (see tests/test_model.py)
              pytest.mark.slow, pytest.mark.ci]  # three processes; in-process determinism: tests/test_train.py

ROOT = Path(__file__).resolve().parent.parent
# The thread count is part of "the same run": CPU reductions may be split per thread.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
TINY = ["--preset=tiny", "--steps=12", "--pretrain_steps=6", "--eval_every=6", "--fs_steps=1", "--fs_lrs=1e-3",
        "--n_upstream=16", "--n_test=4", "--k_per_class=2", "--k_other=2", "--threads=1", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("determinism")
    procs = {name: subprocess.Popen([sys.executable, "train_tiny.py", *TINY, f"--seed={seed}", f"--out={base / name}"],
                                    cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, seed in (("a", 0), ("b", 0), ("other_seed", 1))}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err[-3000:])
    return {name: base / name for name in procs}


def checkpoints(run: Path) -> dict[str, dict]:
    return {p.name: load_checkpoint(p) for p in sorted(run.glob("*.pt"))}


def flat_tensors(value, prefix="") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts/lists (a state dict, an optimizer state), by path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else []
    return {k: v for key, item in items for k, v in flat_tensors(item, f"{prefix}/{key}").items()}


def test_same_seed_gives_identical_metrics(runs):
    a, b = runs["a"], runs["b"]
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa.pop("wall_seconds") > 0 and sb.pop("wall_seconds") > 0
    assert sa == sb
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert np.array_equal(np.load(a / "routes.npy"), np.load(b / "routes.npy"))
    snaps = sorted(p.relative_to(a) for p in (a / "routes").rglob("*.npy"))
    assert snaps and snaps == sorted(p.relative_to(b) for p in (b / "routes").rglob("*.npy"))
    assert all(np.array_equal(np.load(a / s), np.load(b / s)) for s in snaps)


def test_same_seed_gives_identical_checkpoint_tensors(runs):
    ca, cb = checkpoints(runs["a"]), checkpoints(runs["b"])
    assert set(ca) == set(cb) == {"pretrain.pt", "learned.pt"}
    for name in ca:
        ta, tb = flat_tensors(ca[name]), flat_tensors(cb[name])
        assert ta.keys() == tb.keys() and len(ta) > 10
        for key in ta:  # bitwise: torch.equal, no tolerance
            assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), (name, key)
        assert ca[name]["history"] == cb[name]["history"] and ca[name]["step"] == cb[name]["step"]


def test_another_seed_changes_weights_and_losses(runs):
    ca, cc = checkpoints(runs["a"]), checkpoints(runs["other_seed"])
    for name in ("pretrain.pt", "learned.pt"):
        model_a, model_c = ca[name]["model"], cc[name]["model"]
        assert any(not torch.equal(model_a[k], model_c[k]) for k in model_a if model_a[k].is_floating_point()), name
        assert ca[name]["history"] != cc[name]["history"], name
    la, lc = ((runs[r] / "metrics.jsonl").read_text() for r in ("a", "other_seed"))
    assert la != lc
